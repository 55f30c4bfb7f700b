"""Features for the cart abandonment score: an incremental accumulator plus the cart-state fold.

Pure: no ORM, no settings, no clock (``now`` is an argument). ``accumulator_apply`` folds one event
into a small JSON-serialisable dict that is stored next to the cart between appends;
``features_at`` reads it together with the cart state and what the caller looked up (``Context``).
Missing values are ``None`` (the model has a bin for them). docs/features.md defines every feature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from carts import identity
from carts.projections import SHOPPER_ERASED, Cart, FoldEvent
from carts.sources import trusted

FEATURES_VERSION: int = 1
FeatureValue = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class Context:
    """What the features need from outside the cart's own events (looked up by the caller)."""

    # The store's typical order value, minor units (None: unknown).
    typical_basket: int | None = None
    # This shopper's orders in other carts (None: shopper unknown).
    past_orders: int | None = None
    # This shopper's other carts with items that never converted (None: shopper unknown).
    past_abandonments: int | None = None


@dataclass(frozen=True, slots=True)
class FeatureDoc:
    name: str
    specialist: str
    kind: str  # "numeric" | "categorical"
    description: str


_N, _C = "numeric", "categorical"


def _group(specialist: str, *entries: tuple[str, str, str]) -> tuple[FeatureDoc, ...]:
    return tuple(FeatureDoc(name, specialist, kind, text) for name, kind, text in entries)


FEATURES: tuple[FeatureDoc, ...] = (
    # What is in the basket and how expensive it is.
    *_group(
        "price",
        ("basket_value", _N, "Sum of quantity x unit_price over the cart's lines."),
        ("distinct_items", _N, "Number of lines (distinct skus) in the cart."),
        ("item_count", _N, "Sum of the lines' quantities."),
        ("max_unit_price", _N, "Highest unit_price among the lines; None if empty."),
        ("mean_unit_price", _N, "basket_value / item_count (per unit); None if empty."),
        ("category_count", _N, "Distinct non-blank line categories; 0 if empty; None if none."),
        ("value_vs_typical_basket", _N, "basket_value / Context.typical_basket; None if unknown."),
    ),
    # How the basket was built.
    *_group(
        "cart_edits",
        ("item_adds", _N, "Number of cart.item_added events."),
        ("item_removals", _N, "cart.item_removed events + cart.item_quantity_changed to 0."),
        ("quantity_changes", _N, "cart.item_quantity_changed events to a quantity above 0."),
        ("removals_per_add", _N, "item_removals / item_adds; None when no adds."),
    ),
    # Browsing.
    *_group(
        "engagement",
        ("page_views", _N, "Number of page.viewed events."),
        ("product_views", _N, "Number of page.viewed events with page_type product."),
        ("session_length_s", _N, "Latest minus earliest shopper activity, seconds; None if none."),
        (
            "product_dwell_total_s",
            _N,
            "Product-page seconds: dwell_ms, else gap to next (<= 30 min).",
        ),
        ("product_dwell_mean_s", _N, "product_dwell_total_s / views measured; None if none."),
        ("last_page_type", _C, "page_type of the latest page.viewed; 'none' if none."),
    ),
    # Intent and progress through checkout.
    *_group(
        "checkout",
        ("checkout_started", _C, "A checkout.started event was seen."),
        ("contact_captured", _C, "A checkout.contact_captured event was seen."),
        ("shipping_quoted", _C, "A checkout.shipping_quoted event was seen."),
        ("seconds_since_checkout_started", _N, "now - first checkout.started; None if none."),
    ),
    # What pushes back.
    *_group(
        "friction",
        ("coupons_rejected", _N, "Number of coupon.rejected events."),
        (
            "shipping_cost_ratio",
            _N,
            "Latest shipping quote / basket_value; None if no quote/empty.",
        ),
        ("removals_after_shipping_quote", _N, "item_removals after the first shipping quote."),
    ),
    # How long ago, at what local time, and exit intent.
    *_group(
        "recency_timing",
        ("seconds_since_last_activity", _N, "now - latest shopper activity; None if none."),
        ("exit_intents", _N, "Number of shopper.exit_intent events."),
        ("last_exit_trigger", _C, "trigger of the latest shopper.exit_intent; 'none' if none."),
        ("seconds_since_last_exit_intent", _N, "now - latest shopper.exit_intent; None if none."),
        ("local_hour", _N, "Hour (0-23) of now in the shopper's timezone."),
        ("local_weekend", _C, "now is a Saturday or Sunday in the shopper's timezone."),
        ("timezone_source", _C, "Where the zone came from: 'contact', 'envelope' or 'utc'."),
    ),
    # Who this is.
    *_group(
        "shopper_history",
        ("shopper_known", _C, "A shopper id or email has been seen (shopper_key is not None)."),
        ("past_orders", _N, "Context.past_orders (None: unknown)."),
        ("past_abandonments", _N, "Context.past_abandonments (None: unknown)."),
        ("past_conversion_rate", _N, "past_orders / (past_orders + past_abandonments); or None."),
    ),
    *_group(
        "device",
        ("device", _C, "device of the latest page.viewed naming one; 'unknown' if none."),
        ("multi_device", _C, "page.viewed events named more than one device."),
    ),
)

SPECIALISTS: dict[str, tuple[str, ...]] = {
    specialist: tuple(f.name for f in FEATURES if f.specialist == specialist)
    for specialist in dict.fromkeys(f.specialist for f in FEATURES)
}
CATEGORICAL: frozenset[str] = frozenset(f.name for f in FEATURES if f.kind == _C)

# Kept in step with carts.event_types (a test checks), which this pure module does not import.
_DEVICES = ("desktop", "mobile", "tablet")
_EXIT_TRIGGERS = ("mouse_leave", "tab_hidden", "back_button", "scroll_up", "idle")

# The shopper doing something; order.refunded is known (identity) but is not activity, and any
# other type (recovery.*, campaign.*, future types) leaves the accumulator unchanged.
_ACTIVITY = frozenset(
    {
        "cart.item_added",
        "cart.item_removed",
        "cart.item_quantity_changed",
        "page.viewed",
        "checkout.started",
        "checkout.contact_captured",
        "checkout.shipping_quoted",
        "coupon.rejected",
        "shopper.exit_intent",
        "order.placed",
    }
)
_KNOWN = _ACTIVITY | {"order.refunded"}

# A product view without dwell_ms lasts until the next activity, but the shopper may have left in
# between: beyond a session timeout the gap says nothing about the page.
_MAX_INFERRED_DWELL_MS = 30 * 60 * 1000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _us(moment: datetime) -> int:
    """Microseconds since the epoch: exact in JSON, cheap to compare."""
    return (moment - _EPOCH) // _MICROSECOND


def _seconds(later_us: int, earlier_us: int | None) -> float | None:
    if earlier_us is None:
        return None
    return max(0, later_us - earlier_us) / 1_000_000


def _ratio(numerator: int | None, denominator: int | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def accumulator_empty() -> dict[str, Any]:
    """The accumulator before any event: scalars and one list of at most three devices."""
    return {
        "v": FEATURES_VERSION,
        "first_us": None,  # earliest and latest shopper activity, microseconds since the epoch
        "last_us": None,
        "adds": 0,
        "removals": 0,
        "quantity_changes": 0,
        "page_views": 0,
        "product_views": 0,
        "last_page_type": None,
        "dwell_ms": 0,  # measured product dwell
        "dwell_n": 0,  # product views with a measured dwell
        "open_view_us": None,  # a product view without dwell_ms, awaiting the next activity
        "checkout_us": None,
        "contact": False,
        "shipping": None,  # the latest quoted amount
        "coupons_rejected": 0,
        "removals_after_quote": 0,
        "exits": 0,
        "exit_trigger": None,
        "exit_us": None,
        "device": None,
        "devices": [],
        "tz": None,
        "tz_from": None,  # "contact" | "envelope"
        "shopper_id": None,
        "email_sha256": None,
    }


def _email_hash(email: Any) -> str:
    return identity.email_digest(str(email))


def accumulator_apply(acc: Mapping[str, Any], event: FoldEvent) -> dict[str, Any]:
    """The accumulator after ``event``: a new dict (``acc`` is not touched), JSON-serialisable."""
    new = {**accumulator_empty(), **acc}
    new["devices"] = list(new["devices"])
    kind, data = event.type, event.data
    if kind == SHOPPER_ERASED:  # the shopper's address is gone, its digest with it
        new["email_sha256"] = None
        return new
    if kind not in _KNOWN:
        return new
    if kind in _ACTIVITY:
        at = _us(event.occurred_at)
        new["first_us"] = at if new["first_us"] is None else min(new["first_us"], at)
        new["last_us"] = at if new["last_us"] is None else max(new["last_us"], at)
        if new["open_view_us"] is not None:
            gap_ms = max(0, at - new["open_view_us"]) // 1000
            new["dwell_ms"] += min(gap_ms, _MAX_INFERRED_DWELL_MS)
            new["dwell_n"] += 1
            new["open_view_us"] = None
        _apply_activity(new, kind, data, at)
    _apply_identity(new, kind, data, event.shopper, trusted(event.source))
    return new


def _apply_activity(new: dict[str, Any], kind: str, data: Mapping[str, Any], at: int) -> None:
    removal = kind == "cart.item_removed" or (
        kind == "cart.item_quantity_changed" and int(data.get("quantity", 0)) <= 0
    )
    if removal:
        new["removals"] += 1
        if new["shipping"] is not None:
            new["removals_after_quote"] += 1
    elif kind == "cart.item_quantity_changed":
        new["quantity_changes"] += 1
    elif kind == "cart.item_added":
        new["adds"] += 1
    elif kind == "page.viewed":
        page_type = str(data.get("page_type", "other"))
        new["page_views"] += 1
        new["last_page_type"] = page_type
        if page_type == "product":
            new["product_views"] += 1
            if data.get("dwell_ms") is not None:
                new["dwell_ms"] += int(data["dwell_ms"])
                new["dwell_n"] += 1
            else:
                new["open_view_us"] = at
        device = data.get("device")
        if device in _DEVICES:
            new["device"] = device
            if device not in new["devices"]:
                new["devices"] = sorted([*new["devices"], device])
    elif kind == "checkout.started":
        if new["checkout_us"] is None:
            new["checkout_us"] = at
    elif kind == "checkout.contact_captured":
        new["contact"] = True
    elif kind == "checkout.shipping_quoted":
        new["shipping"] = int(data.get("amount", 0))
    elif kind == "coupon.rejected":
        new["coupons_rejected"] += 1
    elif kind == "shopper.exit_intent":
        new["exits"] += 1
        if new["exit_us"] is None or at >= new["exit_us"]:
            new["exit_us"] = at
            trigger = data.get("trigger")
            new["exit_trigger"] = trigger if trigger in _EXIT_TRIGGERS else "other"


def _apply_identity(
    new: dict[str, Any],
    kind: str,
    data: Mapping[str, Any],
    shopper: Mapping[str, Any] | None,
    trusted_source: bool = True,
) -> None:
    """Same precedence as the cart-state fold: the contact form wins, the envelope fills gaps;
    only a trusted source names the shopper (a browser's ``shopper.id`` is not its word)."""
    if kind == "checkout.contact_captured":
        if data.get("email"):
            new["email_sha256"] = _email_hash(data["email"])
        if data.get("timezone"):
            new["tz"], new["tz_from"] = str(data["timezone"]), "contact"
    if not shopper:
        return
    if shopper.get("id") and trusted_source:
        new["shopper_id"] = str(shopper["id"])
    if shopper.get("email") and new["email_sha256"] is None:
        new["email_sha256"] = _email_hash(shopper["email"])
    if shopper.get("timezone") and new["tz"] is None:
        new["tz"], new["tz_from"] = str(shopper["timezone"]), "envelope"


def shopper_key(acc: Mapping[str, Any]) -> str | None:
    """The accumulator's shopper, as ``carts.identity.shopper_key`` defines it."""
    return identity.shopper_key(
        shopper_id=acc.get("shopper_id"), email_sha256=acc.get("email_sha256")
    )


def _local_now(now: datetime, name: str | None, source: str | None) -> tuple[datetime, str]:
    if name and source:
        try:
            return now.astimezone(ZoneInfo(name)), source
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass  # not a zone this machine knows: fall back, and say so
    return now.astimezone(UTC), "utc"


def features_at(
    acc: Mapping[str, Any], cart: Cart, now: datetime, context: Context
) -> dict[str, FeatureValue]:
    """The feature vector at ``now``, in ``FEATURES`` order; ``cart`` folds the same events."""
    a = {**accumulator_empty(), **acc}
    now_us = _us(now)
    value, units = cart.value, cart.item_count
    categories = {line.category for line in cart.lines if line.category}
    local, tz_source = _local_now(now, a["tz"], a["tz_from"])
    past_orders, past_abandonments = context.past_orders, context.past_abandonments
    history = (
        None
        if past_orders is None or past_abandonments is None
        else _ratio(past_orders, past_orders + past_abandonments)
    )
    features: dict[str, FeatureValue] = {
        "basket_value": value,
        "distinct_items": len(cart.lines),
        "item_count": units,
        "max_unit_price": max((line.unit_price for line in cart.lines), default=None),
        "mean_unit_price": _ratio(value, units),
        "category_count": len(categories) if categories or not cart.lines else None,
        "value_vs_typical_basket": _ratio(value, context.typical_basket),
        "item_adds": a["adds"],
        "item_removals": a["removals"],
        "quantity_changes": a["quantity_changes"],
        "removals_per_add": _ratio(a["removals"], a["adds"]),
        "page_views": a["page_views"],
        "product_views": a["product_views"],
        "session_length_s": (
            None if a["first_us"] is None else _seconds(a["last_us"], a["first_us"])
        ),
        "product_dwell_total_s": a["dwell_ms"] / 1000,
        "product_dwell_mean_s": _ratio(a["dwell_ms"], a["dwell_n"] * 1000),
        "last_page_type": a["last_page_type"] or "none",
        "checkout_started": a["checkout_us"] is not None,
        "contact_captured": bool(a["contact"]),
        "shipping_quoted": a["shipping"] is not None,
        "seconds_since_checkout_started": _seconds(now_us, a["checkout_us"]),
        "coupons_rejected": a["coupons_rejected"],
        "shipping_cost_ratio": _ratio(a["shipping"], value),
        "removals_after_shipping_quote": a["removals_after_quote"],
        "seconds_since_last_activity": _seconds(now_us, a["last_us"]),
        "exit_intents": a["exits"],
        "last_exit_trigger": a["exit_trigger"] or "none",
        "seconds_since_last_exit_intent": _seconds(now_us, a["exit_us"]),
        "local_hour": local.hour,
        "local_weekend": local.weekday() >= 5,
        "timezone_source": tz_source,
        "shopper_known": shopper_key(a) is not None,
        "past_orders": past_orders,
        "past_abandonments": past_abandonments,
        "past_conversion_rate": history,
        "device": a["device"] or "unknown",
        "multi_device": len(a["devices"]) > 1,
    }
    return features
