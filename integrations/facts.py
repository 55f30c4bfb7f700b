"""What a platform's webhook says, in our terms: pure values the adapters
(integrations/platforms/<platform>.py) read out of a delivery and the inbound service
(integrations/inbound.py) turns into events. No ORM, no clock, no settings.

Money is in minor units of ``currency``; times are timezone-aware UTC (the platform's clock: data,
never a timer); platform ids are strings, so ids beyond 2**53 stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Line:
    sku: str  # the SKU, or "variant:<id>" / "product:<id>" where the platform has none
    name: str
    quantity: int
    unit_price: int
    url: str = ""
    image_url: str = ""


def lines_merged(lines: tuple[Line, ...]) -> tuple[Line, ...]:
    """One line per SKU, in first-seen order: quantities summed, the unit price the lines'
    average (a platform may list one SKU twice, at two prices); our carts hold one line per SKU."""
    by_sku: dict[str, list[Line]] = {}
    for line in lines:
        by_sku.setdefault(line.sku, []).append(line)
    merged = []
    for same in by_sku.values():
        first = same[0]
        if len(same) == 1:
            merged.append(first)
            continue
        quantity = sum(x.quantity for x in same)
        total = sum(x.quantity * x.unit_price for x in same)
        price = (total + quantity // 2) // quantity if quantity else first.unit_price
        merged.append(Line(first.sku, first.name, quantity, price, first.url, first.image_url))
    return tuple(merged)


@dataclass(frozen=True, slots=True)
class Contact:
    email: str
    phone: str = ""
    accepts_marketing: bool | None = None  # None: the platform did not say
    locale: str = ""


@dataclass(frozen=True, slots=True)
class CheckoutSnapshot:
    """A cart or checkout as the platform has it at ``updated_at`` (the whole of it, not a
    change): carts/create and checkouts/update alike."""

    # "cart:<token>", "checkout:<token>", "checkout-id:<id>", or "ours:<our cart token>" (carried
    # through the platform by the shop, e.g. WooCommerce's order meta): the first bound wins
    refs: tuple[str, ...]
    updated_at: datetime | None
    currency: str
    lines: tuple[Line, ...]
    contact: Contact | None = None
    checkout: bool = False  # a checkout (not only a cart): checkout.started
    restore_url: str = ""
    completed: bool = False  # the platform says it became an order


@dataclass(frozen=True, slots=True)
class CheckoutDeleted:
    refs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    refs: tuple[str, ...]  # "order:<id>" first, then the cart and checkout it came from
    order_id: str
    total: int
    currency: str
    placed_at: datetime | None
    discount_codes: tuple[str, ...] = ()
    contact: Contact | None = None
    lines: tuple[Line, ...] = ()


@dataclass(frozen=True, slots=True)
class OrderRefunded:
    refs: tuple[str, ...]  # "order:<id>" first
    order_id: str
    amount: int
    currency: str
    refund_id: str = ""  # one refund recorded once, whatever the deliveries
    refunded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A delivery we read and deliberately do not map (a topic, a status)."""

    reason: str


Fact = CheckoutSnapshot | CheckoutDeleted | OrderPlaced | OrderRefunded | Ignored


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery whose signature was verified: its id, topic and what it says."""

    delivery_id: str
    topic: str
    facts: tuple[Fact, ...] = field(default_factory=tuple)
    # False for what is acknowledged and never stored: an unsigned hello such as WooCommerce's
    # ping (anyone may send one; it must not write rows or count as the platform delivering).
    recorded: bool = True


class BadDelivery(Exception):
    """A delivery we refuse; ``status`` is the HTTP status the platform's retry logic reads (401
    bad signature: retried, then given up; 400 malformed: not retried by most platforms; 404
    unknown shop)."""

    def __init__(self, status: int, message: str, **fields: list[str]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


class Adapter(Protocol):
    """One platform's webhooks (integrations/platforms/<platform>.py)."""

    platform: str

    def verify(self, *, connection: Any, headers: dict[str, str], body: bytes) -> None:
        """Raise BadDelivery(401) unless the body is signed for ``connection`` (an
        integrations.models.Connection: its sealed secret, or Saleor's JWKS), in constant time."""
        ...

    def read(self, *, headers: dict[str, str], body: bytes, connection: Any = None) -> Delivery:
        """The delivery's id, topic and facts; BadDelivery(400) for a body we cannot read.
        ``connection`` gives what the platform leaves out (the storefront, for restore links)."""
        ...
