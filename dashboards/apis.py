"""The metrics API under /api/v1/metrics/: the dashboards' figures as JSON (docs/dashboards.md).

Authenticated by the store's secret key (the key's store) or by a marketer's session (the store in
``?store=``, or the user's only store). The filters are the pages' (``FiltersIn``, shared with
dashboards/views.py): local days of the store from ``start`` to ``end``, both included. Each
response repeats them under ``filters``, with the store's zone.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, permissions, serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.models import Campaign, Tier
from carts.apis import refuse_blank
from carts.auth import StoreRateThrottle, StoreSecretKeyAuthentication
from carts.models import Store
from carts.schema import RETRY_AFTER, THROTTLED, bad_request, error
from dashboards import access, selectors

DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_LIMIT = 100
# Dates a filter may name (docs/api.md, "Bounds"): room for a previous period and a local day's
# end, with datetimes that stop at year 9999.
FIRST_YEAR, LAST_YEAR = 2000, 9998
ONE_DAY = timedelta(days=1)


class StoreNotFound(exceptions.NotFound):
    default_detail = "No such store."


class CampaignNotFound(exceptions.NotFound):
    default_detail = "This store has no such campaign."


# -- filters ----------------------------------------------------------------------------------


def _bounded_day(value: date) -> None:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise serializers.ValidationError(f"Enter a date in the years {FIRST_YEAR} to {LAST_YEAR}.")


# The years FIRST_YEAR..LAST_YEAR (2000..9998) in the schema, where a date's format cannot bound
# them: a pattern, with valid months and days.
DAY_PATTERN = (
    r"^(?:[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])$"
)


@extend_schema_field({"type": "string", "format": "date", "pattern": DAY_PATTERN})
class _DayField(serializers.DateField):
    """A local day of the filters, in the years FIRST_YEAR to LAST_YEAR."""


class FiltersIn(serializers.Serializer):
    """The filters of every page, export and metrics endpoint. Context: ``today`` (the store's
    local date) and ``campaign_ids`` (the store's campaigns)."""

    start = _DayField(
        required=False,
        validators=[_bounded_day],
        help_text="First local day (the store's zone), included. Default: 29 days before end. "
        f"Years {FIRST_YEAR} to {LAST_YEAR}.",
    )
    end = _DayField(
        required=False,
        validators=[_bounded_day],
        help_text="Last local day, included (at most 366 days in all). Default: today. "
        f"Years {FIRST_YEAR} to {LAST_YEAR}.",
    )
    campaign = serializers.IntegerField(
        required=False, min_value=1, help_text="Only this campaign's carts and messages."
    )
    channel = serializers.ChoiceField(
        choices=Tier.Channel.choices,
        required=False,
        help_text="Only touches, sends and offers on this channel.",
    )

    def validate_campaign(self, value: int) -> int:
        if value not in self.context["campaign_ids"]:
            raise serializers.ValidationError(f"This store has no campaign {value}.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        today: date = self.context["today"]
        end = attrs.get("end") or today
        start = attrs.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
        if end < start:
            field = "end" if "end" in attrs else "start"
            raise serializers.ValidationError({field: ["The end must not be before the start."]})
        days = (end - start).days + 1
        if days > MAX_DAYS:
            field = "start" if "start" in attrs else "end"
            raise serializers.ValidationError(
                {field: [f"The range is {days} days; at most {MAX_DAYS}."]}
            )
        return {**attrs, "start": start, "end": end}


def store_campaigns(store_id: int) -> list[tuple[int, str]]:
    """(id, name) of the store's campaigns, for the filter's choices and its validation."""
    return list(
        Campaign.objects.filter(store_id=store_id).order_by("name", "pk").values_list("pk", "name")
    )


def filters_parse(
    params: Any,
    *,
    store_id: int,
    now: datetime,
    zone: ZoneInfo,
    campaigns: list[tuple[int, str]],
) -> selectors.Filters:
    """The selectors' filters from query parameters (defaults from today in the store's ``zone``);
    a ValidationError with field errors else."""
    checked = FiltersIn(
        data=params,
        context={
            "today": now.astimezone(zone).date(),
            "campaign_ids": {c for c, _ in campaigns},
        },
    )
    checked.is_valid(raise_exception=True)
    data = checked.validated_data
    return selectors.Filters(
        store_id=store_id,
        start=data["start"],
        end=data["end"] + ONE_DAY,
        campaign_id=data.get("campaign"),
        channel=data.get("channel"),
    )


def filters_out(filters: selectors.Filters, zone: ZoneInfo) -> dict[str, Any]:
    """The filters as the API shows them: ``end`` included, as given."""
    return {
        "store": filters.store_id,
        "start": filters.start.isoformat(),
        "end": (filters.end - ONE_DAY).isoformat(),
        "campaign": filters.campaign_id,
        "channel": filters.channel,
        "timezone": zone.key,
    }


# -- authentication and the store ---------------------------------------------------------------


class IsStoreOrUser(permissions.BasePermission):
    message = "Authenticate with the store's secret key (Bearer sk_...) or log in as a marketer."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, Store):
            return True
        user = request.user
        return user is not None and bool(user.is_authenticated)


class _StoreParam(serializers.Serializer):
    store = serializers.IntegerField(required=False, min_value=1)


def request_store_id(request: Request) -> int:
    """The store the request reads: the key's, or for a session the ``store`` parameter (or the
    user's only store). A store the caller may not see is a 404, as one that does not exist."""
    param = _StoreParam(data=request.query_params)
    param.is_valid(raise_exception=True)
    wanted: int | None = param.validated_data.get("store")
    if isinstance(request.auth, Store):
        if wanted is not None and wanted != request.auth.pk:
            raise StoreNotFound()
        return int(request.auth.pk)
    if wanted is None:
        ids = access.viewable_store_ids(user=request.user)
        if ids is not None and len(ids) == 1:
            return next(iter(ids))
        raise exceptions.ValidationError({"store": ["Required: the id of one of your stores."]})
    if not access.can_view(user=request.user, store_id=wanted):
        raise StoreNotFound()
    return wanted


# -- output (for the schema; the bodies are the selectors' as_dict) ------------------------------


def _money() -> serializers.DictField:
    return serializers.DictField(
        child=serializers.IntegerField(), help_text="Per ISO currency, in minor units."
    )


class FiltersOut(serializers.Serializer):
    store = serializers.IntegerField()
    start = serializers.DateField()
    end = serializers.DateField(help_text="Included.")
    campaign = serializers.IntegerField(allow_null=True)
    channel = serializers.CharField(allow_null=True)
    timezone = serializers.CharField(help_text="The store's zone: days are its local days.")


class FigureOut(serializers.Serializer):
    value = serializers.JSONField(help_text="A number, a fraction (rate), or money per currency.")
    previous = serializers.JSONField(help_text="The same for the previous period.")
    change = serializers.JSONField(
        help_text="count/money: (value - previous) / previous (per currency for money); rate: "
        "value - previous; null when previous is 0 or unknown."
    )
    kind = serializers.ChoiceField(choices=["count", "money", "rate"])


class IncrementalRevenueOut(serializers.Serializer):
    currency = serializers.CharField()
    treated_carts = serializers.IntegerField()
    holdout_carts = serializers.IntegerField()
    treated_mean_net = serializers.FloatField(allow_null=True)
    holdout_mean_net = serializers.FloatField(allow_null=True)
    per_cart = serializers.FloatField(allow_null=True)
    per_cart_low = serializers.FloatField(allow_null=True)
    per_cart_high = serializers.FloatField(allow_null=True)
    incremental = serializers.FloatField(allow_null=True, help_text="Minor units.")
    low = serializers.FloatField(allow_null=True, help_text="95% interval, minor units.")
    high = serializers.FloatField(allow_null=True)
    note = serializers.CharField()


class LiftOut(serializers.Serializer):
    treated_rate = serializers.FloatField(allow_null=True)
    holdout_rate = serializers.FloatField(allow_null=True)
    absolute = serializers.FloatField(allow_null=True, help_text="treated - holdout rate.")
    absolute_low = serializers.FloatField(allow_null=True, help_text="95% interval (Newcombe).")
    absolute_high = serializers.FloatField(allow_null=True)
    relative = serializers.FloatField(allow_null=True)
    incremental_conversions = serializers.FloatField(allow_null=True)
    incremental_conversions_low = serializers.FloatField(allow_null=True)
    incremental_conversions_high = serializers.FloatField(allow_null=True)
    incremental_revenue = IncrementalRevenueOut(many=True)
    confidence = serializers.FloatField()
    method = serializers.CharField()
    note = serializers.CharField()


class OverviewOut(serializers.Serializer):
    filters = FiltersOut()
    previous_start = serializers.DateField(help_text="The previous period: previous_start..start.")
    carts_started = FigureOut()
    abandoned = FigureOut()
    in_progress = FigureOut(
        help_text="Carts started in the period whose abandonment window has not expired yet."
    )
    settled = FigureOut(help_text="Carts started in the period, ordered or abandoned.")
    abandonment_rate = FigureOut(help_text="Abandoned / settled carts started in the period.")
    recovered = FigureOut()
    came_back = FigureOut(help_text="Abandoned carts that ordered without a touch.")
    orders = FigureOut()
    recovered_revenue = FigureOut(help_text="Attributed, net of discounts and refunds.")
    discount_cost = FigureOut()
    emails_sent = FigureOut()
    offers_shown = FigureOut()
    offers_accepted = FigureOut()
    treated_carts = FigureOut(
        help_text="Treated carts enrolled in the period whose conversion window has closed: the "
        "lift's base."
    )
    holdout_carts = FigureOut(help_text="The same for the holdout group.")
    treated_pending = FigureOut(
        help_text="Treated carts enrolled in the period whose conversion window is still open: "
        "not in the lift yet, ordered or not."
    )
    holdout_pending = FigureOut(help_text="The same for the holdout group.")
    conversion_lift = FigureOut()
    incremental_revenue = FigureOut()
    lift = LiftOut()
    onsite_recovered = FigureOut(
        help_text="Orders placed after an accepted on-site offer, within the attribution window."
    )
    onsite_revenue = FigureOut(help_text="Their revenue, net.")
    onsite_discount_cost = FigureOut(help_text="What the offers' codes took off them.")


class SeriesPointOut(serializers.Serializer):
    start = serializers.DateTimeField(help_text="The local day's (or hour's) start.")
    carts_started = serializers.IntegerField()
    abandoned = serializers.IntegerField()
    abandonment_rate = serializers.FloatField(
        allow_null=True, help_text="started_abandoned / started_settled (the row's cohort)."
    )
    started_in_progress = serializers.IntegerField(
        help_text="Carts started in this row still inside their abandonment window."
    )
    started_abandoned = serializers.IntegerField(help_text="Carts started in this row, abandoned.")
    started_settled = serializers.IntegerField(
        help_text="Carts started in this row, ordered or abandoned."
    )
    recovered = serializers.IntegerField()
    came_back = serializers.IntegerField()
    orders = serializers.IntegerField()
    recovered_revenue = _money()
    discount_cost = _money()
    emails_sent = serializers.IntegerField()
    offers_shown = serializers.IntegerField()
    offers_accepted = serializers.IntegerField()


class SeriesOut(serializers.Serializer):
    filters = FiltersOut()
    granularity = serializers.ChoiceField(
        choices=["day", "hour"], help_text="Hours for ranges of up to two days."
    )
    points = SeriesPointOut(many=True)


class FunnelRowOut(serializers.Serializer):
    campaign_id = serializers.IntegerField()
    campaign = serializers.CharField()
    tier_id = serializers.IntegerField()
    position = serializers.IntegerField()
    channel = serializers.CharField()
    scheduled = serializers.IntegerField()
    waiting = serializers.IntegerField(help_text="Scheduled, not finished yet.")
    sent = serializers.IntegerField()
    skipped = serializers.IntegerField()
    skipped_by_reason = serializers.DictField(child=serializers.IntegerField())
    suppressed = serializers.IntegerField(help_text="Holdout: recorded, nothing sent.")
    deferred = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    opened = serializers.IntegerField()
    clicked = serializers.IntegerField()
    converted = serializers.IntegerField(help_text="Recovered with this tier as the last touch.")
    revenue = _money()


class FunnelOut(serializers.Serializer):
    filters = FiltersOut()
    rows = FunnelRowOut(many=True)


class OfferKindOut(serializers.Serializer):
    kind = serializers.CharField()
    offered = serializers.IntegerField()
    shown = serializers.IntegerField()
    accepted = serializers.IntegerField()
    dismissed = serializers.IntegerField()
    acceptance_rate = serializers.FloatField(allow_null=True, help_text="accepted / shown.")


class OffersOut(serializers.Serializer):
    filters = FiltersOut()
    kinds = OfferKindOut(many=True)
    offered = serializers.IntegerField()
    shown = serializers.IntegerField()
    accepted = serializers.IntegerField()
    dismissed = serializers.IntegerField()
    no_offer_by_reason = serializers.DictField(child=serializers.IntegerField())


class ScoreBandOut(serializers.Serializer):
    band = serializers.IntegerField()
    low = serializers.FloatField()
    high = serializers.FloatField()
    carts = serializers.IntegerField(help_text="Settled: scored at least 24 hours ago.")
    pending = serializers.IntegerField(help_text="Scored less than 24 hours ago: outcome unknown.")
    predicted = serializers.FloatField(allow_null=True, help_text="Mean score (settled carts).")
    observed = serializers.FloatField(
        allow_null=True, help_text="Share of the settled carts without an order within 24 hours."
    )


class ScoresOut(serializers.Serializer):
    filters = FiltersOut()
    bands = ScoreBandOut(many=True)


class LostValueOut(serializers.Serializer):
    key = serializers.CharField(help_text="The SKU or the category.")
    name = serializers.CharField()
    currency = serializers.CharField()
    carts = serializers.IntegerField()
    value = serializers.IntegerField(help_text="Quantity x unit price at abandonment, minor units.")


class ProductsOut(serializers.Serializer):
    filters = FiltersOut()
    by = serializers.ChoiceField(choices=["sku", "category"])
    rows = LostValueOut(many=True)


class ProductsIn(serializers.Serializer):
    by = serializers.ChoiceField(choices=["sku", "category"], default="sku")
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=10)


class StoreIn(serializers.Serializer):
    store = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="With a session: which of your stores (default: your only one). With a key: "
        "the key's store, or omitted.",
    )


# -- the endpoints ------------------------------------------------------------------------------

_ERRORS = {
    400: bad_request(
        'Invalid filters: errors by parameter, e.g. {"end": ["The end must not be before the '
        'start."]} (a range of at most 366 days, end not before start; a parameter sent empty '
        "is refused, leave it out for its default)."
    ),
    401: error("Neither a secret key nor a session, or an unknown or revoked key."),
    404: error(
        "No such store, or not one of yours (store); the store has no such campaign (campaign)."
    ),
    429: THROTTLED,
}


def _schema(operation_id: str, summary: str, out: type, *extra: type) -> Any:
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        tags=["metrics"],
        parameters=[StoreIn, FiltersIn, *extra, RETRY_AFTER],
        responses={200: out, **_ERRORS},
    )


_PARAMETERS = [*StoreIn().fields, *FiltersIn().fields, *ProductsIn().fields]


class _CampaignParam(serializers.Serializer):
    campaign = serializers.IntegerField(required=False, min_value=1)


class _MetricsApi(APIView):
    authentication_classes = [StoreSecretKeyAuthentication, SessionAuthentication]
    permission_classes = [IsStoreOrUser]
    throttle_classes = [StoreRateThrottle]

    def filters(self, request: Request, now: datetime) -> tuple[selectors.Filters, dict[str, Any]]:
        """The request's filters, and as the response repeats them. A campaign the store does not
        have is a 404, as a store the caller may not see (the pages say so in their form)."""
        refuse_blank(request.query_params, _PARAMETERS)
        store_id = request_store_id(request)
        zone = selectors.store_zone(store_id)
        campaigns = store_campaigns(store_id)
        campaign = _CampaignParam(data=request.query_params)
        if campaign.is_valid() and campaign.validated_data.get("campaign") not in (
            None,
            *(c for c, _ in campaigns),
        ):
            raise CampaignNotFound(
                f"This store has no campaign {campaign.validated_data['campaign']}."
            )
        filters = filters_parse(
            request.query_params, store_id=store_id, now=now, zone=zone, campaigns=campaigns
        )
        return filters, filters_out(filters, zone)


def _without_filters(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("filters", "timezone")}


class OverviewApi(_MetricsApi):
    @_schema("metrics_overview", "Headline figures against the previous period.", OverviewOut)
    def get(self, request: Request) -> Response:
        now = timezone.now()
        filters, echo = self.filters(request, now)
        result = selectors.overview(filters, now=now).as_dict()
        return Response({"filters": echo, **_without_filters(result)})


class TimeseriesApi(_MetricsApi):
    @_schema("metrics_timeseries", "The figures per local day (hour for <= 2 days).", SeriesOut)
    def get(self, request: Request) -> Response:
        now = timezone.now()
        filters, echo = self.filters(request, now)
        result = selectors.timeseries(filters, now=now).as_dict()
        return Response({"filters": echo, **_without_filters(result)})


class FunnelApi(_MetricsApi):
    @_schema(
        "metrics_funnel", "Steps per campaign and tier, from scheduled to converted.", FunnelOut
    )
    def get(self, request: Request) -> Response:
        filters, echo = self.filters(request, timezone.now())
        rows = [row.as_dict() for row in selectors.funnel(filters)]
        return Response({"filters": echo, "rows": rows})


class OffersApi(_MetricsApi):
    @_schema("metrics_offers", "On-site offers by kind; no-offer decisions by reason.", OffersOut)
    def get(self, request: Request) -> Response:
        filters, echo = self.filters(request, timezone.now())
        result = selectors.offers(filters).as_dict()
        return Response({"filters": echo, **_without_filters(result)})


class ScoresApi(_MetricsApi):
    @_schema("metrics_scores", "Score distribution and calibration in ten bands.", ScoresOut)
    def get(self, request: Request) -> Response:
        now = timezone.now()
        filters, echo = self.filters(request, now)
        bands = [band.as_dict() for band in selectors.scores(filters, now=now)]
        return Response({"filters": echo, "bands": bands})


class ProductsApi(_MetricsApi):
    @_schema(
        "metrics_products",
        "Top abandoned products (or categories) by lost value.",
        ProductsOut,
        ProductsIn,
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        filters, echo = self.filters(request, now)
        params = ProductsIn(data=request.query_params)
        params.is_valid(raise_exception=True)
        by = params.validated_data["by"]
        rows = selectors.top_products(filters, now=now, by=by, limit=params.validated_data["limit"])
        return Response({"filters": echo, "by": by, "rows": [r.as_dict() for r in rows]})
