"""Ingestion and cart read API. Views validate, call one service or selector, and render."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from carts import event_types, selectors, services
from carts.auth import StoreRateThrottle
from carts.models import CartState


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


class CartNotFound(exceptions.NotFound):
    default_detail = "This store has no such cart."


def _check_body_size(request: Request) -> None:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise PayloadTooLarge(f"Request body is {length} bytes; the limit is {limit}.")


class ShopperSerializer(event_types.StrictSerializer):
    id = serializers.CharField(max_length=128, required=False)
    email = serializers.EmailField(max_length=254, required=False)
    timezone = event_types.TimezoneField(required=False)
    locale = event_types.LocaleField(required=False)


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


class EventIn(event_types.StrictSerializer):
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
        version, data = event_types.validate(
            attrs["type"], attrs.get("schema_version"), attrs.get("data", {})
        )
        attrs["schema_version"] = version
        attrs["data"] = data
        return attrs


def _new_event(v: dict[str, Any]) -> services.NewEvent:
    shopper = dict(v["shopper"]) if v.get("shopper") else None
    return services.NewEvent(
        event_id=v["id"],
        cart=v["cart"],
        type=v["type"],
        schema_version=v["schema_version"],
        occurred_at=v["occurred_at"],
        data=v["data"],
        shopper=shopper,
        expected_version=v.get("expected_version"),
    )


class BatchIn(event_types.StrictSerializer):
    events = EventIn(many=True, allow_empty=False, max_length=settings.CARTS_MAX_BATCH)  # type: ignore[call-arg]


class AppendedOut(serializers.Serializer):
    id = serializers.UUIDField(source="event_id")
    cart = serializers.CharField()
    version = serializers.IntegerField()
    position = serializers.IntegerField()
    duplicate = serializers.BooleanField()


class EventsApi(APIView):
    throttle_classes = [StoreRateThrottle]

    @extend_schema(
        operation_id="events_append",
        summary="Append one event or a batch of up to 1000 (all or nothing).",
        request=BatchIn,
        responses={
            201: inline_serializer("AppendResult", {"events": AppendedOut(many=True)}),
            200: inline_serializer("AppendDuplicates", {"events": AppendedOut(many=True)}),
        },
    )
    def post(self, request: Request) -> Response:
        _check_body_size(request)
        body = request.data
        is_batch = isinstance(body, dict) and "events" in body
        serializer: serializers.Serializer = BatchIn(data=body) if is_batch else EventIn(data=body)
        serializer.is_valid(raise_exception=True)
        raw = serializer.validated_data["events"] if is_batch else [serializer.validated_data]
        results = services.events_append(
            store_id=request.auth.pk, events=[_new_event(v) for v in raw]
        )
        code = status.HTTP_200_OK if all(r.duplicate for r in results) else status.HTTP_201_CREATED
        return Response({"events": AppendedOut(results, many=True).data}, status=code)


class CartOut(serializers.ModelSerializer):
    cart = serializers.CharField(source="token")

    class Meta:
        model = CartState
        fields = [
            "cart", "version", "status", "currency", "items", "value", "item_count",
            "shopper_id", "email", "phone", "consent", "timezone", "locale", "order_id",
            "order_total", "refunded", "started_at", "last_activity_at", "checkout_started_at",
            "converted_at",
        ]  # fmt: skip


class CartApi(APIView):
    throttle_classes = [StoreRateThrottle]

    @extend_schema(operation_id="cart_get", responses=CartOut)
    def get(self, request: Request, cart: str) -> Response:
        state = selectors.cart_state_get(store_id=request.auth.pk, token=cart)
        if state is None:
            raise CartNotFound()
        return Response(CartOut(state).data)


class EventOut(serializers.Serializer):
    id = serializers.UUIDField(source="event_id")
    cart = serializers.CharField()
    version = serializers.IntegerField()
    position = serializers.IntegerField()
    type = serializers.CharField()
    schema_version = serializers.IntegerField()
    occurred_at = serializers.DateTimeField()
    recorded_at = serializers.DateTimeField()
    shopper = serializers.JSONField()
    data = serializers.JSONField()  # type: ignore[assignment]


class CartEventsApi(APIView):
    throttle_classes = [StoreRateThrottle]

    @extend_schema(
        operation_id="cart_events_list",
        parameters=[
            OpenApiParameter("after", int, description="Only events after this cart version."),
            OpenApiParameter("limit", int, description="At most this many (1-1000)."),
        ],
        responses=inline_serializer("CartEvents", {"events": EventOut(many=True)}),
    )
    def get(self, request: Request, cart: str) -> Response:
        params = _HistoryParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        if selectors.cart_state_get(store_id=request.auth.pk, token=cart) is None:
            raise CartNotFound()
        rows = selectors.cart_events_list(
            store_id=request.auth.pk,
            token=cart,
            after_version=params.validated_data["after"],
            limit=params.validated_data["limit"],
        )
        # The payload shown is upcast to the type's current schema version.
        for row in rows:
            row.schema_version = event_types.REGISTRY[row.type].version
        return Response({"events": EventOut(rows, many=True).data})


class _HistoryParams(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=1000)
