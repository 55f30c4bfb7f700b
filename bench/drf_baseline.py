"""Baseline for bench/validation.py: the DRF serializers that validated events until pydantic
replaced them (carts/event_types.py and carts/apis.py at commit 9e78b7f), kept here only so the
benchmark can time both in the same run. Not used by the product.

``events_in(body)`` mirrors ``carts.apis.events_in``: the request body in, NewEvents out, a DRF
ValidationError with field errors otherwise.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import serializers

from carts import event_types, money, services


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
    return serializers.IntegerField(min_value=0, max_value=event_types.MAX_MONEY, **kwargs)


def TimezoneField(**kwargs: Any) -> serializers.CharField:
    def _check(value: str) -> None:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise serializers.ValidationError(f"'{value}' is not an IANA time zone.") from exc

    return serializers.CharField(max_length=64, validators=[_check], **kwargs)


def LocaleField(**kwargs: Any) -> serializers.RegexField:
    return serializers.RegexField(
        r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$", max_length=35, **kwargs
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


class PageViewed(StrictSerializer):
    url = serializers.CharField(max_length=2048)
    page_type = serializers.ChoiceField(choices=event_types.PAGE_TYPES)
    sku = serializers.CharField(max_length=128, required=False)
    dwell_ms = serializers.IntegerField(min_value=0, required=False)
    device = serializers.ChoiceField(choices=event_types.DEVICES, required=False)


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


class ExitIntent(StrictSerializer):
    trigger = serializers.ChoiceField(choices=event_types.EXIT_TRIGGERS)


class OrderPlaced(StrictSerializer):
    order_id = serializers.CharField(max_length=128)
    total = MoneyField()
    currency = CurrencyField()
    coupon = serializers.CharField(max_length=64, required=False)


class OrderRefunded(StrictSerializer):
    order_id = serializers.CharField(max_length=128)
    amount = MoneyField()
    currency = CurrencyField(required=False)


# (type, schema version) -> serializer; versions and upcasters come from event_types.REGISTRY.
SCHEMAS: dict[tuple[str, int], type[serializers.Serializer]] = {
    ("cart.item_added", 2): ItemAddedV2,
    ("cart.item_added", 1): ItemAddedV1,
    ("cart.item_removed", 1): ItemRemoved,
    ("cart.item_quantity_changed", 1): ItemQuantityChanged,
    ("page.viewed", 1): PageViewed,
    ("checkout.started", 1): CheckoutStarted,
    ("checkout.contact_captured", 1): ContactCaptured,
    ("checkout.shipping_quoted", 1): ShippingQuoted,
    ("coupon.rejected", 1): CouponRejected,
    ("shopper.exit_intent", 1): ExitIntent,
    ("order.placed", 1): OrderPlaced,
    ("order.refunded", 1): OrderRefunded,
}


def validate(type_name: str, schema_version: int | None, data: Any) -> tuple[int, dict[str, Any]]:
    event_type = event_types.REGISTRY[type_name]
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
    if version < event_type.version:
        old = SCHEMAS[type_name, version](data=data)
        if not old.is_valid():
            raise serializers.ValidationError({"data": old.errors})
        try:
            current = event_types.upcast(type_name, version, dict(data))
        except (KeyError, ValueError, ArithmeticError) as exc:
            raise serializers.ValidationError(
                {"data": [f"Cannot read {type_name} v{version}: {exc}"]}
            ) from exc
    else:
        current = dict(data)
    serializer = SCHEMAS[type_name, event_type.version](data=current)
    if not serializer.is_valid():
        raise serializers.ValidationError({"data": serializer.errors})
    if version < event_type.version:
        return version, dict(data)
    return version, _plain(dict(serializer.validated_data))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class ShopperSerializer(StrictSerializer):
    id = serializers.CharField(max_length=128, required=False)
    email = serializers.EmailField(max_length=254, required=False)
    timezone = TimezoneField(required=False)
    locale = LocaleField(required=False)


class CartTokenField(serializers.RegexField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            event_types.CART_TOKEN_RE,
            error_messages={
                "invalid": "1-128 characters: letters, digits and _ . : - (starting with a "
                "letter or digit)."
            },
            **kwargs,
        )


class EventIn(StrictSerializer):
    id = serializers.UUIDField()
    cart = CartTokenField()
    type = serializers.CharField(max_length=64)
    schema_version = serializers.IntegerField(min_value=1, required=False)
    occurred_at = serializers.DateTimeField()
    expected_version = serializers.IntegerField(min_value=0, required=False)
    shopper = ShopperSerializer(required=False)
    data = serializers.JSONField(required=False, default=dict)  # type: ignore[assignment]

    def validate_type(self, value: str) -> str:
        if value.startswith(event_types.SYSTEM_NAMESPACES):
            raise serializers.ValidationError(
                f"'{value}' is emitted by the system and cannot be posted."
            )
        if value not in event_types.REGISTRY:
            raise serializers.ValidationError(
                f"Unknown event type '{value}'. Known: {', '.join(event_types.CLIENT_TYPES)}."
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        version, data = validate(attrs["type"], attrs.get("schema_version"), attrs.get("data", {}))
        attrs["schema_version"] = version
        attrs["data"] = data
        return attrs


class BatchIn(StrictSerializer):
    events = EventIn(many=True, allow_empty=False, max_length=settings.CARTS_MAX_BATCH)  # type: ignore[call-arg]


def events_in(body: Any) -> list[services.NewEvent]:
    is_batch = isinstance(body, dict) and "events" in body
    serializer: serializers.Serializer = BatchIn(data=body) if is_batch else EventIn(data=body)
    serializer.is_valid(raise_exception=True)
    raw = serializer.validated_data["events"] if is_batch else [serializer.validated_data]
    return [
        services.NewEvent(
            event_id=v["id"],
            cart=v["cart"],
            type=v["type"],
            schema_version=v["schema_version"],
            occurred_at=v["occurred_at"],
            data=v["data"],
            shopper=dict(v["shopper"]) if v.get("shopper") else None,
            expected_version=v.get("expected_version"),
        )
        for v in raw
    ]
