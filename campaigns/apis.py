"""Coupon API for the store's server (secret key): validate and redeem discount codes.

Views validate, call one service, and render. Domain errors become responses in
``_error_response``: config/exceptions.py maps only the carts app's errors, and campaigns may not
import config, so the mapping for this app's errors lives with its views.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from pydantic import RootModel, ValidationError, with_config
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from typing_extensions import TypedDict

from campaigns import coupons, errors
from carts.auth import StoreRateThrottle
from carts.schema import LENGTH_REQUIRED, RETRY_AFTER, THROTTLED, UNAUTHORIZED, ApiSchema
from carts.validation import STRICT, Currency, Money, field_errors, text

Code = Annotated[str, text(64)]


@with_config(STRICT)
class ValidateIn(TypedDict):
    code: Code
    cart_value: NotRequired[Money]
    currency: NotRequired[Currency]


@with_config(STRICT)
class RedeemIn(TypedDict):
    code: Code
    order_id: Annotated[str, text(128)]
    cart_value: NotRequired[Money]
    currency: NotRequired[Currency]


class ValidateBody(RootModel[ValidateIn]):
    """A code and, optionally, the cart it is for."""


class RedeemBody(RootModel[RedeemIn]):
    """A code, the order it is redeemed for and, optionally, the cart value and currency."""


def _parse(model: type[RootModel[Any]], body: Any) -> dict[str, Any]:
    try:
        return dict(model.model_validate(body).root)
    except ValidationError as exc:
        raise exceptions.ValidationError(field_errors(exc)) from None


class _CouponOut(serializers.Serializer):
    code = serializers.CharField()
    kind = serializers.ChoiceField(choices=["percent", "fixed", "free_shipping"])
    amount = serializers.IntegerField(
        help_text="Percentage points (percent), minor units (fixed), 0 (free_shipping)."
    )
    currency = serializers.CharField(help_text="ISO 4217; the cart's when the code was issued.")
    discount_applied = serializers.IntegerField(
        allow_null=True,
        help_text="Minor units the code takes off cart_value; null when cart_value was not sent.",
    )
    cart = serializers.CharField(help_text="The cart the code was issued to.")


class RedeemedOut(_CouponOut):
    redeemed_at = serializers.DateTimeField()


class ValidatedOut(_CouponOut):
    expires_at = serializers.DateTimeField()
    min_cart_value = serializers.IntegerField()


_STATUS = {
    errors.CouponNotFound: status.HTTP_404_NOT_FOUND,
    errors.CouponAlreadyRedeemed: status.HTTP_409_CONFLICT,
    errors.CouponExpired: status.HTTP_410_GONE,
    errors.CouponNotApplicable: status.HTTP_422_UNPROCESSABLE_ENTITY,
}


def _error_response(exc: errors.CampaignsError) -> Response:
    body: dict[str, Any] = {"code": exc.code, "detail": exc.message, **exc.detail}
    if isinstance(exc, errors.CouponNotApplicable):
        body["errors"] = {exc.field: [exc.message]}
    return Response(body, status=_STATUS.get(type(exc), status.HTTP_400_BAD_REQUEST))


_ERROR = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "detail": {"type": "string"}},
    "required": ["code", "detail"],
}
_ERRORS = {
    400: OpenApiResponse(
        {"type": "object", "additionalProperties": True},
        description='Malformed body: field errors, e.g. {"code": ["..."]}.',
    ),
    401: UNAUTHORIZED,
    404: OpenApiResponse(_ERROR, description="coupon_not_found: no such code in this store."),
    409: OpenApiResponse(
        _ERROR, description="coupon_already_redeemed (redeem: for another order)."
    ),
    410: OpenApiResponse(_ERROR, description="coupon_expired, with expires_at."),
    422: OpenApiResponse(
        _ERROR,
        description="coupon_not_applicable: cart_value below the code's minimum, or another "
        'currency; with field and errors, e.g. {"cart_value": ["..."]}.',
    ),
    411: LENGTH_REQUIRED,
    429: THROTTLED,
}


class _CouponApi(APIView):
    throttle_classes = [StoreRateThrottle]
    schema = ApiSchema()

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, errors.CampaignsError):
            return _error_response(exc)
        return super().handle_exception(exc)


class CouponRedeemApi(_CouponApi):
    @extend_schema(
        operation_id="coupon_redeem",
        summary="Redeem a discount code for an order, at most once.",
        description="Atomic: of concurrent requests for one code exactly one wins. The same "
        "order_id again returns the original redemption (200, nothing changes).",
        request=RedeemBody,
        parameters=[RETRY_AFTER],
        responses={200: RedeemedOut, **_ERRORS},
        examples=[
            OpenApiExample(
                "redeem",
                value={
                    "code": "SAVE-7KQ2-MX9D-H4TP",
                    "order_id": "1001",
                    "cart_value": 12000,
                    "currency": "EUR",
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        body = _parse(RedeemBody, request.data)
        redeemed = coupons.coupon_redeem(
            store_id=request.auth.pk,
            code=body["code"],
            order_id=body["order_id"],
            cart_value=body.get("cart_value"),
            currency=body.get("currency"),
            now=timezone.now(),
        )
        return Response(RedeemedOut(redeemed.coupon).data)


class CouponValidateApi(_CouponApi):
    @extend_schema(
        operation_id="coupon_validate",
        summary="Check a discount code without redeeming it.",
        request=ValidateBody,
        parameters=[RETRY_AFTER],
        responses={200: ValidatedOut, **_ERRORS},
    )
    def post(self, request: Request) -> Response:
        body = _parse(ValidateBody, request.data)
        validated = coupons.coupon_validate(
            store_id=request.auth.pk,
            code=body["code"],
            cart_value=body.get("cart_value"),
            currency=body.get("currency"),
            now=timezone.now(),
        )
        out = {
            **ValidatedOut(validated.coupon).data,
            "discount_applied": validated.discount_applied,
        }
        return Response(out)
