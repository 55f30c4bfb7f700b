"""Writes of the recovery app: training, storing and activating scoring models."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction

from carts import pii, projections
from carts.models import CartEvent, Store
from carts.services import fold_event
from recovery import examples, features, training
from recovery.council import Council
from recovery.errors import ModelNotFound, TrainingError
from recovery.models import ScoringModel
from recovery.serving import MODELS

log = logging.getLogger(__name__)

# Carts first seen in the latest TEST_SHARE of the window are held out for the metrics.
TEST_SHARE = 0.2
MIN_TRAIN_CARTS = 20

_SPLIT_AT = """
    SELECT percentile_disc(%s) WITHIN GROUP (ORDER BY first_seen)
    FROM (SELECT min(occurred_at) AS first_seen FROM carts_cartevent
          WHERE store_id = %s GROUP BY cart) AS carts
"""
_MEDIAN_ORDER = """
    SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY (data->>'total')::bigint)
    FROM carts_cartevent
    WHERE store_id = %s AND type = 'order.placed' AND occurred_at < %s AND source <> 'browser'
"""


def _log_events(store_id: int) -> Iterator[tuple[str, projections.FoldEvent]]:
    """The store's events in log (position) order, payloads upcast, personal fields in clear
    (None where the shopper was erased)."""
    rows = (
        CartEvent.objects.filter(store_id=store_id)
        .order_by("position")
        .only(
            "store_id",
            "event_id",
            "cart",
            "type",
            "schema_version",
            "data",
            "occurred_at",
            "shopper",
            "source",
        )
    )
    chunk: list[CartEvent] = []
    for event in rows.iterator(chunk_size=5000):
        chunk.append(event)
        if len(chunk) == 5000:
            yield from _folded(chunk)
            chunk = []
    yield from _folded(chunk)


def _folded(chunk: list[CartEvent]) -> Iterator[tuple[str, projections.FoldEvent]]:
    pii.events_reveal(chunk)
    for event in chunk:
        yield event.cart, fold_event(event)


@dataclass(frozen=True, slots=True)
class TrainingWindow:
    start: datetime | None
    end: datetime | None
    split_at: datetime
    typical_basket: int | None


def _window(store_id: int) -> TrainingWindow:
    with connection.cursor() as cursor:
        cursor.execute(_SPLIT_AT, [1.0 - TEST_SHARE, store_id])
        split_at = cursor.fetchone()[0]
        if split_at is None:
            raise TrainingError(f"Store {store_id} has no events to train on.")
        cursor.execute(_MEDIAN_ORDER, [store_id, split_at])
        typical = cursor.fetchone()[0]
        cursor.execute(
            "SELECT min(occurred_at), max(occurred_at) FROM carts_cartevent WHERE store_id = %s",
            [store_id],
        )
        start, end = cursor.fetchone()
    return TrainingWindow(start, end, split_at, None if typical is None else int(typical))


def _metrics(part: list[examples.Example], council: Any) -> dict[str, Any]:
    if not part or len({e.label for e in part}) < 2:
        return {"n": len(part), "carts": len({e.cart for e in part}), "note": "one class only"}
    result = training.evaluate(
        [council.probability(e.features) for e in part],
        [e.label for e in part],
        [e.weight for e in part],
    )
    result["carts"] = len({e.cart for e in part})
    return dict(result)


def training_examples(
    *, store_id: int, horizon: timedelta, now: datetime
) -> tuple[TrainingWindow, list[examples.Example], list[examples.Example]]:
    """The store's log as labelled snapshots, split by time: (window, train, test)."""
    window = _window(store_id)
    built = examples.examples_build(
        _log_events(store_id), horizon=horizon, now=now, typical_basket=window.typical_basket
    )
    train = [e for e in built if e.first_seen < window.split_at]
    test = [e for e in built if e.first_seen >= window.split_at]
    return window, train, test


def fit_store_council(train: list[examples.Example], *, version: str, seed: int = 0) -> Council:
    """Fit the product's specialists on training snapshots (one group per cart for the inner
    cross-validation, so a cart's snapshots never sit on both sides)."""
    return training.fit_council(
        [e.features for e in train],
        [e.label for e in train],
        specialists=features.SPECIALISTS,
        categorical=features.CATEGORICAL,
        sample_weight=[e.weight for e in train],
        groups=[e.cart for e in train],
        version=version,
        seed=seed,
    )


def scorer_train(
    *,
    store_id: int,
    horizon: timedelta,
    now: datetime,
    seed: int = 0,
    activate: bool = False,
) -> ScoringModel:
    """Train a council on the store's log and store it (activated on request).

    Carts first seen before the split time train it; the rest measure it (docs/scoring.md).
    """
    store = Store.objects.get(pk=store_id)
    window, train, test = training_examples(store_id=store_id, horizon=horizon, now=now)
    train_carts = len({e.cart for e in train})
    if train_carts < MIN_TRAIN_CARTS or len({e.label for e in train}) < 2:
        raise TrainingError(
            f"Store {store_id} has {train_carts} carts to train on (at least "
            f"{MIN_TRAIN_CARTS} needed, with both converted and abandoned ones) for a "
            f"{horizon} horizon; carts still inside the horizon are left out."
        )
    version = f"s{store_id}-{now:%Y%m%d-%H%M%S}"
    council = fit_store_council(train, version=version, seed=seed)
    metrics = {
        "test": _metrics(test, council),
        "train": _metrics(train, council),
        "positive_means": "abandoned: no order.placed within the horizon",
    }
    with transaction.atomic():
        model = ScoringModel.objects.create(
            store=store,
            version=version,
            artifact=council.to_dict(),
            features_version=features.FEATURES_VERSION,
            typical_basket=window.typical_basket,
            horizon_seconds=int(horizon.total_seconds()),
            window_start=window.start,
            window_end=window.end,
            split_at=window.split_at,
            metrics=metrics,
        )
        if activate:
            scorer_activate(model=model, now=now)
    log.info("trained %s on %d carts: %s", version, train_carts, metrics["test"])
    return model


@transaction.atomic
def scorer_activate(*, model: ScoringModel, now: datetime) -> ScoringModel:
    """Make this the store's active model. Every process picks it up within
    RECOVERY_MODEL_REFRESH_SECONDS, without a restart (recovery/serving.py)."""
    ScoringModel.objects.select_for_update().filter(store_id=model.store_id, active=True).exclude(
        pk=model.pk
    ).update(active=False)
    model.active = True
    model.activated_at = now
    model.save(update_fields=["active", "activated_at"])
    transaction.on_commit(MODELS.clear)
    return model


@transaction.atomic
def scorer_deactivate(*, store_id: int) -> int:
    """Back to the stock model for this store. Returns how many models were deactivated."""
    count = ScoringModel.objects.filter(store_id=store_id, active=True).update(active=False)
    transaction.on_commit(MODELS.clear)
    return count


def scoring_model_by_version(*, store_id: int, version: str) -> ScoringModel:
    try:
        return ScoringModel.objects.get(store_id=store_id, version=version)
    except ScoringModel.DoesNotExist:
        raise ModelNotFound(f"Store {store_id} has no model {version!r}.") from None


# The stock model -------------------------------------------------------------------------------

STOCK_VERSION = "stock-1"
STOCK_HORIZON = timedelta(hours=24)


def stock_model_build(*, carts: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """Fit the stock council on synthetic journeys (recovery/synthetic.py) and measure it on
    journeys drawn with another seed. Returns the JSON document of recovery/stock_model.json."""
    from recovery import synthetic

    def build(n: int, s: int) -> tuple[list[examples.Example], int | None]:
        events = synthetic.journeys(carts=n, seed=s)
        totals = sorted(e.data["total"] for _, e in events if e.type == "order.placed")
        typical = totals[len(totals) // 2] if totals else None
        now = max(e.occurred_at for _, e in events) + STOCK_HORIZON
        return (
            examples.examples_build(events, horizon=STOCK_HORIZON, now=now, typical_basket=typical),
            typical,
        )

    train, typical = build(carts, seed)
    test, _ = build(max(2000, carts // 4), seed + 1)
    council = fit_store_council(train, version=STOCK_VERSION, seed=seed)
    return {
        "version": STOCK_VERSION,
        "features_version": features.FEATURES_VERSION,
        "trained_on": f"synthetic journeys (recovery/synthetic.py): {carts} carts, seed {seed}; "
        f"measured on other journeys (seed {seed + 1})",
        "horizon_seconds": int(STOCK_HORIZON.total_seconds()),
        "typical_basket": typical,
        "metrics": {"test": _metrics(test, council), "train": _metrics(train, council)},
        "artifact": council.to_dict(),
    }
