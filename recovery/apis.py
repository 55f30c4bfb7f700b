"""HTTP API of the recovery app: why a cart has its score."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from carts import projections
from carts.apis import CartNotFound, ReasonOut
from carts.auth import StoreRateThrottle
from carts.selectors import cart_state_get
from carts.services import cart_from_row
from recovery import serving


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
            OpenApiParameter(
                "at",
                str,
                enum=["last", "now"],
                description="Explain the score as of the cart's last activity (the stored score, "
                "default) or as of now (time since last activity included).",
            )
        ],
        responses=ScoreOut,
    )
    def get(self, request: Request, cart: str) -> Response:
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
