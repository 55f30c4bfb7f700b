"""Labelled training examples from the event log: a pure replay (no ORM, no clock).

Each cart is snapshotted the way it is scored live: after each of its events (the score written
with every append) and, while it stays quiet, 10 minutes, 1 hour and 6 hours later (the score a
campaign step sees). A snapshot is positive (abandoned, 1) when no ``order.placed`` follows within
the horizon, negative (0) when one does; snapshots whose horizon has not ended by ``now`` without
an order are excluded, and nothing is snapshotted once the cart has converted. Each cart's
snapshots share a weight of 1, so long carts do not dominate.

The shopper's history (past orders and abandonments) is taken the way serving takes it: from the
shopper's other carts as they stand when the shopper first becomes known to this cart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from carts import projections
from recovery import features

SNAPSHOT_OFFSETS = (
    timedelta(0),
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(hours=6),
)
# A cart with more snapshots than this keeps an evenly spaced selection of them.
MAX_SNAPSHOTS_PER_CART = 24


@dataclass(frozen=True, slots=True)
class Example:
    cart: str
    at: datetime
    first_seen: datetime
    features: dict[str, features.FeatureValue]
    label: int  # 1: abandoned (no order within the horizon), 0: converted within it
    weight: float


@dataclass(slots=True)
class _Replay:
    first_seen: datetime
    cart: projections.Cart = field(default_factory=projections.Cart)
    acc: dict[str, Any] = field(default_factory=features.accumulator_empty)
    key: str | None = None
    history: tuple[int, int] | None = None
    last_at: datetime | None = None
    order_at: datetime | None = None
    snapshots: list[tuple[datetime, dict[str, features.FeatureValue]]] = field(default_factory=list)


def examples_build(
    events: Iterable[tuple[str, projections.FoldEvent]],
    *,
    horizon: timedelta,
    now: datetime,
    typical_basket: int | None,
    offsets: tuple[timedelta, ...] = SNAPSHOT_OFFSETS,
) -> list[Example]:
    """Replay ``(cart, event)`` pairs in log order into labelled snapshots."""
    carts: dict[str, _Replay] = {}
    shoppers: dict[str, set[str]] = {}

    def vector(r: _Replay, at: datetime) -> dict[str, features.FeatureValue]:
        orders, abandonments = r.history if r.history is not None else (None, None)
        context = features.Context(typical_basket, orders, abandonments)
        return features.features_at(r.acc, r.cart, at, context)

    def quiet_snapshots(r: _Replay, until: datetime, inclusive: bool) -> None:
        """Snapshots of the cart's last state while it stayed quiet, up to ``until``."""
        if r.last_at is None or r.order_at is not None:
            return
        for offset in offsets[1:]:
            at = r.last_at + offset
            if at < until or (inclusive and at == until):
                r.snapshots.append((at, vector(r, at)))

    for token, event in events:
        r = carts.get(token)
        if r is None:
            r = carts[token] = _Replay(first_seen=event.occurred_at)
        at = event.occurred_at
        if r.last_at is not None and at > r.last_at:
            quiet_snapshots(r, at, inclusive=False)
        try:
            r.cart = projections.apply(r.cart, event)
        except projections.Rejected:
            continue  # the append service refused these too; a replay of the log never has them
        r.acc = features.accumulator_apply(r.acc, event)
        r.last_at = at if r.last_at is None else max(r.last_at, at)
        key = features.shopper_key(r.acc)
        if key is not None and key != r.key:
            others = [carts[t].cart for t in shoppers.get(key, ()) if t != token]
            r.history = (
                sum(c.status == projections.CONVERTED for c in others),
                sum(c.status != projections.CONVERTED and c.item_count > 0 for c in others),
            )
            r.key = key
            shoppers.setdefault(key, set()).add(token)
        if event.type == "order.placed":
            if r.order_at is None:
                r.order_at = at
            continue
        if r.order_at is None and r.cart.last_activity_at is not None:
            r.snapshots.append((at, vector(r, r.cart.last_activity_at)))

    examples: list[Example] = []
    for token, r in carts.items():
        quiet_snapshots(r, now, inclusive=True)
        labelled: list[tuple[datetime, dict[str, features.FeatureValue], int]] = []
        for at, vec in r.snapshots:
            if r.order_at is not None and at < r.order_at:
                labelled.append((at, vec, 0 if r.order_at <= at + horizon else 1))
            elif r.order_at is None and at + horizon <= now:
                labelled.append((at, vec, 1))
        if len(labelled) > MAX_SNAPSHOTS_PER_CART:
            step = len(labelled) / MAX_SNAPSHOTS_PER_CART
            labelled = [labelled[int(i * step)] for i in range(MAX_SNAPSHOTS_PER_CART)]
        for at, vec, label in labelled:
            examples.append(Example(token, at, r.first_seen, vec, label, 1.0 / len(labelled)))
    return examples
