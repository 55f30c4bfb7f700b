"""The store's outbound webhook endpoints (secret key): list, create, read, change, delete, and
one endpoint's deliveries with their attempts. A store sees only its own endpoints: another
store's id answers 404.

Views validate, call one service (integrations/outbound.py), and render. The secret is shown
when an endpoint is made and when it is rotated (``rotate_secret``), never stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StringConstraints,
    with_config,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from typing_extensions import TypedDict

from carts.apis import refuse_blank
from carts.auth import StoreRateThrottle
from carts.schema import (
    LENGTH_REQUIRED,
    RETRY_AFTER,
    THROTTLED,
    UNAUTHORIZED,
    ApiSchema,
    bad_request,
    error,
)
from carts.validation import STRICT, field_errors, text
from integrations import outbound
from integrations.models import Endpoint, OutboundDelivery

MAX_ID = 2**31 - 1
EventType = Literal[
    "cart.abandoned", "cart.recovered", "campaign.step_sent", "offer.accepted", "coupon.redeemed"
]
assert set(EventType.__args__) == set(Endpoint.EVENT_TYPES)  # type: ignore[attr-defined]


def _url(value: str) -> str:
    problem = outbound.url_problem(value)
    if problem is not None:
        raise PydanticCustomError("url", problem)
    return value


Url = Annotated[
    str,
    StringConstraints(max_length=outbound.URL_MAX),
    AfterValidator(_url),
    # The pattern _url checks (stated here, checked there for a message that says what it wants).
    Field(json_schema_extra={"pattern": outbound.URL_PATTERN}),
]
Description = Annotated[str, text(200, blank=True)]


# The house STRICT, without turning numbers into text (a number is not a description).
_CONFIG = ConfigDict(**{**STRICT, "coerce_numbers_to_str": False})


@with_config(_CONFIG)
class EndpointIn(TypedDict):
    url: Url
    event_types: NotRequired[list[EventType]]
    description: NotRequired[Description]


@with_config(_CONFIG)
class EndpointPatchIn(TypedDict):
    url: NotRequired[Url]
    event_types: NotRequired[list[EventType]]
    description: NotRequired[Description]
    active: NotRequired[StrictBool]
    rotate_secret: NotRequired[StrictBool]


class EndpointBody(RootModel[EndpointIn]):
    """Where to send (http or https; link-local and cloud metadata hosts are refused), which
    event types (empty or left out: every type), and a note for the merchant."""


class EndpointPatchBody(RootModel[EndpointPatchIn]):
    """The fields to change; ``rotate_secret: true`` draws a new secret (in the answer)."""


def _parse(model: type[RootModel[Any]], request: Request) -> dict[str, Any]:
    if request.META.get("CONTENT_LENGTH") in (None, "", "0"):
        raise exceptions.ValidationError({"non_field_errors": ["Expected a JSON object."]})
    body = request.data
    try:
        return dict(model.model_validate(body).root)
    except PydanticValidationError as exc:
        raise exceptions.ValidationError(field_errors(exc)) from None


class EndpointOut(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=list(Endpoint.EVENT_TYPES)),
        help_text="Empty: every event type.",
    )
    description = serializers.CharField()
    active = serializers.BooleanField(
        help_text="false: nothing is made or sent for it (an endpoint that answered 410 Gone is "
        "set inactive)."
    )
    created_at = serializers.DateTimeField()


class EndpointSecretOut(EndpointOut):
    secret = serializers.CharField(
        help_text="whsec_<base64 key>: verify webhook-signature with it (Standard Webhooks). "
        "Shown on creation and rotation only."
    )


class AttemptOut(serializers.Serializer):
    at = serializers.DateTimeField()
    status_code = serializers.IntegerField(allow_null=True, help_text="null: no answer.")
    error = serializers.CharField(help_text="Empty for a 2xx; else why it failed.")
    duration_ms = serializers.IntegerField()


class DeliveryOut(serializers.Serializer):
    id = serializers.IntegerField()
    webhook_id = serializers.CharField(help_text="The webhook-id header: the same on retries.")
    event_type = serializers.CharField()
    status = serializers.ChoiceField(choices=OutboundDelivery.Status.values)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    payload = serializers.JSONField(help_text="The body sent: {type, timestamp, data}.")
    tries = AttemptOut(many=True, help_text="Every attempt, oldest first.")


class _DeliveryParams(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=100, default=50, help_text="At most this many, newest first."
    )


ENDPOINT_PATH = OpenApiParameter(
    "endpoint_id",
    {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    OpenApiParameter.PATH,
    description="The endpoint's id.",
)
NOT_FOUND = error("This store has no such endpoint.")
_COMMON = {401: UNAUTHORIZED, 429: THROTTLED}


def _endpoint(request: Request, endpoint_id: int | str) -> Endpoint:
    """The store's endpoint by the path's id (any text: not a known id is 404, in JSON)."""
    raw = str(endpoint_id)
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
        raise exceptions.NotFound("This store has no such endpoint.")
    found = Endpoint.objects.filter(pk=int(raw), store_id=request.auth.pk).first()
    if found is None:
        raise exceptions.NotFound("This store has no such endpoint.")
    return found


def _with_secret(endpoint: Endpoint) -> dict[str, Any]:
    return {**EndpointOut(endpoint).data, "secret": outbound.endpoint_secret(endpoint)}


class _Api(APIView):
    throttle_classes = [StoreRateThrottle]
    schema = ApiSchema()


class EndpointListApi(_Api):
    @extend_schema(
        operation_id="webhook_endpoints_list",
        summary="The store's outbound webhook endpoints.",
        parameters=[RETRY_AFTER],
        responses={200: EndpointOut(many=True), **_COMMON},
    )
    def get(self, request: Request) -> Response:
        rows = Endpoint.objects.filter(store_id=request.auth.pk).order_by("pk")
        return Response(EndpointOut(rows, many=True).data)

    @extend_schema(
        operation_id="webhook_endpoint_create",
        summary="Register an endpoint; the answer holds its signing secret (shown once).",
        request=EndpointBody,
        parameters=[RETRY_AFTER],
        responses={201: EndpointSecretOut, 400: bad_request(), 411: LENGTH_REQUIRED, **_COMMON},
        examples=[
            OpenApiExample(
                "create",
                value={
                    "url": "https://hooks.example.com/cart-recovery",
                    "event_types": ["cart.abandoned", "cart.recovered"],
                    "description": "CRM",
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        body = _parse(EndpointBody, request)
        endpoint = outbound.endpoint_create(
            store_id=request.auth.pk,
            url=body["url"],
            event_types=body.get("event_types", []),
            description=body.get("description", ""),
        )
        endpoint.refresh_from_db()
        return Response(_with_secret(endpoint), status=status.HTTP_201_CREATED)


class EndpointDetailApi(_Api):
    @extend_schema(
        operation_id="webhook_endpoint_get",
        parameters=[ENDPOINT_PATH, RETRY_AFTER],
        responses={200: EndpointOut, 404: NOT_FOUND, **_COMMON},
    )
    def get(self, request: Request, endpoint_id: int | str) -> Response:
        return Response(EndpointOut(_endpoint(request, endpoint_id)).data)

    @extend_schema(
        operation_id="webhook_endpoint_update",
        summary="Change an endpoint; rotate_secret: true answers with its new secret.",
        request=EndpointPatchBody,
        parameters=[ENDPOINT_PATH, RETRY_AFTER],
        responses={
            200: EndpointSecretOut,
            400: bad_request(),
            404: NOT_FOUND,
            411: LENGTH_REQUIRED,
            **_COMMON,
        },
    )
    def patch(self, request: Request, endpoint_id: int | str) -> Response:
        endpoint = _endpoint(request, endpoint_id)
        body = _parse(EndpointPatchBody, request)
        rotate = bool(body.pop("rotate_secret", False))
        endpoint = outbound.endpoint_update(endpoint=endpoint, rotate_secret=rotate, **body)
        out = _with_secret(endpoint) if rotate else {**EndpointOut(endpoint).data, "secret": ""}
        return Response(out)

    @extend_schema(
        operation_id="webhook_endpoint_delete",
        summary="Delete an endpoint and its deliveries.",
        parameters=[ENDPOINT_PATH, RETRY_AFTER],
        responses={204: None, 404: NOT_FOUND, **_COMMON},
    )
    def delete(self, request: Request, endpoint_id: int | str) -> Response:
        _endpoint(request, endpoint_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointDeliveriesApi(_Api):
    @extend_schema(
        operation_id="webhook_endpoint_deliveries",
        summary="An endpoint's deliveries, newest first, each with its attempts.",
        parameters=[ENDPOINT_PATH, _DeliveryParams, RETRY_AFTER],
        responses={
            200: DeliveryOut(many=True),
            400: bad_request(),
            404: NOT_FOUND,
            **_COMMON,
        },
    )
    def get(self, request: Request, endpoint_id: int | str) -> Response:
        refuse_blank(request.query_params, _DeliveryParams().fields)
        params = _DeliveryParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        endpoint = _endpoint(request, endpoint_id)
        rows = (
            OutboundDelivery.objects.filter(endpoint=endpoint)
            .order_by("-created_at", "-pk")
            .prefetch_related("tries")[: params.validated_data["limit"]]
        )
        out = []
        for row in rows:
            data = DeliveryOut(row).data
            data["tries"] = AttemptOut(sorted(row.tries.all(), key=lambda t: t.at), many=True).data
            out.append(data)
        return Response(out)
