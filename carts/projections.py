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


def _apply_data(cart: Cart, event_type: str, data: Mapping[str, Any]) -> Cart:
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
        return replace(cart, currency=currency, lines=lines)
    if event_type == "cart.item_removed":
        sku = str(data["sku"])
        remaining = _quantity_of(cart.lines, sku) - int(data.get("quantity") or 10**9)
        return replace(cart, lines=_set_quantity(cart.lines, sku, remaining))
    if event_type == "cart.item_quantity_changed":
        sku = str(data["sku"])
        if not _quantity_of(cart.lines, sku) and int(data["quantity"]) > 0:
            raise Rejected("sku", f"{sku!r} is not in this cart; add it with cart.item_added.")
        return replace(cart, lines=_set_quantity(cart.lines, sku, int(data["quantity"])))
    if event_type == "checkout.started":
        status = cart.status if cart.status == CONVERTED else CHECKOUT
        return replace(cart, status=status)
    if event_type == "checkout.contact_captured":
        consent = dict(cart.consent)
        consent.update({k: bool(v) for k, v in dict(data.get("consent") or {}).items()})
        return replace(
            cart,
            email=str(data["email"]),
            phone=str(data.get("phone", cart.phone)),
            consent=consent,
            timezone=str(data.get("timezone", cart.timezone)),
            locale=str(data.get("locale", cart.locale)),
        )
    if event_type == "checkout.shipping_quoted":
        return replace(cart, currency=_check_currency(cart, data.get("currency")))
    if event_type == "order.placed":
        currency = _check_currency(cart, data["currency"])
        return replace(
            cart,
            status=CONVERTED,
            currency=currency,
            order_id=str(data["order_id"]),
            order_total=int(data["total"]),
        )
    if event_type == "order.refunded":
        if not cart.order_id:
            raise Rejected("order_id", "This cart has no order to refund.")
        _check_currency(cart, data.get("currency"))
        total = cart.order_total or 0
        if cart.refunded + int(data["amount"]) > total:
            raise Rejected("amount", f"Refunds would exceed the order total of {total}.")
        return replace(cart, refunded=cart.refunded + int(data["amount"]))
    return cart  # page views, coupons, exit intents, system events: activity only


def apply(cart: Cart, event: FoldEvent) -> Cart:
    """The state after ``event``; its version is one more than before."""
    state = _apply_data(cart, event.type, event.data)
    shopper = event.shopper or {}
    is_activity = event.type.startswith(_SHOPPER_ACTIVITY_PREFIXES)
    last = cart.last_activity_at
    if is_activity and (last is None or event.occurred_at > last):
        last = event.occurred_at
    started = event.occurred_at if cart.started_at is None else cart.started_at
    checkout_at = cart.checkout_started_at
    if event.type == "checkout.started" and checkout_at is None:
        checkout_at = event.occurred_at
    converted_at = cart.converted_at
    if event.type == "order.placed" and converted_at is None:
        converted_at = event.occurred_at
    return replace(
        state,
        version=cart.version + 1,
        shopper_id=str(shopper.get("id") or state.shopper_id),
        email=str(state.email or shopper.get("email") or ""),
        timezone=str(state.timezone or shopper.get("timezone") or ""),
        locale=str(state.locale or shopper.get("locale") or ""),
        started_at=started,
        last_activity_at=last,
        checkout_started_at=checkout_at,
        converted_at=converted_at,
    )


def fold(events: Iterable[FoldEvent], cart: Cart | None = None) -> Cart:
    """Fold events, in version order, onto ``cart`` (an empty cart by default)."""
    state = cart or Cart()
    for event in events:
        state = apply(state, event)
    return state
