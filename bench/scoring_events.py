"""Scoring on real events: the REES46 slice replayed through the append service, then the council
trained by ``train_scorer``'s own code and measured on held-out carts, beside two baselines fitted
on the same examples and split (logistic regression and HistGradientBoosting).

    .venv/bin/python bench/scoring_events.py [--file CSV] [--horizon 24h]

The events go into a store of their own ("Bench: REES46 scoring"); a re-run appends nothing new
(the importer's event ids are deterministic). Without DATABASE_URL / REDIS_URL it uses the
embedded servers under var/. REES46 has views, adds, removes and purchases only (no checkout
steps, contacts or exit intents), and few purchases: the figures are reported with their counts.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

DEFAULT_FILE = BASE_DIR / "bench" / "data" / "rees46" / "2019-Oct_head_first-half.csv"
STORE_NAME = "Bench: REES46 scoring"


def _encode(rows: list[dict[str, Any]], names: list[str], categorical: frozenset[str]) -> Any:
    """Numeric features as floats (NaN when missing), categoricals as ordinal codes."""
    import numpy as np

    codes: dict[str, dict[Any, int]] = {n: {} for n in names if n in categorical}
    matrix = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            value = row.get(name)
            if name in categorical:
                matrix[i, j] = codes[name].setdefault(str(value), len(codes[name]))
            elif value is not None:
                matrix[i, j] = float(value)
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--file", default=str(DEFAULT_FILE))
    parser.add_argument("--horizon", default="24h")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)  # the development database may predate this code
    import numpy as np
    from django.utils import timezone
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from carts import importers
    from carts.importers import replay
    from carts.models import Store
    from carts.services import store_create
    from recovery import features, services, training
    from recovery.durations import parse_duration

    horizon = parse_duration(args.horizon)
    store = Store.objects.filter(name=STORE_NAME).order_by("pk").first()
    if store is None:
        store = Store.objects.get(pk=store_create(name=STORE_NAME).store_id)
    started = time.perf_counter()
    fmt = importers.FORMATS["rees46"]
    with open(args.file, newline="", encoding="utf-8") as file:
        report = replay.replay(
            fmt.map_rows(importers.RowCounter(fmt.read_rows(file)), currency="USD"),
            store_id=store.pk,
        )
    import_seconds = time.perf_counter() - started

    now = timezone.now()
    window, train, test = services.training_examples(store_id=store.pk, horizon=horizon, now=now)
    built = train + test
    started = time.perf_counter()
    council = services.fit_store_council(train, version="bench-rees46", seed=0)
    fit_seconds = time.perf_counter() - started

    names = [f.name for f in features.FEATURES]
    matrix = _encode([e.features for e in built], names, features.CATEGORICAL)
    is_train = np.array([e.first_seen < window.split_at for e in built])
    y = np.array([e.label for e in built])
    w = np.array([e.weight for e in built])
    # Columns never observed in training (e.g. exit intents: REES46 has none) say nothing to
    # the baselines, and HistGradientBoosting refuses an all-missing column.
    seen = ~np.all(np.isnan(matrix[is_train]), axis=0)
    matrix, names = matrix[:, seen], [n for n, keep in zip(names, seen, strict=True) if keep]
    cat_mask = np.array([n in features.CATEGORICAL for n in names])
    hgb = HistGradientBoostingClassifier(random_state=0, categorical_features=cat_mask)
    hgb.fit(matrix[is_train], y[is_train], sample_weight=w[is_train])
    numeric = np.nan_to_num(matrix[:, ~cat_mask], nan=-1.0)
    onehot = OneHotEncoder(handle_unknown="ignore").fit(matrix[is_train][:, cat_mask])
    lin_x = np.hstack([numeric, onehot.transform(matrix[:, cat_mask]).toarray()])
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    logistic.fit(lin_x[is_train], y[is_train], logisticregression__sample_weight=w[is_train])

    labels = [e.label for e in test]
    weights = [e.weight for e in test]
    results: dict[str, Any] = {}
    if len(set(labels)) == 2:
        results["council"] = training.evaluate(
            [council.probability(e.features) for e in test], labels, weights
        )
        results["logistic"] = training.evaluate(
            list(logistic.predict_proba(lin_x[~is_train])[:, 1]), labels, weights
        )
        results["hgb"] = training.evaluate(
            list(hgb.predict_proba(matrix[~is_train])[:, 1]), labels, weights
        )
    counts = {
        "events_in_log": report.events_mapped,
        "carts": len({e.cart for e in built}),
        "snapshots": len(built),
        "train_carts": len({e.cart for e in train}),
        "test_carts": len({e.cart for e in test}),
        "test_snapshots": len(test),
        "test_converted_carts": len({e.cart for e in test if e.label == 0}),
    }
    print(f"REES46 slice {Path(args.file).name}: {counts}")
    print(f"import {import_seconds:.1f} s, council fit {fit_seconds:.1f} s, horizon {args.horizon}")
    print(
        f"{'model':<10} {'ROC AUC':>8} {'PR AUC':>8} {'Brier':>8}   (held-out carts, cart-weighted)"
    )
    for name, figures in results.items():
        print(
            f"{name:<10} {figures['roc_auc']:>8.4f} {figures['pr_auc']:>8.4f} "
            f"{figures['brier']:>8.4f}"
        )
    if not results:
        print("The held-out carts have one class only: no AUC can be computed.")
    summary = {
        "benchmark": "scoring_events",
        "file": Path(args.file).name,
        "horizon": args.horizon,
        **counts,
        "import_seconds": round(import_seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        **{
            f"{name}_{metric}": round(figures[metric], 4)
            for name, figures in results.items()
            for metric in ("roc_auc", "pr_auc", "brier")
            if not math.isnan(figures[metric])
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
