"""Cart state as a pure fold over the cart's events. No ORM, no clock, no settings.

``apply(state, event)`` returns the next state or raises ``Rejected`` when the event cannot apply
to this cart (for example an item in another currency). Payloads are already validated and upcast.

Rules that follow an event's source (carts/sources.py): only a trusted source (the shop's server,
a platform, the system) places or refunds an order; the first order converts the cart and a
different later one is refused, so every reader agrees on which order counts; a browser never
replaces contact details or consent that a trusted source gave. A reader of events the log
already holds (the cart-state rebuild, carts/projectors.py) dead-letters one the fold refuses and
folds the cart's later events, so it never stops on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from carts.sources import trusted

# Bounds of a cart that every later computation can represent (docs/api.md, "Bounds"): its value
# in minor units (carts.validation.MAX_MONEY; bigint columns and sums of a few carts stay in range),
# its distinct lines, and one line's quantity (with MAX_LINES, the item count fits an int4).
MAX_CART_VALUE = 10**12  # carts.validation.MAX_MONEY takes it: one amount of an event
MAX_LINES = 500
MAX_LINE_QUANTITY = 100_000  # carts.validation.MAX_QUANTITY takes it: what one event adds

ACTIVE = "active"
CHECKOUT = "checkout"
CONVERTED = "converted"

# Events that are the shopper doing something (system events and refunds are not activity).
# Appended by the system when the shopper's data is erased (carts.event_types.SHOPPER_ERASED):
# not shopper activity.
SHOPPER_ERASED = "shopper.erased"
_SHOPPER_ACTIVITY_PREFIXES = (
    "cart.",
    "page.",
    "checkout.",
    "coupon.",
    "shopper.exit_intent",
    "order.placed",
)


class Rejected(Exception):
    """An event that is valid on its own but cannot apply to this cart."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    name: str
    quantity: int
    unit_price: int
    category: str = ""
    url: str = ""
    image_url: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "name": self.name,
            "quantity": self.quantity,
            "unit_price": self.unit_price,
            "category": self.category,
            "url": self.url,
            "image_url": self.image_url,
        }


@dataclass(frozen=True, slots=True)
class FoldEvent:
    type: str
    data: Mapping[str, Any]
    occurred_at: datetime
    shopper: Mapping[str, Any] | None = None
    source: str = "unknown"  # the source kind (carts/sources.py)
    # The server's time of the append that recorded it (the stored event's recorded_at); None
    # for events that were never recorded (simulations, pure tests).
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cart:
    version: int = 0
    status: str = ACTIVE
    currency: str = ""
    lines: tuple[Line, ...] = ()
    shopper_id: str = ""
    email: str = ""
    phone: str = ""
    consent: Mapping[str, bool] = field(default_factory=dict)
    contact_source: str = ""  # the source kind that gave email, phone and consent
    timezone: str = ""
    locale: str = ""
    order_id: str = ""
    order_total: int | None = None
    refunded: int = 0
    started_at: datetime | None = None
    last_activity_at: datetime | None = None  # the shopper's clock (occurred_at)
    checkout_started_at: datetime | None = None
    converted_at: datetime | None = None
    # The server's clock: when the latest shopper activity was recorded. Campaigns measure
    # idleness by it, so late, replayed and clock-skewed events count from their arrival.
    seen_at: datetime | None = None

    @property
    def value(self) -> int:
        return sum(line.quantity * line.unit_price for line in self.lines)

    @property
    def item_count(self) -> int:
        return sum(line.quantity for line in self.lines)


def _check_currency(cart: Cart, currency: str | None, field_name: str = "currency") -> str:
    if not currency:
        return cart.currency
    if cart.currency and currency != cart.currency:
        raise Rejected(field_name, f"Cart is in {cart.currency}; this event is in {currency}.")
    return currency


def _index_of(lines: tuple[Line, ...], sku: str) -> int:
    for i, line in enumerate(lines):
        if line.sku == sku:
            return i
    return -1


def _with_line(lines: tuple[Line, ...], i: int, line: Line | None) -> tuple[Line, ...]:
    """``lines`` with line ``i`` replaced by ``line`` (removed if None): slices, not a rebuild."""
    return (*lines[:i], *lines[i + 1 :]) if line is None else (*lines[:i], line, *lines[i + 1 :])


def _check_bounds(lines: tuple[Line, ...], changed: Line) -> None:
    """Refuse a line that grew past MAX_LINE_QUANTITY, or a cart past MAX_CART_VALUE."""
    if changed.quantity > MAX_LINE_QUANTITY:
        raise Rejected(
            "quantity",
            f"The line's quantity would be {changed.quantity}; at most {MAX_LINE_QUANTITY}.",
        )
    value = sum(line.quantity * line.unit_price for line in lines)
    if value > MAX_CART_VALUE:
        raise Rejected(
            "quantity",
            f"The cart's value would be {value} minor units; at most {MAX_CART_VALUE}.",
        )


def _changes(cart: Cart, event_type: str, data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The fields an event of this type changes (a dict, so ``apply`` replaces only once)."""
    if event_type == "cart.item_added":
        currency = _check_currency(cart, data["currency"])
        sku = str(data["sku"])
        i = _index_of(cart.lines, sku)
        if i >= 0:
            old = cart.lines[i]
            line = replace(
                old,
                quantity=old.quantity + int(data["quantity"]),
                unit_price=int(data["unit_price"]),
            )
            lines = _with_line(cart.lines, i, line)
        else:
            if len(cart.lines) >= MAX_LINES:
                raise Rejected("sku", f"A cart holds at most {MAX_LINES} distinct lines.")
            line = Line(
                sku=sku,
                name=str(data["name"]),
                quantity=int(data["quantity"]),
                unit_price=int(data["unit_price"]),
                category=str(data.get("category", "")),
                url=str(data.get("url", "")),
                image_url=str(data.get("image_url", "")),
            )
            lines = (*cart.lines, line)
        _check_bounds(lines, line)
        return {"currency": currency, "lines": lines}
    if event_type == "cart.item_removed":
        sku = str(data["sku"])
        i = _index_of(cart.lines, sku)
        if i < 0:
            return {}
        old = cart.lines[i]
        remaining = old.quantity - int(data.get("quantity") or 10**9)
        kept = replace(old, quantity=remaining) if remaining > 0 else None
        return {"lines": _with_line(cart.lines, i, kept)}
    if event_type == "cart.item_quantity_changed":
        sku = str(data["sku"])
        quantity = int(data["quantity"])
        i = _index_of(cart.lines, sku)
        if i < 0:
            if quantity > 0:
                raise Rejected("sku", f"{sku!r} is not in this cart; add it with cart.item_added.")
            return {"lines": cart.lines}
        old = cart.lines[i]
        changed = replace(old, quantity=quantity) if quantity > 0 else None
        lines = _with_line(cart.lines, i, changed)
        if changed is not None and quantity > old.quantity:
            _check_bounds(lines, changed)
        return {"lines": lines}
    if event_type == "checkout.started":
        status = cart.status if cart.status == CONVERTED else CHECKOUT
        return {"status": status}
    if event_type == "checkout.contact_captured":
        if not trusted(source) and cart.email and trusted(cart.contact_source):
            raise Rejected(
                "email",
                "The shop's server gave this cart's contact details; a browser cannot change them.",
            )
        consent = dict(cart.consent)
        consent.update({k: bool(v) for k, v in dict(data.get("consent") or {}).items()})
        # An erased shopper's fields read as None (carts/pii.py): the cart keeps no contact.
        email = str(data.get("email") or "")
        # A phone belongs to the address it came with: another address without one has none.
        same = email.lower() == cart.email.lower()
        return {
            "email": email,
            "phone": str(data.get("phone") or "") if "phone" in data or not same else cart.phone,
            "consent": consent,
            "timezone": str(data.get("timezone", cart.timezone)),
            "locale": str(data.get("locale", cart.locale)),
            "contact_source": source,
        }
    if event_type == "checkout.shipping_quoted":
        return {"currency": _check_currency(cart, data.get("currency"))}
    if event_type == "order.placed":
        if not trusted(source):
            raise Rejected("type", "Orders come from the shop's server, not from a browser.")
        if cart.order_id:
            if cart.order_id == str(data["order_id"]):
                return {}  # the same order again: it converted the cart already
            raise Rejected(
                "order_id", f"This cart was converted by order {cart.order_id!r} already."
            )
        currency = _check_currency(cart, data["currency"])
        return {
            "status": CONVERTED,
            "currency": currency,
            "order_id": str(data["order_id"]),
            "order_total": int(data["total"]),
        }
    if event_type == "order.refunded":
        if not trusted(source):
            raise Rejected("type", "Refunds come from the shop's server, not from a browser.")
        if not cart.order_id:
            raise Rejected("order_id", "This cart has no order to refund.")
        _check_currency(cart, data.get("currency"))
        total = cart.order_total or 0
        if cart.refunded + int(data["amount"]) > total:
            raise Rejected("amount", f"Refunds would exceed the order total of {total}.")
        return {"refunded": cart.refunded + int(data["amount"])}
    if event_type == SHOPPER_ERASED:
        return {"email": "", "phone": "", "consent": {}, "contact_source": ""}
    return {}  # page views, coupons, exit intents, system events: activity only


def apply(cart: Cart, event: FoldEvent) -> Cart:
    """The state after ``event``; its version is one more than before. Raises ``Rejected`` for
    an event that cannot apply."""
    changes = _changes(cart, event.type, event.data, event.source)
    occurred = event.occurred_at
    changes["version"] = cart.version + 1
    if cart.started_at is None:
        changes["started_at"] = occurred
    if event.type.startswith(_SHOPPER_ACTIVITY_PREFIXES):
        last = cart.last_activity_at
        if last is None or occurred > last:
            changes["last_activity_at"] = occurred
        recorded, seen = event.recorded_at, cart.seen_at
        if recorded is not None and (seen is None or recorded > seen):
            changes["seen_at"] = recorded
    if event.type == "checkout.started" and cart.checkout_started_at is None:
        changes["checkout_started_at"] = occurred
    if "order_id" in changes and cart.converted_at is None:
        changes["converted_at"] = occurred
    shopper = event.shopper
    if shopper:
        if shopper.get("id") and trusted(event.source):  # a browser cannot name the shopper
            changes["shopper_id"] = str(shopper["id"])
        for name in ("email", "timezone", "locale"):
            if shopper.get(name) and not changes.get(name, getattr(cart, name)):
                changes[name] = str(shopper[name])
                if name == "email":
                    changes["contact_source"] = event.source
    return replace(cart, **changes)


def fold(events: Iterable[FoldEvent], cart: Cart | None = None) -> Cart:
    """Fold events, in version order, onto ``cart`` (an empty cart by default)."""
    state = cart or Cart()
    for event in events:
        state = apply(state, event)
    return state
