"""Ingestion and cart read API. Views validate, call one service or selector, and render."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Annotated, Any, NotRequired
from uuid import UUID

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    Discriminator,
    Field,
    RootModel,
    Strict,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    with_config,
)
from pydantic_core import PydanticCustomError
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from typing_extensions import TypedDict

from carts import event_types, grants, privacy, selectors, services
from carts.auth import StoreRateThrottle
from carts.errors import EventInvalid
from carts.models import CartState, Store
from carts.privacy import Shopper
from carts.schema import (
    CART_NOT_FOUND,
    LENGTH_REQUIRED,
    PAYLOADS_DESCRIPTION,
    RETRY_AFTER,
    THROTTLED,
    UNAUTHORIZED,
    ApiSchema,
    bad_request,
    error,
)
from carts.sources import Source
from carts.validation import (
    CART_TOKEN_PATTERN,
    MAX_VERSION,
    NOT_BLANK,
    NOT_BOOL,
    STRICT,
    CartToken,
    Email,
    Locale,
    OccurredWindow,
    Timestamp,
    Timezone,
    field_errors,
    message,
    text,
)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


class CartNotFound(exceptions.NotFound):
    default_detail = "This store has no such cart."


BLANK_PARAMETER = "Give a value, or leave the parameter out."


def refuse_blank(params: Any, names: Collection[str]) -> None:
    """400 for a query parameter sent empty (``?limit=``): the schema gives each one a type or a
    pattern that an empty value does not meet, so it is not taken as left out."""
    blank = {name: [BLANK_PARAMETER] for name in names if params.get(name, None) == ""}
    if blank:
        raise exceptions.ValidationError(blank)


CART_PATH = OpenApiParameter(
    "cart",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    pattern=CART_TOKEN_PATTERN,
    description="The cart's token, as its events name it.",
)


def _check_body_size(request: Request) -> None:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise PayloadTooLarge(f"Request body is {length} bytes; the limit is {limit}.")


# The request body of POST /api/v1/events. Pydantic rather than DRF serializers: on this hot path
# it takes ~6 us an event against ~170 (bench/validation.py). The envelope is checked here, each
# payload by event_types.validate against its type's schema. One difference from the serializers:
# an id must be a UUID string (DRF's UUIDField also took JSON integers, even true, as UUIDs).


@with_config(STRICT)
class ShopperIn(TypedDict):
    id: NotRequired[Annotated[str, text(128)]]
    email: NotRequired[Email]
    timezone: NotRequired[Timezone]
    locale: NotRequired[Locale]


def _client_type(value: str) -> str:
    if value.startswith(event_types.SYSTEM_NAMESPACES):
        raise PydanticCustomError(
            "event_type",
            "'{value}' is emitted by the system and cannot be posted.",
            {"value": value},
        )
    if value in event_types.REGISTRY and not event_types.REGISTRY[value].client_may_post:
        raise PydanticCustomError(
            "event_type",
            "'{value}' is appended by the system and cannot be posted.",
            {"value": value},
        )
    if value not in event_types.REGISTRY:
        raise PydanticCustomError(
            "event_type",
            "Unknown event type '{value}'. Known: {known}.",
            {"value": value, "known": ", ".join(event_types.CLIENT_TYPES)},
        )
    return value


@with_config(STRICT)
class EventIn(TypedDict):
    id: Annotated[UUID, Field(description="Chosen by the client: the idempotency key.")]
    cart: CartToken
    type: Annotated[
        str,
        text(64),
        AfterValidator(_client_type),
        WithJsonSchema({"type": "string", "enum": list(event_types.CLIENT_TYPES)}),
    ]
    schema_version: NotRequired[
        Annotated[int, Field(ge=1, description="Default: the type's current one."), NOT_BOOL]
    ]
    occurred_at: Annotated[Timestamp, Field(description="When it happened at the source.")]
    expected_version: NotRequired[
        Annotated[
            int,
            Field(ge=0, le=MAX_VERSION, description="The cart's version before this event."),
            NOT_BOOL,
        ]
    ]
    shopper: NotRequired[ShopperIn]
    # Checked by event_types.validate against the type's schema.
    data: NotRequired[
        Annotated[Any, WithJsonSchema({"type": "object", "description": PAYLOADS_DESCRIPTION})]
    ]


class BatchIn(BaseModel):
    model_config = STRICT

    events: Annotated[list[EventIn], Field(min_length=1, max_length=settings.CARTS_MAX_BATCH)]


def _body_kind(body: Any) -> str:
    return "batch" if isinstance(body, dict) and "events" in body else "event"


class EventsIn(
    RootModel[
        Annotated[
            Annotated[BatchIn, Tag("batch")] | Annotated[EventIn, Tag("event")],
            Discriminator(_body_kind),
        ]
    ]
):
    """One event, or ``{"events": [...]}``: a batch, stored all or nothing."""


_EVENT_IN: TypeAdapter[EventIn] = TypeAdapter(EventIn)


def occurred_window(*, now: datetime, browser: bool = False) -> OccurredWindow:
    """The ``occurred_at`` window around ``now`` (the server's clock, from the edge): for the
    store's server (CARTS_SERVER_PAST_DAYS back) or for a shopper's browser
    (CARTS_BROWSER_PAST_DAYS back); both CARTS_FUTURE_MINUTES ahead. docs/api.md, "Bounds"."""
    days = settings.CARTS_BROWSER_PAST_DAYS if browser else settings.CARTS_SERVER_PAST_DAYS
    return OccurredWindow.around(
        now,
        past=timedelta(days=days),
        future=timedelta(minutes=settings.CARTS_FUTURE_MINUTES),
    )


def events_in(
    body: Any,
    *,
    types: Collection[str] | None = None,
    window: OccurredWindow | None = None,
) -> list[services.NewEvent]:
    """The request's events, valid; else a 400 with field errors keyed like the body.

    One event: ``{"data": {"quantity": ["..."]}}``; a batch: ``{"events": {"3": {...}}}``.
    ``types``: the event types this caller may send (a browser's allow-list); None: every client
    type. ``window``: where ``occurred_at`` must fall (``occurred_window``); None: anywhere.
    """
    try:
        parsed = EventsIn.model_validate(body).root
    except ValidationError as exc:
        raise exceptions.ValidationError(_envelope_errors(exc, body, window)) from None
    if isinstance(parsed, BatchIn):
        events, errors = _new_events(parsed.events, types, window)
        if errors:
            raise exceptions.ValidationError({"events": errors})
        return events
    events, errors = _new_events([parsed], types, window)
    if errors:
        raise exceptions.ValidationError(errors["0"])
    return events


def _new_events(
    events: list[EventIn],
    types: Collection[str] | None = None,
    window: OccurredWindow | None = None,
) -> tuple[list[services.NewEvent], dict[str, Any]]:
    """Check each payload against its type and each time against ``window``; the events, and
    their errors by index."""
    out: list[services.NewEvent] = []
    errors: dict[str, Any] = {}
    for index, event in enumerate(events):
        if types is not None and event["type"] not in types:
            errors[str(index)] = {
                "type": [
                    f"'{event['type']}' cannot be sent from a browser (orders and refunds come "
                    f"from the shop's server). Browsers send: {', '.join(types)}."
                ]
            }
            continue
        shopper = event.get("shopper")
        late = window.error(event["occurred_at"]) if window is not None else None
        try:
            version, data = event_types.validate(
                event["type"], event.get("schema_version"), event.get("data", {})
            )
        except EventInvalid as exc:
            errors[str(index)] = {"occurred_at": [late], **exc.detail} if late else exc.detail
            continue
        if late:
            errors[str(index)] = {"occurred_at": [late]}
            continue
        out.append(
            services.NewEvent(
                event_id=event["id"],
                cart=event["cart"],
                type=event["type"],
                schema_version=version,
                occurred_at=event["occurred_at"],
                data=data,
                shopper=dict(shopper) if shopper else None,
                expected_version=event.get("expected_version"),
            )
        )
    return out, errors


def _envelope_errors(
    exc: ValidationError, body: Any, window: OccurredWindow | None = None
) -> dict[str, Any]:
    errors = field_errors(exc, skip=1)  # the first part of each location is the union's tag
    by_index = errors.get("events", {})
    if "non_field_errors" in by_index:  # about the list itself: too long, empty, not a list
        return errors
    if _body_kind(body) == "batch" and isinstance(body["events"], list):
        # As for one event, a payload is checked once its envelope is valid; in a batch that
        # holds for the events without envelope errors, so report their payload errors too.
        for index, raw in enumerate(body["events"]):
            if str(index) not in by_index:
                _, more = _new_events([_EVENT_IN.validate_python(raw)], window=window)
                if more:
                    by_index[str(index)] = more["0"]
        if by_index:
            errors["events"] = dict(sorted(by_index.items(), key=lambda item: int(item[0])))
    return errors


def _key_source(request: Request) -> Source:
    """The server, named by its key's prefix (as authentication found it)."""
    return Source.server(getattr(request.user, "key_prefix", ""))


class AppendedOut(serializers.Serializer):
    id = serializers.UUIDField(source="event_id")
    cart = serializers.CharField()
    version = serializers.IntegerField()
    position = serializers.IntegerField()
    duplicate = serializers.BooleanField()


class EventsApi(APIView):
    throttle_classes = [StoreRateThrottle]
    schema = ApiSchema()

    @extend_schema(
        operation_id="events_append",
        summary="Append one event or a batch of up to 1000 (all or nothing).",
        request=EventsIn,
        parameters=[RETRY_AFTER],
        responses={
            201: inline_serializer("AppendResult", {"events": AppendedOut(many=True)}),
            200: inline_serializer("AppendDuplicates", {"events": AppendedOut(many=True)}),
            400: bad_request(
                'Invalid events: messages keyed like the body (one event: {"data": {"quantity": '
                '["..."]}}; a batch: {"events": {"3": {...}}}); occurred_at outside the window '
                'around the server\'s clock (docs/api.md, "Bounds"); or a change the cart '
                'refuses: {"code": "event_rejected", "detail", "field", "errors"}; or a body '
                'that is not JSON: {"code": "parse_error"}.'
            ),
            401: UNAUTHORIZED,
            409: error(
                '{"code": "event_id_conflict"}: an event id already used with another body; '
                '{"code": "version_conflict"}: expected_version is not the cart\'s version.'
            ),
            411: LENGTH_REQUIRED,
            413: error('{"code": "payload_too_large"}: the body is over the size limit.'),
            415: error("The body is not application/json."),
            429: THROTTLED,
        },
    )
    def post(self, request: Request) -> Response:
        _check_body_size(request)
        events = events_in(request.data, window=occurred_window(now=timezone.now()))
        results = services.events_append(
            store_id=request.auth.pk, events=events, source=_key_source(request)
        )
        code = status.HTTP_200_OK if all(r.duplicate for r in results) else status.HTTP_201_CREATED
        # Plain dicts in AppendedOut's shape: a serializer per result cost ~30 µs an event.
        body = [
            {
                "id": str(r.event_id),
                "cart": r.cart,
                "version": r.version,
                "position": r.position,
                "duplicate": r.duplicate,
            }
            for r in results
        ]
        return Response({"events": body}, status=code)


class ReasonOut(serializers.Serializer):
    specialist = serializers.CharField()
    feature = serializers.CharField()
    value = serializers.JSONField()
    log_odds = serializers.FloatField(help_text="Push on the score's log-odds (+ more at risk).")


class CartOut(serializers.ModelSerializer):
    cart = serializers.CharField(source="token")
    score = serializers.FloatField(
        allow_null=True,
        read_only=True,
        help_text="Abandonment score: probability this cart does not become an order, as of "
        "scored_at (its last activity). 0 once converted.",
    )
    reasons = ReasonOut(many=True, read_only=True, help_text="The top reasons, largest first.")

    class Meta:
        model = CartState
        fields = [
            "cart", "version", "status", "currency", "items", "value", "item_count",
            "shopper_id", "email", "phone", "consent", "timezone", "locale", "order_id",
            "order_total", "refunded", "started_at", "last_activity_at", "checkout_started_at",
            "converted_at", "score", "model_version", "reasons", "scored_at",
        ]  # fmt: skip


class CartApi(APIView):
    throttle_classes = [StoreRateThrottle]

    @extend_schema(
        operation_id="cart_get",
        parameters=[CART_PATH, RETRY_AFTER],
        responses={200: CartOut, 401: UNAUTHORIZED, 404: CART_NOT_FOUND, 429: THROTTLED},
    )
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
    source = serializers.CharField(  # type: ignore[assignment]
        help_text="Who appended it: server, browser, platform, system (unknown: before provenance "
        "was recorded)."
    )
    source_ref = serializers.CharField(
        help_text="Which one: the secret key's prefix, the browser session, the webhook delivery "
        "or the component."
    )


class _HistoryParams(serializers.Serializer):
    after = serializers.IntegerField(
        min_value=0, max_value=MAX_VERSION, default=0, help_text="Only events after this version."
    )
    limit = serializers.IntegerField(
        min_value=1, max_value=1000, default=1000, help_text="At most this many."
    )


class CartEventsApi(APIView):
    throttle_classes = [StoreRateThrottle]

    @extend_schema(
        operation_id="cart_events_list",
        parameters=[CART_PATH, _HistoryParams, RETRY_AFTER],
        responses={
            200: inline_serializer("CartEvents", {"events": EventOut(many=True)}),
            400: bad_request(),
            401: UNAUTHORIZED,
            404: CART_NOT_FOUND,
            429: THROTTLED,
        },
    )
    def get(self, request: Request, cart: str) -> Response:
        refuse_blank(request.query_params, _HistoryParams().fields)
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
        return Response({"events": EventOut(rows, many=True).data})


class BrowserGrantOut(serializers.Serializer):
    grant = serializers.CharField(
        help_text="g1.<expiry>.<hex HMAC-SHA256(webhook secret, '<store id>:<cart>:<expiry>')>: "
        "give it to the page (the snippet's data-grant) to open this cart with the publishable key."
    )
    cart = serializers.CharField()
    expires_at = serializers.DateTimeField()
    expires_in = serializers.IntegerField()


class _CartTokenIn(serializers.Serializer):
    cart = serializers.RegexField(CART_TOKEN_PATTERN)


class BrowserGrantApi(APIView):
    throttle_classes = [StoreRateThrottle]

    @extend_schema(
        operation_id="cart_browser_grant",
        summary="A short-lived grant that lets the shop's page open this cart with the "
        "publishable key (docs/snippet.md).",
        request=None,
        parameters=[CART_PATH, RETRY_AFTER],
        responses={
            200: BrowserGrantOut,
            400: bad_request('The cart token is not a valid token: {"cart": ["..."]}.'),
            401: UNAUTHORIZED,
            411: LENGTH_REQUIRED,
            429: THROTTLED,
        },
    )
    def post(self, request: Request, cart: str) -> Response:
        _CartTokenIn(data={"cart": cart}).is_valid(raise_exception=True)
        store = request.auth
        assert isinstance(store, Store)  # IsStore
        granted = grants.browser_grant_issue(store=store, cart=cart, now=timezone.now())
        body = {
            "grant": granted.grant,
            "cart": granted.cart,
            "expires_at": granted.expires_at,
            "expires_in": granted.expires_in,
        }
        return Response(BrowserGrantOut(body).data)


# Shoppers' rights (carts/privacy.py, docs/security.md "Erasure and export") -----------------------

# A shop's shopper id, as events' shopper.id takes it (ShopperIn). In a path the raw value is held
# to the schema's maxLength too, before stripping, so the schema and validation agree.
ShopperId = Annotated[str, text(128)]
_SHOPPER_ID: TypeAdapter[str] = TypeAdapter(ShopperId)
_SHOPPER_ID_RAW: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(max_length=128)])

SHOPPER_PATH = OpenApiParameter(
    "id",
    {"type": "string", "minLength": 1, "maxLength": 128, "pattern": NOT_BLANK},
    OpenApiParameter.PATH,
    description="The shop's own shopper id: the shopper.id its server sends in events, "
    "percent-encoded (slashes included). Ids 'erase' and 'export', and for DELETE ids ending in "
    "'/export', name literal paths: name those shoppers in the body of POST "
    "/api/v1/shoppers/erase or /export instead.",
)
NEITHER = "Give the shopper's email, id, or both."


@with_config({**STRICT, "json_schema_extra": {"minProperties": 1}})
class ShopperRefIn(TypedDict):
    email: NotRequired[Email]
    # A JSON string here (events also take a number): the schema says what validation takes.
    id: NotRequired[Annotated[ShopperId, Strict()]]


class ShopperBody(RootModel[ShopperRefIn]):
    """The shopper: their email address, the shop's shopper id (shopper.id in events), or both;
    an email address never goes in a URL."""


def shopper_from_path(value: str) -> Shopper:
    """The shopper named by the path's id; else a 400 ``{"id": [...]}``."""
    try:
        shopper_id = _SHOPPER_ID.validate_python(_SHOPPER_ID_RAW.validate_python(value))
    except ValidationError as exc:
        raise exceptions.ValidationError({"id": [message(e) for e in exc.errors()]}) from None
    return Shopper(shopper_id=shopper_id)


def shopper_from_body(body: Any) -> Shopper:
    """The shopper named by the body; else a 400 with field messages."""
    try:
        parsed = ShopperBody.model_validate(body).root
    except ValidationError as exc:
        raise exceptions.ValidationError(field_errors(exc)) from None
    if not parsed.get("email") and not parsed.get("id"):
        raise exceptions.ValidationError({"non_field_errors": [NEITHER]})
    return Shopper(email=parsed.get("email", ""), shopper_id=parsed.get("id", ""))


class ErasedOut(serializers.Serializer):
    erased = serializers.BooleanField(help_text="Always true: nothing of the shopper remains.")
    carts = serializers.IntegerField(
        help_text="Carts that showed a contact and were given a shopper.erased event (0 when "
        "there was nothing, or nothing left, to erase)."
    )
    keys = serializers.IntegerField(help_text="The shopper's data keys destroyed.")


_NULLABLE_STRING = {"type": "string", "nullable": True}
_EXPORT = {
    "type": "object",
    "properties": {
        "store": {"type": "integer"},
        "shopper": {
            "type": "object",
            "properties": {"email": _NULLABLE_STRING, "id": _NULLABLE_STRING},
            "required": ["email", "id"],
        },
        "generated_at": {"type": "string", "format": "date-time"},
        "carts": {
            "type": "array",
            "description": "The shopper's carts: their state's fields and their events, personal "
            "fields in clear (null where erased).",
            "items": {
                "type": "object",
                "properties": {
                    "token": {"type": "string"},
                    "events": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string", "format": "uuid"},
                                "type": {"type": "string"},
                                "version": {"type": "integer"},
                                "occurred_at": {"type": "string", "format": "date-time"},
                                "recorded_at": {"type": "string", "format": "date-time"},
                                "data": {"type": "object", "additionalProperties": True},
                                "shopper": {"type": "object", "nullable": True},
                                "source": {"type": "string"},
                            },
                            "required": ["id", "type", "version", "occurred_at", "data"],
                        },
                    },
                },
                "required": ["token", "events"],
                "additionalProperties": True,
            },
        },
    },
    "required": ["store", "shopper", "generated_at", "carts"],
    "additionalProperties": {
        "description": "A section another app adds (campaigns: enrollments, steps, coupons, "
        "suppressions)."
    },
}
EXPORTED = OpenApiResponse(
    _EXPORT,
    "Everything the store holds about the shopper, as JSON (an unknown shopper: no carts).",
)
_UNKNOWN = (
    " Idempotent: an unknown shopper, or one already erased, gets zeros. A store reaches only its "
    "own shoppers: another store's are unknown to it."
)


class ShopperEraseApi(APIView):
    throttle_classes = [StoreRateThrottle]

    @extend_schema(
        operation_id="shopper_erase",
        summary="Erase a shopper, named by the shop's shopper id (crypto-shredding).",
        description="Destroys the shopper's data keys, so their email and phone in the log no "
        "longer open, and appends shopper.erased to each of their carts (every address their "
        "carts were given)." + _UNKNOWN,
        parameters=[SHOPPER_PATH, RETRY_AFTER],
        responses={
            200: ErasedOut,
            400: bad_request('The id is blank or too long: {"id": ["..."]}.'),
            401: UNAUTHORIZED,
            429: THROTTLED,
        },
    )
    def delete(self, request: Request, id: str) -> Response:
        shopper = shopper_from_path(id)
        erasure = privacy.shopper_erase(store_id=request.auth.pk, shopper=shopper)
        return Response(ErasedOut(erasure.as_dict()).data)


class ShopperExportApi(APIView):
    throttle_classes = [StoreRateThrottle]

    @extend_schema(
        operation_id="shopper_export",
        summary="Export what the store holds about a shopper, named by the shop's shopper id.",
        parameters=[SHOPPER_PATH, RETRY_AFTER],
        responses={
            200: EXPORTED,
            400: bad_request('The id is blank or too long: {"id": ["..."]}.'),
            401: UNAUTHORIZED,
            429: THROTTLED,
        },
    )
    def get(self, request: Request, id: str) -> Response:
        shopper = shopper_from_path(id)
        return Response(privacy.shopper_export(store_id=request.auth.pk, shopper=shopper))


_BODY_400 = bad_request(
    'Invalid body: messages by field, e.g. {"email": ["Enter a valid email address."]}; neither '
    'email nor id: {"non_field_errors": ["..."]}; a body that is not JSON: {"code": '
    '"parse_error"}.'
)


# What the shopper endpoints that take a JSON body answer besides 200.
_BODY_ANSWERS = {
    400: _BODY_400,
    401: UNAUTHORIZED,
    411: LENGTH_REQUIRED,
    413: error('{"code": "payload_too_large"}: the body is over the size limit.'),
    415: error("The body is not application/json."),
    429: THROTTLED,
}


class ShopperEraseByBodyApi(APIView):
    throttle_classes = [StoreRateThrottle]
    schema = ApiSchema()

    @extend_schema(
        operation_id="shopper_erase_by_body",
        summary="Erase a shopper named by email address and/or the shop's shopper id.",
        description="For guests known only by their address (which must not go in a URL). As "
        "DELETE /api/v1/shoppers/{id}; both given, both are erased." + _UNKNOWN,
        request=ShopperBody,
        parameters=[RETRY_AFTER],
        responses={200: ErasedOut, **_BODY_ANSWERS},
    )
    def post(self, request: Request) -> Response:
        _check_body_size(request)
        shopper = shopper_from_body(request.data)
        erasure = privacy.shopper_erase(store_id=request.auth.pk, shopper=shopper)
        return Response(ErasedOut(erasure.as_dict()).data)


class ShopperExportByBodyApi(APIView):
    throttle_classes = [StoreRateThrottle]
    schema = ApiSchema()

    @extend_schema(
        operation_id="shopper_export_by_body",
        summary="Export what the store holds about a shopper named by email address and/or the "
        "shop's shopper id.",
        description="For guests known only by their address (which must not go in a URL). As GET "
        "/api/v1/shoppers/{id}/export.",
        request=ShopperBody,
        parameters=[RETRY_AFTER],
        responses={200: EXPORTED, **_BODY_ANSWERS},
    )
    def post(self, request: Request) -> Response:
        _check_body_size(request)
        shopper = shopper_from_body(request.data)
        return Response(privacy.shopper_export(store_id=request.auth.pk, shopper=shopper))
