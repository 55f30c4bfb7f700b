"""Inbound platform webhooks: POST /api/v1/webhooks/{shopify, woocommerce/<store>, saleor/<store>}.

The signature is the authentication (no API key, no CSRF). The raw body is read as sent (the
signature covers its bytes), never parsed by DRF. Every refusal is a 4xx the platform's retry logic
understands, logged without the body.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations import inbound, selectors
from integrations.facts import Adapter, BadDelivery
from integrations.models import Connection, Platform

logger = logging.getLogger("integrations.inbound")


class _RawParser(BaseParser):
    """Accepts any media type and parses nothing: the view reads the raw bytes."""

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return None


_RECEIPT = {
    "type": "object",
    "properties": {
        "outcome": {
            "type": "string",
            "enum": ["recorded", "stale", "ignored", "rejected", "duplicate"],
            "description": "recorded: its events are in the log; stale: older than what was "
            "recorded (kept, the cart not moved back); ignored: a topic or state we do not map; "
            "rejected: a valid delivery the cart cannot take (e.g. a second order for one cart); "
            "duplicate: this delivery id was received before (nothing new stored).",
        },
        "events": {"type": "integer", "description": "Events appended to the log."},
    },
    "required": ["outcome", "events"],
}
_ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
    "required": ["detail"],
    "additionalProperties": True,
}
_RESPONSES = {
    200: OpenApiResponse(_RECEIPT, "Received (whatever became of it: see outcome)."),
    400: OpenApiResponse(
        _ERROR, "A body or headers we cannot read, or beyond carts' bounds: messages by field."
    ),
    401: OpenApiResponse(_ERROR, "Missing or wrong signature."),
    404: OpenApiResponse(_ERROR, "No active connection for this shop or store."),
    411: OpenApiResponse(_ERROR, "A body sent chunked, without Content-Length."),
    413: OpenApiResponse(_ERROR, "The body is over the size limit."),
}
# OpenAPI's "no authentication" (security: [{}]): the signature authenticates. drf-spectacular
# takes the requirement objects as given (its stubs say scheme names).
_ANONYMOUS: Any = [{}]
_REQUEST = {"application/json": {"type": "object", "additionalProperties": True}}


_CODES = {401: "bad_signature", 404: "unknown_shop", 503: "platform_unreachable"}


def _refusal(status: int, detail: str, code: str, **fields: Any) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code, **fields}, status=status)


def receive(
    request: HttpRequest, *, platform: str, connection: Connection | None, adapter: Adapter
) -> JsonResponse:
    """The views' one path: the raw body through integrations.inbound.delivery_receive."""
    where = f"{platform} webhook from {request.META.get('REMOTE_ADDR', '?')}"
    if connection is None:
        logger.warning("%s refused (404): no active connection", where)
        return _refusal(404, "No active connection for this shop or store.", "unknown_shop")
    try:
        body = request.body
    except RequestDataTooBig:
        logger.warning("%s for store %s refused (413): body too large", where, connection.store_id)
        return _refusal(413, "Request body too large.", "payload_too_large")
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        receipt = inbound.delivery_receive(
            adapter=adapter, connection=connection, headers=headers, body=body, now=timezone.now()
        )
    except BadDelivery as exc:
        code = _CODES.get(exc.status, "bad_delivery")
        logger.warning(
            "%s for store %s refused (%s): %s", where, connection.store_id, exc.status, exc.message
        )
        return _refusal(exc.status, exc.message, code, **exc.fields)
    return JsonResponse({"outcome": receipt.outcome, "events": receipt.events})


class _WebhookApi(APIView):
    """No API key (the signature authenticates; APIView is CSRF-exempt and no session is read), no
    throttle, no parsing: the raw body."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes: list = []
    parser_classes = [_RawParser]


def _store_connection(platform: str, store_id: int | str) -> Connection | None:
    """The store's active connection to ``platform``; None for an id that is not one (the path
    may take any text, so that a bad id is a JSON 404 like an unknown one)."""
    text = str(store_id)
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not 0 < int(text) < 2**63:
        return None
    return selectors.connection_for_store(platform=platform, store_id=int(text))


_SHOP_DOMAIN = OpenApiParameter(
    "X-Shopify-Shop-Domain",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="The shop's myshopify.com domain: which connection the delivery is for.",
)
_STORE = OpenApiParameter(
    "store_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="Our store's id."
)


class ShopifyWebhookApi(_WebhookApi):
    @extend_schema(
        operation_id="webhook_shopify",
        summary="A Shopify webhook delivery (signed with X-Shopify-Hmac-Sha256).",
        description="Register this URL for the topics checkouts/create, checkouts/update, "
        "checkouts/delete, carts/create, carts/update, orders/create, orders/paid and "
        "refunds/create (docs/integrations.md). Deduplicated on X-Shopify-Webhook-Id.",
        request=_REQUEST,
        parameters=[_SHOP_DOMAIN],
        responses=_RESPONSES,
        auth=_ANONYMOUS,
    )
    def post(self, request: Request) -> Response | JsonResponse:
        from integrations.platforms import shopify

        domain = request.headers.get("X-Shopify-Shop-Domain", "")
        connection = (
            selectors.connection_for_shop(platform=Platform.SHOPIFY, shop_domain=domain)
            if domain and len(domain) <= 253
            else None
        )
        return receive(
            request._request, platform="shopify", connection=connection, adapter=shopify.ADAPTER
        )


class WooCommerceWebhookApi(_WebhookApi):
    @extend_schema(
        operation_id="webhook_woocommerce",
        summary="A WooCommerce webhook delivery (signed with X-WC-Webhook-Signature).",
        request=_REQUEST,
        parameters=[_STORE],
        responses=_RESPONSES,
        auth=_ANONYMOUS,
    )
    def post(self, request: Request, store_id: int | str) -> Response | JsonResponse:
        from integrations.platforms import woocommerce

        connection = _store_connection(Platform.WOOCOMMERCE, store_id)
        return receive(
            request._request,
            platform="woocommerce",
            connection=connection,
            adapter=woocommerce.ADAPTER,
        )


class SaleorWebhookApi(_WebhookApi):
    @extend_schema(
        operation_id="webhook_saleor",
        summary="A Saleor webhook delivery (signed with Saleor-Signature, a JWS).",
        request=_REQUEST,
        parameters=[_STORE],
        responses={
            **_RESPONSES,
            503: OpenApiResponse(
                _ERROR, "Saleor's signing keys (JWKS) cannot be fetched now: retried by Saleor."
            ),
        },
        auth=_ANONYMOUS,
    )
    def post(self, request: Request, store_id: int | str) -> Response | JsonResponse:
        from integrations.platforms import saleor  # type: ignore[attr-defined,unused-ignore]

        connection = _store_connection(Platform.SALEOR, store_id)
        return receive(
            request._request, platform="saleor", connection=connection, adapter=saleor.ADAPTER
        )
