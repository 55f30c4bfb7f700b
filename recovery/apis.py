"""HTTP API of the recovery app: why a cart has its score."""

from __future__ import annotations

from typing import Any, TypeVar

from django.http import HttpResponseBase
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    inline_serializer,
)
from rest_framework import exceptions, permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from carts import projections, ratelimits
from carts.apis import CART_PATH, CartNotFound, ReasonOut, refuse_blank
from carts.auth import StoreRateThrottle
from carts.schema import (
    CART_NOT_FOUND,
    LENGTH_REQUIRED,
    RETRY_AFTER,
    THROTTLED,
    UNAUTHORIZED,
    bad_request,
    error,
)
from carts.selectors import cart_state_get
from carts.services import cart_from_row
from carts.validation import CART_TOKEN_PATTERN, NO_NUL
from recovery import live, serving, tickets


class _FeatureOut(serializers.Serializer):
    feature = serializers.CharField()
    value = serializers.JSONField()
    log_odds = serializers.FloatField()


class _SpecialistOut(serializers.Serializer):
    name = serializers.CharField()
    log_odds = serializers.FloatField(help_text="Sum of its features' log_odds.")
    features = _FeatureOut(many=True)


class ScoreOut(serializers.Serializer):
    cart = serializers.CharField()
    as_of = serializers.DateTimeField(allow_null=True)
    score = serializers.FloatField(allow_null=True)
    model_version = serializers.CharField()
    log_odds = serializers.FloatField(allow_null=True)
    base_log_odds = serializers.FloatField(
        allow_null=True, help_text="log_odds = base_log_odds + the specialists' log_odds."
    )
    specialists = _SpecialistOut(many=True)
    reasons = ReasonOut(many=True)
    converted = serializers.BooleanField()


class _ScoreParams(serializers.Serializer):
    at = serializers.ChoiceField(choices=["last", "now"], default="last")


class CartScoreApi(APIView):
    throttle_classes = [StoreRateThrottle]

    @extend_schema(
        operation_id="cart_score_explain",
        parameters=[
            CART_PATH,
            OpenApiParameter(
                "at",
                str,
                enum=["last", "now"],
                description="Explain the score as of the cart's last activity (the stored score, "
                "default) or as of now (time since last activity included).",
            ),
            RETRY_AFTER,
        ],
        responses={
            200: ScoreOut,
            400: bad_request(),
            401: UNAUTHORIZED,
            404: CART_NOT_FOUND,
            429: THROTTLED,
        },
    )
    def get(self, request: Request, cart: str) -> Response:
        refuse_blank(request.query_params, ["at"])
        params = _ScoreParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        state = cart_state_get(store_id=request.auth.pk, token=cart)
        if state is None:
            raise CartNotFound()
        folded = cart_from_row(state)
        at = timezone.now() if params.validated_data["at"] == "now" else state.last_activity_at
        body: dict[str, Any] = {
            "cart": state.token,
            "as_of": at,
            "converted": folded.status == projections.CONVERTED,
        }
        model = serving.MODELS.for_store(request.auth.pk)
        if body["converted"] or at is None:
            body.update(
                score=0.0 if body["converted"] else None,
                model_version=model.version,
                log_odds=None,
                base_log_odds=None,
                specialists=[],
                reasons=[],
            )
            return Response(ScoreOut(body).data)
        model, _, why = serving.explain(
            store_id=request.auth.pk, cart=folded, wrapper=state.features or {}, at=at
        )
        body.update(
            score=why.probability,
            model_version=model.version,
            log_odds=why.log_odds,
            base_log_odds=why.base_log_odds,
            specialists=[
                {
                    "name": s.name,
                    "log_odds": s.log_odds,
                    "features": [
                        {"feature": c.feature, "value": c.value, "log_odds": c.log_odds}
                        for c in s.features
                    ],
                }
                for s in why.specialists
            ],
            reasons=[r.as_dict() for r in why.top_reasons(3)],
        )
        return Response(ScoreOut(body).data)


# Shopper sessions: the browser snippet's HTTP API (docs/websocket.md) ---------------------------


_R = TypeVar("_R", bound=HttpResponseBase)


def _cors(response: _R, origin: str | None) -> _R:
    if origin:
        response["Access-Control-Allow-Origin"] = origin
    response["Vary"] = "Origin"
    return response


def _preflight(request: Request) -> Response:
    """Preflights are answered for any origin: the real request's origin is checked against the
    store's list, and only an allowed one gets Access-Control-Allow-Origin."""
    response = Response(status=204)
    response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response["Access-Control-Allow-Headers"] = "Content-Type"
    response["Access-Control-Max-Age"] = "600"
    return _cors(response, request.headers.get("Origin"))


_GRANT_HELP = (
    "For a cart the shop's server made: its browser grant (POST /api/v1/carts/{cart}/"
    "browser-grant, or computed with the webhook secret; docs/snippet.md)."
)


class _SessionIn(serializers.Serializer):
    publishable_key = serializers.CharField(min_length=1, max_length=128)
    cart = serializers.RegexField(
        CART_TOKEN_PATTERN,
        required=False,
        help_text="Omit for a new cart token. Otherwise a token minted by an earlier session of "
        "this store, or a cart granted with `grant`.",
    )
    grant = serializers.CharField(
        min_length=1, max_length=128, required=False, help_text=_GRANT_HELP
    )
    # Any text within the bound: one that is not this store's genuine token is ignored (a new
    # one is issued), so a stale or tampered token never stops the snippet.
    device = serializers.RegexField(
        NO_NUL,
        min_length=1,
        max_length=tickets.DEVICE_TOKEN_MAX_LENGTH,
        required=False,
        trim_whitespace=False,
        help_text="The device token an earlier session of this store returned (`device`). "
        "Omitted, or not a genuine token of this store, a new one is issued.",
    )


class SessionOut(serializers.Serializer):
    ticket = serializers.CharField(help_text="Single-use; valid for expires_in seconds.")
    cart = serializers.CharField()
    expires_at = serializers.DateTimeField()
    expires_in = serializers.IntegerField()
    ws_path = serializers.CharField()
    device = serializers.CharField(
        max_length=tickets.DEVICE_TOKEN_MAX_LENGTH,
        help_text="This browser's device token: keep it (the snippet stores it in localStorage) "
        "and send it with later sessions. It is one of the keys of the cooldown of offers with a "
        "discount code (docs/websocket.md).",
    )


class _BadKey(exceptions.APIException):
    # A 401 even without an authentication scheme (DRF would turn AuthenticationFailed into 403).
    status_code = 401
    default_code = "invalid_key"
    default_detail = "Unknown or revoked publishable key."


def _request_origin(request: Request) -> str | None:
    """The page's origin. Browsers leave ``Origin`` out of same-origin GETs; then
    ``Sec-Fetch-Site: same-origin`` says the page is on this very host."""
    origin = request.headers.get("Origin")
    if origin:
        return origin
    if request.headers.get("Sec-Fetch-Site") == "same-origin":
        return f"{request.scheme}://{request.get_host()}"
    return None


def _rate_limited(request: Request, name: str, key: str) -> HttpResponseBase | None:
    """Count one request against limit ``name`` for ``key``; the documented 429 (Retry-After,
    readable cross-origin like the other refusals) when it is over."""
    verdict = ratelimits.hit(name, key)
    if verdict.allowed:
        return None
    return _cors(ratelimits.too_many(verdict), request.headers.get("Origin"))


def _store_and_origin(request: Request, key: Any) -> tuple[Any, str | None]:
    store = live.store_for_publishable_key(key)
    if store is None:
        raise _BadKey()
    return store, _request_origin(request)


class _BrowserApi(APIView):
    """The snippet's endpoints: no secret-key auth; errors readable cross-origin too (they hold
    nothing secret), so the snippet can tell a refused key or origin from a network failure."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]

    def options(self, request: Request, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        return _preflight(request)

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        return _cors(response, self.request.headers.get("Origin"))


def _cart_not_allowed() -> exceptions.PermissionDenied:
    return exceptions.PermissionDenied(
        {
            "code": "cart_not_allowed",
            "detail": "The publishable key opens only carts its sessions made (c_ tokens) or "
            "carts the shop's server granted: send the cart's grant, or start a new cart.",
        }
    )


_REFUSALS = {
    401: error("Unknown or revoked publishable key."),
    403: error(
        '{"code": "origin_not_allowed"}: the Origin is not in the store\'s list; '
        '{"code": "cart_not_allowed"}: the cart was not made by this store\'s browser sessions '
        "and no valid grant for it was given."
    ),
}
_TOO_MANY = error(
    '{"code": "rate_limited", "detail": "…", "limit": "…"}: over a rate limit '
    "(docs/security.md); the Retry-After header says in how many seconds to try again."
)


def _origin_not_allowed() -> exceptions.PermissionDenied:
    return exceptions.PermissionDenied(
        {
            "code": "origin_not_allowed",
            "detail": "This origin (the request's Origin header) is not in the store's "
            "allowed origins.",
        }
    )


class ShopperSessionsApi(_BrowserApi):
    @extend_schema(
        operation_id="shopper_session_open",
        summary="A single-use websocket ticket for a cart (publishable key, allowed Origin).",
        request=_SessionIn,
        parameters=[RETRY_AFTER],
        responses={
            201: SessionOut,
            400: bad_request('Field errors, e.g. {"cart": ["..."]}.'),
            **_REFUSALS,
            411: LENGTH_REQUIRED,
            429: _TOO_MANY,
        },
        auth=[],
    )
    def post(self, request: Request) -> HttpResponseBase:
        # Counted before any work: per client IP, then (once the key names one) per store.
        limited = _rate_limited(request, "shopper_session_ip", ratelimits.client_ip(request))
        if limited is not None:
            return limited
        params = _SessionIn(data=request.data)
        params.is_valid(raise_exception=True)
        store, origin = _store_and_origin(request, params.validated_data["publishable_key"])
        limited = _rate_limited(request, "shopper_session_store", str(store.pk))
        if limited is not None:
            return limited
        try:
            opened = live.shopper_session_open(
                store=store,
                cart=params.validated_data.get("cart"),
                grant=params.validated_data.get("grant"),
                origin=origin,
                now=timezone.now(),
                device=params.validated_data.get("device"),
            )
        except live.OriginNotAllowed:
            raise _origin_not_allowed() from None
        except live.CartNotAllowed:
            raise _cart_not_allowed() from None
        body = {
            "ticket": opened.ticket,
            "cart": opened.cart,
            "expires_at": opened.expires_at,
            "expires_in": opened.expires_in,
            "ws_path": "/ws/v1/shopper/",
            "device": opened.device,
        }
        return _cors(Response(SessionOut(body).data, status=201), origin)


class _OffersParams(serializers.Serializer):
    publishable_key = serializers.CharField(min_length=1, max_length=128)
    cart = serializers.RegexField(
        CART_TOKEN_PATTERN,
        help_text="A token minted by this store's sessions, or a cart granted with `grant`.",
    )
    grant = serializers.CharField(
        min_length=1, max_length=128, required=False, help_text=_GRANT_HELP
    )


class ShopperOffersApi(_BrowserApi):
    @extend_schema(
        operation_id="shopper_offers_pending",
        summary="The cart's pending (unacknowledged, unexpired) offers.",
        parameters=[_OffersParams, RETRY_AFTER],
        responses={
            200: inline_serializer("PendingOffers", {"offers": serializers.ListField()}),
            400: bad_request(),
            **_REFUSALS,
            429: _TOO_MANY,
        },
        auth=[],
    )
    def get(self, request: Request) -> HttpResponseBase:
        limited = _rate_limited(request, "offers_ip", ratelimits.client_ip(request))
        if limited is not None:
            return limited
        refuse_blank(request.query_params, _OffersParams().fields)
        params = _OffersParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        store, origin = _store_and_origin(request, params.validated_data["publishable_key"])
        try:
            offers = live.shopper_offers_pending(
                store=store,
                cart=params.validated_data["cart"],
                grant=params.validated_data.get("grant"),
                origin=origin,
                now=timezone.now(),
            )
        except live.OriginNotAllowed:
            raise _origin_not_allowed() from None
        except live.CartNotAllowed:
            raise _cart_not_allowed() from None
        return _cors(Response({"offers": offers}), origin)
