"""The event types clients may post, their payload schemas, versions and upcasters.

A payload is validated against the current schema of its type with field-level errors. Events are
stored with the schema version they were posted in and upcast on read, never rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Literal, NotRequired, get_args

from pydantic import Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from carts import money, validation
from carts.errors import EventInvalid
from carts.validation import (
    NOT_BOOL,
    STRICT,
    Currency,
    Email,
    Locale,
    Money,
    Phone,
    Quantity,
    Timezone,
    Url,
    field_errors,
    text,
)

Payload = dict[str, Any]

SYSTEM_NAMESPACES = ("recovery.", "campaign.")
SHOPPER_ERASED = "shopper.erased"
CART_TOKEN_RE = re.compile(validation.CART_TOKEN_PATTERN)
MAX_MONEY = validation.MAX_MONEY

# Payload schemas. TypedDicts, so a valid payload comes out as a plain dict holding the fields that
# were sent, in schema order, cleaned (text stripped, numbers as numbers).


@with_config(STRICT)
class ItemAddedV2(TypedDict):
    sku: Annotated[str, text(128)]
    name: Annotated[str, text(512)]
    quantity: Quantity
    unit_price: Money
    currency: Currency
    category: NotRequired[Annotated[str, text(256, blank=True)]]
    url: NotRequired[Url]
    image_url: NotRequired[Url]


@with_config(STRICT)
class ItemAddedV1(TypedDict):
    """v1: ``price`` as a decimal in major units (superseded by v2's integer ``unit_price``)."""

    sku: Annotated[str, text(128)]
    name: Annotated[str, text(512)]
    quantity: Quantity
    price: Annotated[Decimal, Field(max_digits=16, decimal_places=4, ge=0, allow_inf_nan=False)]
    currency: Currency
    category: NotRequired[Annotated[str, text(256, blank=True)]]
    url: NotRequired[Url]
    image_url: NotRequired[Url]


@with_config(STRICT)
class ItemRemoved(TypedDict):
    sku: Annotated[str, text(128)]
    quantity: NotRequired[Quantity]


@with_config(STRICT)
class ItemQuantityChanged(TypedDict):
    sku: Annotated[str, text(128)]
    quantity: Annotated[int, Field(ge=0, le=validation.MAX_QUANTITY), NOT_BOOL]


PageType = Literal["home", "category", "product", "search", "cart", "checkout", "account", "other"]
PAGE_TYPES = get_args(PageType)
Device = Literal["desktop", "mobile", "tablet"]
DEVICES = get_args(Device)


@with_config(STRICT)
class PageViewed(TypedDict):
    url: Annotated[str, text(2048)]
    page_type: PageType
    sku: NotRequired[Annotated[str, text(128)]]
    dwell_ms: NotRequired[Annotated[int, Field(ge=0, le=validation.MAX_DWELL_MS), NOT_BOOL]]
    device: NotRequired[Device]


@with_config(STRICT)
class CheckoutStarted(TypedDict):
    pass


@with_config(STRICT)
class Consent(TypedDict):
    email: NotRequired[bool]
    sms: NotRequired[bool]


@with_config(STRICT)
class ContactCaptured(TypedDict):
    email: Email
    phone: NotRequired[Phone]
    consent: NotRequired[Consent]
    timezone: NotRequired[Timezone]
    locale: NotRequired[Locale]


@with_config(STRICT)
class ShippingQuoted(TypedDict):
    amount: Money
    currency: NotRequired[Currency]


@with_config(STRICT)
class CouponRejected(TypedDict):
    code: Annotated[str, text(64)]
    reason: NotRequired[Annotated[str, text(256)]]


ExitTrigger = Literal["mouse_leave", "tab_hidden", "back_button", "scroll_up", "idle"]
EXIT_TRIGGERS = get_args(ExitTrigger)


@with_config(STRICT)
class ExitIntent(TypedDict):
    trigger: ExitTrigger


@with_config(STRICT)
class OrderPlaced(TypedDict):
    order_id: Annotated[str, text(128)]
    total: Money
    currency: Currency
    coupon: NotRequired[Annotated[str, text(64)]]


@with_config(STRICT)
class OrderRefunded(TypedDict):
    order_id: Annotated[str, text(128)]
    amount: Money
    currency: NotRequired[Currency]


def _item_added_v1_to_v2(data: Payload) -> Payload:
    """v1 carried ``price`` as a decimal string in major units; v2 has integer minor units."""
    out = {k: v for k, v in data.items() if k != "price"}
    out["unit_price"] = money.to_minor_units(str(data["price"]), str(data.get("currency", "")))
    return out


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    version: int
    # A TypedDict configured with validation.STRICT (None: the payload is not checked).
    schema: type | None
    upcasters: Mapping[int, Callable[[Payload], Payload]] = field(default_factory=dict)
    client_may_post: bool = True
    # Schemas of older versions, so an old payload's errors name its own fields.
    old_schemas: Mapping[int, type] = field(default_factory=dict)


def _types(*types: EventType) -> dict[str, EventType]:
    return {t.name: t for t in types}


REGISTRY: dict[str, EventType] = _types(
    EventType(
        "cart.item_added", 2, ItemAddedV2, {1: _item_added_v1_to_v2}, old_schemas={1: ItemAddedV1}
    ),
    EventType("cart.item_removed", 1, ItemRemoved),
    EventType("cart.item_quantity_changed", 1, ItemQuantityChanged),
    EventType("page.viewed", 1, PageViewed),
    EventType("checkout.started", 1, CheckoutStarted),
    EventType("checkout.contact_captured", 1, ContactCaptured),
    EventType("checkout.shipping_quoted", 1, ShippingQuoted),
    EventType("coupon.rejected", 1, CouponRejected),
    EventType("shopper.exit_intent", 1, ExitIntent),
    EventType("order.placed", 1, OrderPlaced),
    EventType("order.refunded", 1, OrderRefunded),
    # The shopper's data was erased (carts/privacy.py): the cart's contact details are gone from
    # here on, and its earlier events' personal fields no longer open. Appended by the system.
    EventType(SHOPPER_ERASED, 1, None, client_may_post=False),
)

CLIENT_TYPES = tuple(name for name, t in REGISTRY.items() if t.client_may_post)
# What a shopper's browser may send (the publishable key): what a browser knows. Orders and refunds
# come from the shop's server or a platform (carts/sources.py).
BROWSER_TYPES = (
    "cart.item_added",
    "cart.item_removed",
    "cart.item_quantity_changed",
    "page.viewed",
    "checkout.started",
    "checkout.contact_captured",
    "checkout.shipping_quoted",
    "coupon.rejected",
    "shopper.exit_intent",
)


def register_system_type(event_type: EventType) -> None:
    """Later apps (recovery, campaigns) register the types they append themselves."""
    if not event_type.name.startswith(SYSTEM_NAMESPACES):
        raise ValueError(f"system event types live in {SYSTEM_NAMESPACES}: {event_type.name}")
    REGISTRY[event_type.name] = replace(event_type, client_may_post=False)


def upcast(type_name: str, schema_version: int, data: Payload) -> Payload:
    """Bring a payload stored at ``schema_version`` to the type's current version."""
    event_type = REGISTRY[type_name]
    version = schema_version
    while version < event_type.version:
        data = event_type.upcasters[version](data)
        version += 1
    return data


def validate(type_name: str, schema_version: int | None, data: Any) -> tuple[int, Payload]:
    """Validate a client payload; return (schema version to store, payload to store).

    The payload to store is the cleaned one at the current version, and the one as posted at an
    older version (upcast on every read). Raises ``EventInvalid`` whose ``detail`` holds field
    errors keyed like the event object: ``{"data": {"quantity": ["..."]}}`` or
    ``{"schema_version": ["..."]}``.
    """
    event_type = REGISTRY[type_name]
    version = event_type.version if schema_version is None else schema_version
    if version < 1 or version > event_type.version:
        raise EventInvalid(
            f"Invalid {type_name} event.",
            schema_version=[f"{type_name} has schema versions 1 to {event_type.version}."],
        )
    if version < event_type.version and version not in event_type.upcasters:
        raise EventInvalid(
            f"Invalid {type_name} event.",
            schema_version=[f"{type_name} version {version} is no longer accepted."],
        )
    if not isinstance(data, Mapping):
        raise EventInvalid(f"Invalid {type_name} event.", data=["Expected a JSON object."])
    if version == event_type.version:
        if event_type.schema is None:
            return version, dict(data)
        return version, _checked(type_name, event_type.schema, data)
    old_schema = event_type.old_schemas.get(version)
    if old_schema is not None:
        _checked(type_name, old_schema, data)
    try:
        current = upcast(type_name, version, dict(data))
    except (KeyError, ValueError, ArithmeticError) as exc:
        raise EventInvalid(
            f"Invalid {type_name} event.", data=[f"Cannot read {type_name} v{version}: {exc}"]
        ) from exc
    if event_type.schema is not None:
        _checked(type_name, event_type.schema, current)
    return version, dict(data)  # stored as posted; upcast again on every read


@cache
def _adapter(schema: type) -> TypeAdapter[Any]:
    return TypeAdapter(schema)


def _checked(type_name: str, schema: type, data: Mapping[str, Any]) -> Payload:
    try:
        payload: Payload = _adapter(schema).validate_python(data)
    except ValidationError as exc:
        raise EventInvalid(f"Invalid {type_name} event.", data=field_errors(exc)) from None
    return payload
