"""Cart state as a pure fold over the cart's events. No ORM, no clock, no settings.

``apply(state, event)`` returns the next state or raises ``Rejected`` when the event cannot apply
to this cart (for example an item in another currency). Payloads are already validated and upcast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

ACTIVE = "active"
CHECKOUT = "checkout"
CONVERTED = "converted"

# Events that are the shopper doing something (system events and refunds are not activity).
_SHOPPER_ACTIVITY_PREFIXES = ("cart.", "page.", "checkout.", "coupon.", "shopper.", "order.placed")


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
    timezone: str = ""
    locale: str = ""
    order_id: str = ""
    order_total: int | None = None
    refunded: int = 0
    started_at: datetime | None = None
    last_activity_at: datetime | None = None
    checkout_started_at: datetime | None = None
    converted_at: datetime | None = None

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


def _set_quantity(lines: tuple[Line, ...], sku: str, quantity: int) -> tuple[Line, ...]:
    if quantity <= 0:
        return tuple(line for line in lines if line.sku != sku)
    return tuple(replace(line, quantity=quantity) if line.sku == sku else line for line in lines)


def _quantity_of(lines: tuple[Line, ...], sku: str) -> int:
    return next((line.quantity for line in lines if line.sku == sku), 0)


def _changes(cart: Cart, event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields an event of this type changes (a dict, so ``apply`` replaces only once)."""
    if event_type == "cart.item_added":
        currency = _check_currency(cart, data["currency"])
        sku = str(data["sku"])
        existing = _quantity_of(cart.lines, sku)
        if existing:
            lines = tuple(
                replace(
                    line,
                    quantity=line.quantity + int(data["quantity"]),
                    unit_price=int(data["unit_price"]),
                )
                if line.sku == sku
                else line
                for line in cart.lines
            )
        else:
            lines = (
                *cart.lines,
                Line(
                    sku=sku,
                    name=str(data["name"]),
                    quantity=int(data["quantity"]),
                    unit_price=int(data["unit_price"]),
                    category=str(data.get("category", "")),
                    url=str(data.get("url", "")),
                    image_url=str(data.get("image_url", "")),
                ),
            )
        return {"currency": currency, "lines": lines}
    if event_type == "cart.item_removed":
        sku = str(data["sku"])
        remaining = _quantity_of(cart.lines, sku) - int(data.get("quantity") or 10**9)
        return {"lines": _set_quantity(cart.lines, sku, remaining)}
    if event_type == "cart.item_quantity_changed":
        sku = str(data["sku"])
        if not _quantity_of(cart.lines, sku) and int(data["quantity"]) > 0:
            raise Rejected("sku", f"{sku!r} is not in this cart; add it with cart.item_added.")
        return {"lines": _set_quantity(cart.lines, sku, int(data["quantity"]))}
    if event_type == "checkout.started":
        status = cart.status if cart.status == CONVERTED else CHECKOUT
        return {"status": status}
    if event_type == "checkout.contact_captured":
        consent = dict(cart.consent)
        consent.update({k: bool(v) for k, v in dict(data.get("consent") or {}).items()})
        return {
            "email": str(data["email"]),
            "phone": str(data.get("phone", cart.phone)),
            "consent": consent,
            "timezone": str(data.get("timezone", cart.timezone)),
            "locale": str(data.get("locale", cart.locale)),
        }
    if event_type == "checkout.shipping_quoted":
        return {"currency": _check_currency(cart, data.get("currency"))}
    if event_type == "order.placed":
        currency = _check_currency(cart, data["currency"])
        return {
            "status": CONVERTED,
            "currency": currency,
            "order_id": str(data["order_id"]),
            "order_total": int(data["total"]),
        }
    if event_type == "order.refunded":
        if not cart.order_id:
            raise Rejected("order_id", "This cart has no order to refund.")
        _check_currency(cart, data.get("currency"))
        total = cart.order_total or 0
        if cart.refunded + int(data["amount"]) > total:
            raise Rejected("amount", f"Refunds would exceed the order total of {total}.")
        return {"refunded": cart.refunded + int(data["amount"])}
    return {}  # page views, coupons, exit intents, system events: activity only


def apply(cart: Cart, event: FoldEvent) -> Cart:
    """The state after ``event``; its version is one more than before."""
    changes = _changes(cart, event.type, event.data)
    occurred = event.occurred_at
    changes["version"] = cart.version + 1
    if cart.started_at is None:
        changes["started_at"] = occurred
    last = cart.last_activity_at
    if event.type.startswith(_SHOPPER_ACTIVITY_PREFIXES) and (last is None or occurred > last):
        changes["last_activity_at"] = occurred
    if event.type == "checkout.started" and cart.checkout_started_at is None:
        changes["checkout_started_at"] = occurred
    if event.type == "order.placed" and cart.converted_at is None:
        changes["converted_at"] = occurred
    shopper = event.shopper
    if shopper:
        if shopper.get("id"):
            changes["shopper_id"] = str(shopper["id"])
        for name in ("email", "timezone", "locale"):
            if shopper.get(name) and not changes.get(name, getattr(cart, name)):
                changes[name] = str(shopper[name])
    return replace(cart, **changes)


def fold(events: Iterable[FoldEvent], cart: Cart | None = None) -> Cart:
    """Fold events, in version order, onto ``cart`` (an empty cart by default)."""
    state = cart or Cart()
    for event in events:
        state = apply(state, event)
    return state
