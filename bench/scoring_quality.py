"""Scoring quality and single-cart latency: the council against two scikit-learn baselines, on
real shopping sessions (UCI "Online Shoppers Purchasing Intention", bench/data/uci-online-shoppers).

    .venv/bin/python bench/scoring_quality.py                  # 5-fold CV, 10,000 timed calls each
    .venv/bin/python bench/scoring_quality.py --quick          # 2,000 timed calls each
    .venv/bin/python bench/scoring_quality.py --train A.csv --test B.csv

The positive class is abandonment: ``Revenue`` FALSE (the session ended without an order).

Quality. 5-fold stratified CV (``StratifiedKFold(shuffle=True, random_state=--seed)``), the three
models fitted on the same training folds and scored on the same test folds:

- council: ``recovery.training.fit_council`` with the specialists in ``SPECIALISTS`` (its own
  inner CV uses the training fold only);
- logistic: ``LogisticRegression(max_iter=5000)`` on standardised numerics and one-hot
  categoricals (unknown categories ignored);
- hgb: ``HistGradientBoostingClassifier`` with scikit-learn defaults and ``random_state=--seed``,
  categoricals ordinal-encoded and declared as ``categorical_features``.

ROC AUC, PR AUC (average precision) and Brier score are printed as mean ± sd over folds.

Latency. The models of the first fold score single rows drawn from its test fold, each call
timed with ``time.perf_counter_ns``: ``council.probability(row)``, ``council.score(row)`` (with
the top 3 reasons) and ``predict_proba`` of each baseline on a 1-row numpy array encoded
beforehand (the encoding is not timed, to be fair to them). p50 and p99 in microseconds, and
ratios baseline ÷ council. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from recovery.council import Council, FeatureValue  # noqa: E402 - after the path above
from recovery.training import evaluate, fit_council  # noqa: E402

DATA = BASE_DIR / "bench" / "data" / "uci-online-shoppers" / "online_shoppers_intention.csv"

# The product's specialists, mapped onto the columns of this data set (docs/scoring-model.md).
SPECIALISTS: dict[str, tuple[str, ...]] = {
    "engagement": (
        "Administrative",
        "Administrative_Duration",
        "Informational",
        "Informational_Duration",
        "ProductRelated",
    ),
    "intent": ("ProductRelated_Duration", "PageValues"),
    "friction": ("BounceRates", "ExitRates"),
    "timing": ("Month", "Weekend", "SpecialDay"),
    "history": ("VisitorType",),
    "device_source": ("OperatingSystems", "Browser", "Region", "TrafficType"),
}
CATEGORICAL = (
    "Month",
    "VisitorType",
    "OperatingSystems",
    "Browser",
    "Region",
    "TrafficType",
    "Weekend",
)
FEATURES = tuple(f for names in SPECIALISTS.values() for f in names)
NUMERIC = tuple(f for f in FEATURES if f not in CATEGORICAL)
MODELS = ("council", "logistic", "hgb")
METRICS = ("roc_auc", "pr_auc", "brier")

Row = dict[str, FeatureValue]


def load(path: Path) -> tuple[list[Row], list[int]]:
    """Typed rows (numbers, category strings, Weekend as bool) and labels (1 = abandoned)."""
    rows: list[Row] = []
    labels: list[int] = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row: Row = {}
            for name in FEATURES:
                value = raw[name]
                if name == "Weekend":
                    row[name] = value.strip().upper() == "TRUE"
                elif name in CATEGORICAL:
                    row[name] = value
                else:
                    row[name] = float(value)
            rows.append(row)
            labels.append(0 if raw["Revenue"].strip().upper() == "TRUE" else 1)
    return rows, labels


@dataclass
class Baselines:
    """Both baselines with their fitted encoders."""

    scaler: StandardScaler
    onehot: OneHotEncoder
    ordinal: OrdinalEncoder
    logistic: LogisticRegression
    hgb: HistGradientBoostingClassifier

    def logistic_matrix(self, rows: Sequence[Row]) -> np.ndarray:
        return np.hstack(
            [self.scaler.transform(_numeric(rows)), self.onehot.transform(_cats(rows))]
        )

    def hgb_matrix(self, rows: Sequence[Row]) -> np.ndarray:
        return np.hstack([_numeric(rows), self.ordinal.transform(_cats(rows))])


def _numeric(rows: Sequence[Row]) -> np.ndarray:
    return np.array([[row[f] for f in NUMERIC] for row in rows], dtype=np.float64)


def _cats(rows: Sequence[Row]) -> np.ndarray:
    return np.array([[str(row[f]) for f in CATEGORICAL] for row in rows], dtype=object)


def fit_baselines(rows: Sequence[Row], labels: Sequence[int], seed: int) -> Baselines:
    scaler = StandardScaler().fit(_numeric(rows))
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(_cats(rows))
    ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)
    ordinal.fit(_cats(rows))
    b = Baselines(
        scaler,
        onehot,
        ordinal,
        LogisticRegression(max_iter=5000),
        HistGradientBoostingClassifier(
            random_state=seed,
            categorical_features=list(range(len(NUMERIC), len(NUMERIC) + len(CATEGORICAL))),
        ),
    )
    b.logistic.fit(b.logistic_matrix(rows), labels)
    b.hgb.fit(b.hgb_matrix(rows), labels)
    return b


def fit_all(
    rows: Sequence[Row], labels: Sequence[int], seed: int
) -> tuple[Council, Baselines, dict[str, float]]:
    started = time.perf_counter()
    council = fit_council(
        rows,
        labels,
        specialists=SPECIALISTS,
        categorical=CATEGORICAL,
        version=f"uci-bench-{seed}",
        seed=seed,
    )
    council_s = time.perf_counter() - started
    started = time.perf_counter()
    baselines = fit_baselines(rows, labels, seed)
    return council, baselines, {"council": council_s, "baselines": time.perf_counter() - started}


def predictions(council: Council, b: Baselines, rows: Sequence[Row]) -> dict[str, list[float]]:
    return {
        "council": [council.probability(row) for row in rows],
        "logistic": b.logistic.predict_proba(b.logistic_matrix(rows))[:, 1].tolist(),
        "hgb": b.hgb.predict_proba(b.hgb_matrix(rows))[:, 1].tolist(),
    }


def percentiles_us(fn: Callable[[Any], Any], inputs: Sequence[Any], calls: int) -> dict[str, float]:
    """p50/p99 of single calls, each timed on its own, after a short untimed warm-up."""
    for x in inputs[: min(200, len(inputs))]:
        fn(x)
    gc.collect()
    times = []
    clock = time.perf_counter_ns
    n = len(inputs)
    for i in range(calls):
        x = inputs[i % n]
        start = clock()
        fn(x)
        times.append(clock() - start)
    times.sort()
    return {
        "p50": round(times[len(times) // 2] / 1000, 2),
        "p99": round(times[min(len(times) - 1, int(len(times) * 0.99))] / 1000, 2),
        "calls": calls,
    }


def latency(
    council: Council, b: Baselines, rows: Sequence[Row], calls: int, seed: int
) -> dict[str, dict[str, float]]:
    order = np.random.default_rng(seed).permutation(len(rows))
    sample = [rows[i] for i in order[: min(len(rows), 2000)]]
    lr_x = [x.reshape(1, -1) for x in b.logistic_matrix(sample)]
    hgb_x = [x.reshape(1, -1) for x in b.hgb_matrix(sample)]
    return {
        "council_probability": percentiles_us(council.probability, sample, calls),
        "council_score": percentiles_us(council.score, sample, calls),
        "council_explain": percentiles_us(council.explain, sample, min(calls, 2000)),
        "logistic": percentiles_us(b.logistic.predict_proba, lr_x, calls),
        "hgb": percentiles_us(b.hgb.predict_proba, hgb_x, calls),
    }


def summarise(per_fold: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model, folds in per_fold.items():
        out[model] = {}
        for metric in METRICS:
            values = [float(f[metric]) for f in folds]
            out[model][metric] = {
                "mean": round(statistics.fmean(values), 4),
                "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
                "folds": [round(v, 4) for v in values],
            }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DATA, help="CSV for cross-validation")
    parser.add_argument("--train", type=Path, help="fit on this CSV (with --test: no CV)")
    parser.add_argument("--test", type=Path, help="evaluate on this CSV")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2018, help="folds, HGB and council seed")
    parser.add_argument("--calls", type=int, default=10_000, help="timed single-row calls")
    parser.add_argument("--quick", action="store_true", help="2,000 timed calls")
    args = parser.parse_args(argv)
    if (args.train is None) != (args.test is None):
        parser.error("--train and --test go together")
    calls = 2000 if args.quick else args.calls
    started = time.perf_counter()

    per_fold: dict[str, list[dict[str, Any]]] = {m: [] for m in MODELS}
    fit_seconds: dict[str, list[float]] = {"council": [], "baselines": []}
    first: tuple[Council, Baselines, list[Row]] | None = None
    if args.train is not None:
        train_rows, train_labels = load(args.train)
        test_rows, test_labels = load(args.test)
        splits = [(train_rows, train_labels, test_rows, test_labels)]
        data_desc: dict[str, Any] = {"train": str(args.train), "test": str(args.test)}
        mode = "train/test"
    else:
        rows, labels = load(args.data)
        skf = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
        splits = [
            (
                [rows[i] for i in tr],
                [labels[i] for i in tr],
                [rows[i] for i in te],
                [labels[i] for i in te],
            )
            for tr, te in skf.split(np.zeros(len(labels)), labels)
        ]
        data_desc = {"data": str(args.data), "rows": len(rows), "abandoned": sum(labels)}
        mode = f"{args.folds}-fold CV"
    print(f"scoring quality: {mode}, seed {args.seed}, {data_desc}")

    for k, (tr_rows, tr_labels, te_rows, te_labels) in enumerate(splits):
        council, baselines, seconds = fit_all(tr_rows, tr_labels, args.seed)
        for name, s in seconds.items():
            fit_seconds[name].append(s)
        for model, p in predictions(council, baselines, te_rows).items():
            per_fold[model].append(evaluate(p, te_labels))
        segment = council.to_dict()["segment"]
        print(
            f"  fold {k + 1}/{len(splits)}: council fit {seconds['council']:.1f} s "
            f"(segment {segment}), baselines {seconds['baselines']:.1f} s; ROC AUC "
            + ", ".join(f"{m} {per_fold[m][-1]['roc_auc']:.4f}" for m in MODELS),
            flush=True,
        )
        if first is None:
            first = (council, baselines, te_rows)
    assert first is not None
    quality = summarise(per_fold)
    print(f"\n{'model':<10} {'ROC AUC':>17} {'PR AUC':>17} {'Brier':>17}")
    for model in MODELS:
        q = quality[model]
        cells = [f"{q[m]['mean']:.4f} ± {q[m]['sd']:.4f}" for m in METRICS]
        print(f"{model:<10} " + " ".join(f"{c:>17}" for c in cells))

    lat = latency(*first, calls=calls, seed=args.seed)
    council_lat = lat["council_probability"]
    print(f"\nsingle-row latency, µs ({calls} calls each): p50 / p99")
    for name, figures in lat.items():
        print(f"  {name:<20} {figures['p50']:>10.2f} / {figures['p99']:.2f}")
    ratios = {
        f"{base}_{q}_over_{c}_{q}": round(lat[base][q] / lat[c][q], 1)
        for base in ("hgb", "logistic")
        for c in ("council_probability", "council_score")
        for q in ("p50", "p99")
    }
    print(
        f"  hgb ÷ council.probability: p50 {ratios['hgb_p50_over_council_probability_p50']:.0f}x,"
        f" p99 {ratios['hgb_p99_over_council_probability_p99']:.0f}x;"
        f" ÷ council.score: p99 {ratios['hgb_p99_over_council_score_p99']:.0f}x"
    )
    targets = {
        "council_roc_auc_ge_hgb": quality["council"]["roc_auc"]["mean"]
        >= quality["hgb"]["roc_auc"]["mean"],
        "council_p99_le_50us": council_lat["p99"] <= 50,
        "hgb_p99_over_council_p99_ge_50": ratios["hgb_p99_over_council_probability_p99"] >= 50,
    }
    print(f"targets: {targets}")
    summary = {
        "bench": "scoring_quality",
        "mode": mode,
        "seed": args.seed,
        **data_desc,
        "models": quality,
        "fit_seconds": {k: round(statistics.fmean(v), 2) for k, v in fit_seconds.items()},
        "latency_us": lat,
        "ratios": ratios,
        "targets": targets,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
