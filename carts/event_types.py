"""The event types clients may post, their payload schemas, versions and upcasters.

A payload is validated against the current schema of its type with field-level errors. Events are
stored with the schema version they were posted in and upcast on read, never rewritten.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rest_framework import serializers

from carts import money

Payload = dict[str, Any]

SYSTEM_NAMESPACES = ("recovery.", "campaign.")
CART_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
MAX_MONEY = 10**12


class StrictSerializer(serializers.Serializer):
    """Refuses fields the schema does not know, so a typo is an error rather than lost data."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = set(data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError({k: ["Unknown field."] for k in sorted(unknown)})
        return super().to_internal_value(data)


class CurrencyField(serializers.CharField):
    default_error_messages = {"currency": "'{value}' is not an ISO 4217 currency code."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_length", 3)
        kwargs.setdefault("max_length", 3)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if not money.is_currency(value):
            self.fail("currency", value=value)
        return str(value)


def MoneyField(**kwargs: Any) -> serializers.IntegerField:
    """An amount in integer minor units (cents): 1299 means 12.99."""
    return serializers.IntegerField(min_value=0, max_value=MAX_MONEY, **kwargs)


def TimezoneField(**kwargs: Any) -> serializers.CharField:
    def _check(value: str) -> None:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise serializers.ValidationError(f"'{value}' is not an IANA time zone.") from exc

    return serializers.CharField(max_length=64, validators=[_check], **kwargs)


LocaleField = lambda **kw: serializers.RegexField(  # noqa: E731
    r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$", max_length=35, **kw
)


class ItemAddedV2(StrictSerializer):
    sku = serializers.CharField(max_length=128)
    name = serializers.CharField(max_length=512)
    quantity = serializers.IntegerField(min_value=1, max_value=100_000)
    unit_price = MoneyField()
    currency = CurrencyField()
    category = serializers.CharField(max_length=256, required=False, allow_blank=True)
    url = serializers.URLField(max_length=2048, required=False)
    image_url = serializers.URLField(max_length=2048, required=False)


class ItemAddedV1(StrictSerializer):
    """v1: ``price`` as a decimal in major units (superseded by v2's integer ``unit_price``)."""

    sku = serializers.CharField(max_length=128)
    name = serializers.CharField(max_length=512)
    quantity = serializers.IntegerField(min_value=1, max_value=100_000)
    price = serializers.DecimalField(max_digits=16, decimal_places=4, min_value=0)
    currency = CurrencyField()
    category = serializers.CharField(max_length=256, required=False, allow_blank=True)
    url = serializers.URLField(max_length=2048, required=False)
    image_url = serializers.URLField(max_length=2048, required=False)


class ItemRemoved(StrictSerializer):
    sku = serializers.CharField(max_length=128)
    quantity = serializers.IntegerField(min_value=1, max_value=100_000, required=False)


class ItemQuantityChanged(StrictSerializer):
    sku = serializers.CharField(max_length=128)
    quantity = serializers.IntegerField(min_value=0, max_value=100_000)


PAGE_TYPES = ("home", "category", "product", "search", "cart", "checkout", "account", "other")


class PageViewed(StrictSerializer):
    url = serializers.CharField(max_length=2048)
    page_type = serializers.ChoiceField(choices=PAGE_TYPES)
    sku = serializers.CharField(max_length=128, required=False)
    dwell_ms = serializers.IntegerField(min_value=0, required=False)


class CheckoutStarted(StrictSerializer):
    pass


class Consent(StrictSerializer):
    email = serializers.BooleanField(required=False)
    sms = serializers.BooleanField(required=False)


class ContactCaptured(StrictSerializer):
    email = serializers.EmailField(max_length=254)
    phone = serializers.RegexField(r"^\+?[0-9 ()\-]{4,32}$", required=False)
    consent = Consent(required=False)
    timezone = TimezoneField(required=False)
    locale = LocaleField(required=False)


class ShippingQuoted(StrictSerializer):
    amount = MoneyField()
    currency = CurrencyField(required=False)


class CouponRejected(StrictSerializer):
    code = serializers.CharField(max_length=64)
    reason = serializers.CharField(max_length=256, required=False)


EXIT_TRIGGERS = ("mouse_leave", "tab_hidden", "back_button", "scroll_up", "idle")


class ExitIntent(StrictSerializer):
    trigger = serializers.ChoiceField(choices=EXIT_TRIGGERS)


class OrderPlaced(StrictSerializer):
    order_id = serializers.CharField(max_length=128)
    total = MoneyField()
    currency = CurrencyField()
    coupon = serializers.CharField(max_length=64, required=False)


class OrderRefunded(StrictSerializer):
    order_id = serializers.CharField(max_length=128)
    amount = MoneyField()
    currency = CurrencyField(required=False)


def _item_added_v1_to_v2(data: Payload) -> Payload:
    """v1 carried ``price`` as a decimal string in major units; v2 has integer minor units."""
    out = {k: v for k, v in data.items() if k != "price"}
    out["unit_price"] = money.to_minor_units(str(data["price"]), str(data.get("currency", "")))
    return out


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    version: int
    schema: type[serializers.Serializer] | None
    upcasters: Mapping[int, Callable[[Payload], Payload]] = field(default_factory=dict)
    client_may_post: bool = True
    # Schemas of older versions, so an old payload's errors name its own fields.
    old_schemas: Mapping[int, type[serializers.Serializer]] = field(default_factory=dict)


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
)

CLIENT_TYPES = tuple(name for name, t in REGISTRY.items() if t.client_may_post)


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
    """Validate a client payload; return (schema version to store, payload as posted, cleaned).

    Raises ``serializers.ValidationError`` with field-level detail (keys relative to ``data``).
    """
    event_type = REGISTRY[type_name]
    version = event_type.version if schema_version is None else schema_version
    if version < 1 or version > event_type.version:
        raise serializers.ValidationError(
            {"schema_version": [f"{type_name} has schema versions 1 to {event_type.version}."]}
        )
    if version < event_type.version and version not in event_type.upcasters:
        raise serializers.ValidationError(
            {"schema_version": [f"{type_name} version {version} is no longer accepted."]}
        )
    if not isinstance(data, Mapping):
        raise serializers.ValidationError({"data": ["Expected a JSON object."]})
    old_schema = event_type.old_schemas.get(version)
    if old_schema is not None:
        old = old_schema(data=data)
        if not old.is_valid():
            raise serializers.ValidationError({"data": old.errors})
    if version < event_type.version:
        try:
            current = upcast(type_name, version, dict(data))
        except (KeyError, ValueError, ArithmeticError) as exc:
            raise serializers.ValidationError(
                {"data": [f"Cannot read {type_name} v{version}: {exc}"]}
            ) from exc
    else:
        current = dict(data)
    if event_type.schema is None:
        return version, current
    serializer = event_type.schema(data=current)
    if not serializer.is_valid():
        raise serializers.ValidationError({"data": serializer.errors})
    cleaned = dict(serializer.validated_data)
    if version < event_type.version:
        return version, dict(data)  # stored as posted; upcast again on every read
    return version, _plain(cleaned)


def _plain(value: Any) -> Any:
    """Validated data with OrderedDicts turned into plain JSON-able dicts."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
