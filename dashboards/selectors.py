"""The dashboards' figures (docs/dashboards.md), read from the read models CartFact and DailyCount
and from campaign configuration; never from the event log.

Most figures are sums of DailyCount rows over a range of local days. Two things depend on the
moment of reading and are settled here: a cart whose prospective abandonment time has not come
yet is not abandoned (subtracted: only carts active in the last half hour), and a scored cart
whose 24 hours have not passed has no observed outcome yet (subtracted from the calibration).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from django.db import connection

from campaigns import stats
from campaigns.attribution import INSUFFICIENT, IncrementalRevenue, Lift
from campaigns.models import Campaign, Tier
from dashboards import ABANDONMENT_WINDOW, OBSERVATION_WINDOW
from dashboards import projection as p

COUNT = "count"
MONEY = "money"
RATE = "rate"
HOURLY_MAX_DAYS = 2


# -- values ------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _AsDict:
    __slots__ = ()
    if TYPE_CHECKING:
        __dataclass_fields__: ClassVar[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values: tuples become lists, dates and times ISO 8601 strings."""
        result: dict[str, Any] = _plain(dataclasses.asdict(self))  # type: ignore[call-overload]
        return result


@dataclasses.dataclass(frozen=True, slots=True)
class Filters(_AsDict):
    """A store, a range of its local days [start, end), optionally one campaign and channel."""

    store_id: int
    start: date
    end: date
    campaign_id: int | None = None
    channel: str | None = None

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("end must be after start")

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def hourly(self) -> bool:
        """Time series are per hour for ranges of up to two days."""
        return self.days <= HOURLY_MAX_DAYS

    def previous(self) -> Filters:
        """The period of the same length just before this one."""
        return dataclasses.replace(self, start=self.start - (self.end - self.start), end=self.start)


Number = int | float
Money = dict[str, int]


@dataclasses.dataclass(frozen=True, slots=True)
class Figure(_AsDict):
    """A figure for the period and the previous one. ``kind``: "count" (change relative, (value -
    previous) / previous), "money" (value and previous per currency, change relative per currency)
    or "rate" (a fraction; change is value - previous). A change is None when the previous value
    is 0 or unknown."""

    value: Number | Money | None
    previous: Number | Money | None
    change: float | dict[str, float | None] | None
    kind: str = COUNT


def _relative(value: Number, previous: Number) -> float | None:
    return (value - previous) / previous if previous else None


def count_figure(value: int, previous: int) -> Figure:
    return Figure(value, previous, _relative(value, previous), COUNT)


def rate_figure(value: float | None, previous: float | None) -> Figure:
    change = value - previous if value is not None and previous is not None else None
    return Figure(value, previous, change, RATE)


def money_figure(value: Money, previous: Money) -> Figure:
    change = {
        c: _relative(value.get(c, 0), previous.get(c, 0)) for c in sorted({*value, *previous})
    }
    return Figure(value, previous, change, MONEY)


@dataclasses.dataclass(frozen=True, slots=True)
class Overview(_AsDict):
    """The period's headline figures against the previous period of the same length.

    ``lift`` is campaigns.attribution's Lift (same fields and method) for the carts enrolled in
    the period; ``conversion_lift`` and ``incremental_revenue`` repeat its estimates as figures
    (incremental revenue rounded to minor units; currencies without an estimate left out)."""

    filters: Filters
    previous_start: date
    timezone: str
    carts_started: Figure
    abandoned: Figure
    abandonment_rate: Figure
    recovered: Figure
    came_back: Figure
    orders: Figure
    recovered_revenue: Figure
    discount_cost: Figure
    emails_sent: Figure
    offers_shown: Figure
    offers_accepted: Figure
    treated_carts: Figure
    holdout_carts: Figure
    conversion_lift: Figure
    incremental_revenue: Figure
    lift: Lift


@dataclasses.dataclass(frozen=True, slots=True)
class SeriesPoint(_AsDict):
    start: datetime  # the local day's (or hour's) start, in the store's zone
    carts_started: int
    abandoned: int
    abandonment_rate: float | None  # of the carts (with items) started in this bucket
    recovered: int
    came_back: int
    orders: int
    recovered_revenue: Money
    discount_cost: Money
    emails_sent: int
    offers_shown: int
    offers_accepted: int


@dataclasses.dataclass(frozen=True, slots=True)
class Series(_AsDict):
    filters: Filters
    granularity: str  # "day" or "hour"
    timezone: str
    points: tuple[SeriesPoint, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class FunnelRow(_AsDict):
    """One tier of one campaign over the period (each count on the day it happened)."""

    campaign_id: int
    campaign: str
    tier_id: int
    position: int
    channel: str
    scheduled: int
    sent: int
    skipped: int
    skipped_by_reason: dict[str, int]
    suppressed: int
    deferred: int
    failed: int
    cancelled: int
    opened: int
    clicked: int
    converted: int  # recovered carts this tier was the last touch of
    revenue: Money  # their net revenue


@dataclasses.dataclass(frozen=True, slots=True)
class OfferKindRow(_AsDict):
    kind: str
    offered: int
    shown: int
    accepted: int
    dismissed: int
    acceptance_rate: float | None  # accepted / shown


@dataclasses.dataclass(frozen=True, slots=True)
class OffersByKind(_AsDict):
    filters: Filters
    kinds: tuple[OfferKindRow, ...]
    offered: int
    shown: int
    accepted: int
    dismissed: int
    no_offer_by_reason: dict[str, int]  # decisions "none"


@dataclasses.dataclass(frozen=True, slots=True)
class ScoreBand(_AsDict):
    """Carts scored in the period whose outcome is known (an order within 24 hours of the scored
    moment, or 24 hours passed), by score band."""

    band: int
    low: float
    high: float
    carts: int
    predicted: float | None  # mean score: predicted abandonment
    observed: float | None  # share without an order within 24 hours


@dataclasses.dataclass(frozen=True, slots=True)
class LostValue(_AsDict):
    key: str  # the SKU or the category
    name: str  # the product's name (the category again for categories)
    currency: str
    carts: int
    value: int  # quantity x unit price at abandonment, minor units


@dataclasses.dataclass(frozen=True, slots=True)
class LiveCart(_AsDict):
    cart: str
    started_at: datetime | None
    last_activity_at: datetime | None
    currency: str
    value: int
    item_count: int
    score: float | None  # the live abandonment score (carts' cart state), None when unscored
    exit_intents: int
    offers_shown: int
    offers_accepted: int
    campaign_id: int | None


# -- reading the counters ----------------------------------------------------------------------


def store_zone(store_id: int) -> ZoneInfo:
    return p.store_zones([store_id])[store_id]


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    metric: str
    bucket: Any
    tier_id: int
    channel: str
    key: str
    currency: str
    count: int
    amount: int
    squares: int


def _rows(
    filters: Filters,
    metrics: Sequence[str],
    *,
    start: date,
    bucket: str,
    hourly: bool = False,
) -> list[_Row]:
    """Summed counters of ``metrics`` from ``start`` to filters.end, grouped by ``bucket`` (an SQL
    expression over the row) and every dimension but the day."""
    sql = f"""
        SELECT metric, {bucket}, tier_id, channel, key, currency,
               SUM(count), SUM(amount), SUM(squares)
          FROM dashboards_dailycount
         WHERE store_id = %s AND hourly = %s AND metric = ANY(%s) AND day >= %s AND day < %s
               {"AND campaign_id = %s" if filters.campaign_id is not None else ""}
         GROUP BY 1, 2, 3, 4, 5, 6
    """
    params: list[Any] = [filters.store_id, hourly, list(metrics), start, filters.end]
    if filters.campaign_id is not None:
        params.append(filters.campaign_id)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [
            _Row(m, b, t, ch, k, cur, int(n), int(a), int(s))
            for m, b, t, ch, k, cur, n, a, s in cursor.fetchall()
        ]


def _channel_ok(metric: str, channel: str, wanted: str | None) -> bool:
    """Which counters a channel filter keeps: those with a channel (touches, sends, offers)."""
    if metric == p.SENT and channel not in p.EMAIL_CHANNELS:
        return False
    if wanted is None:
        return True
    if metric in (p.RECOVERED, p.SENT, p.OFFER_SHOWN, p.OFFER_ACCEPTED):
        return channel == wanted
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class _Quiet:
    """A cart whose prospective abandonment is still ahead at the moment of reading."""

    started: tuple[date, int] | None
    abandoned: tuple[date, int]
    currency: str
    value: int
    lines: list[list[Any]]


def _not_yet_abandoned(filters: Filters, now: datetime) -> list[_Quiet]:
    """Carts counted as abandoned by the counters whose abandonment time is after ``now``: they
    were active in the last half hour (or have future times). Not enrolled, so none for a
    campaign."""
    if filters.campaign_id is not None:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT started_day, started_hour, had_items, abandoned_day, abandoned_hour,
                   currency, value, lines
              FROM dashboards_cartfact
             WHERE store_id = %s AND NOT abandoned_final AND abandoned_at > %s
            """,
            [filters.store_id, now],
        )
        rows = cursor.fetchall()
    out = []
    for s_day, s_hour, had_items, a_day, a_hour, currency, value, lines in rows:
        started = (s_day, s_hour) if s_day is not None and had_items else None
        if isinstance(lines, str):
            lines = json.loads(lines)
        out.append(_Quiet(started, (a_day, a_hour), currency, value, lines))
    return out


class _Sums:
    """Counter sums by (metric, bucket) with the channel filter applied."""

    def __init__(self, rows: Iterable[_Row], channel: str | None) -> None:
        self.counts: defaultdict[tuple[str, Any], int] = defaultdict(int)
        # (metric, bucket) -> currency -> [count, amount]
        self.money: defaultdict[tuple[str, Any], defaultdict[str, list[int]]] = defaultdict(
            lambda: defaultdict(lambda: [0, 0])
        )
        for row in rows:
            if not _channel_ok(row.metric, row.channel, channel):
                continue
            self.counts[(row.metric, row.bucket)] += row.count
            acc = self.money[(row.metric, row.bucket)][row.currency]
            acc[0] += row.count
            acc[1] += row.amount

    def count(self, metric: str, bucket: Any) -> int:
        return self.counts.get((metric, bucket), 0)

    def amounts(self, metric: str, bucket: Any) -> Money:
        """Per currency (those with any count or amount), in minor units."""
        found = self.money.get((metric, bucket))
        if not found:
            return {}
        return {c: a for c, (n, a) in sorted(found.items()) if n or a}

    def subtract(self, metric: str, bucket: Any, currency: str, count: int, amount: int) -> None:
        self.counts[(metric, bucket)] -= count
        acc = self.money[(metric, bucket)][currency]
        acc[0] -= count
        acc[1] -= amount


def _lift(rows: Iterable[_Row]) -> tuple[Lift, int, int]:
    """campaigns.attribution's lift from the cohort counters: (lift, treated carts, holdout
    carts). Sums of net and squared net give each currency's mean and sample variance exactly."""
    n: defaultdict[str, int] = defaultdict(int)
    x: defaultdict[str, int] = defaultdict(int)
    money: defaultdict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        if row.metric == p.COHORT:
            n[row.key] += row.count
            acc = money[(row.key, row.currency)]
            acc[0] += row.count
            acc[1] += row.amount
            acc[2] += row.squares
        elif row.metric == p.COHORT_CONVERTED:
            x[row.key] += row.count
    n_t, n_h = n[p.TREATED], n[p.HOLDOUT]
    x_t, x_h = x[p.TREATED], x[p.HOLDOUT]
    currencies = sorted({c for (_, c), acc in money.items() if acc[0]})
    revenue = tuple(
        _incremental_revenue(c, money.get((p.TREATED, c)), money.get((p.HOLDOUT, c)))
        for c in currencies
    )
    p_t = x_t / n_t if n_t else None
    p_h = x_h / n_h if n_h else None
    d: stats.Difference | None = None
    if p_t is None or p_h is None:
        note = f"{INSUFFICIENT}: no {'treated' if p_t is None else 'holdout'} carts"
    else:
        d = stats.newcombe(x_t, n_t, x_h, n_h)
        note = "" if p_h > 0 else "relative lift undefined: no holdout conversions"
    lift = Lift(
        treated_rate=p_t,
        holdout_rate=p_h,
        absolute=d.estimate if d else None,
        absolute_low=d.low if d else None,
        absolute_high=d.high if d else None,
        relative=d.estimate / p_h if d and p_h else None,
        incremental_conversions=d.estimate * n_t if d else None,
        incremental_conversions_low=d.low * n_t if d else None,
        incremental_conversions_high=d.high * n_t if d else None,
        incremental_revenue=revenue,
        confidence=stats.CONFIDENCE,
        method="newcombe-wilson",
        note=note,
    )
    return lift, n_t, n_h


def _sample(acc: list[int] | None) -> stats.Sample:
    if not acc or acc[0] <= 0:
        return stats.Sample(n=0, mean=None, variance=None)
    count, total, squares = acc
    mean = total / count
    if count == 1:
        return stats.Sample(n=1, mean=mean, variance=None)
    variance = Fraction(count * squares - total * total, count * (count - 1))
    return stats.Sample(n=count, mean=mean, variance=float(variance))


def _incremental_revenue(
    currency: str, treated: list[int] | None, holdout: list[int] | None
) -> IncrementalRevenue:
    t, h = _sample(treated), _sample(holdout)
    per_cart = t.mean - h.mean if t.mean is not None and h.mean is not None else None
    interval = stats.mean_difference(t, h)
    if per_cart is None:
        note = f"{INSUFFICIENT}: no {'treated' if not t.n else 'holdout'} carts in {currency}"
    elif interval is None:
        note = f"{INSUFFICIENT}: an interval needs two carts in each group"
    else:
        note = ""
    return IncrementalRevenue(
        currency=currency,
        treated_carts=t.n,
        holdout_carts=h.n,
        treated_mean_net=t.mean,
        holdout_mean_net=h.mean,
        per_cart=per_cart,
        per_cart_low=interval.low if interval else None,
        per_cart_high=interval.high if interval else None,
        incremental=per_cart * t.n if per_cart is not None else None,
        low=interval.low * t.n if interval else None,
        high=interval.high * t.n if interval else None,
        note=note,
    )


# -- the selectors -----------------------------------------------------------------------------

_OVERVIEW_METRICS = (
    p.STARTED,
    p.STARTED_ITEMS,
    p.STARTED_ABANDONED,
    p.ABANDONED,
    p.RECOVERED,
    p.CAME_BACK,
    p.ORDERS,
    p.DISCOUNT,
    p.SENT,
    p.OFFER_SHOWN,
    p.OFFER_ACCEPTED,
    p.COHORT,
    p.COHORT_CONVERTED,
)


def overview(filters: Filters, *, now: datetime) -> Overview:
    """The headline figures of the period and of the one before it; carts count as abandoned once
    their quiet time has passed at ``now``. Three queries."""
    zone = store_zone(filters.store_id)
    before = filters.previous()
    rows = _rows(
        filters,
        _OVERVIEW_METRICS,
        start=before.start,
        bucket=f"(day >= '{filters.start.isoformat()}'::date)",
    )
    sums = _Sums(rows, filters.channel)
    for quiet in _not_yet_abandoned(filters, now):
        day = quiet.abandoned[0]
        if before.start <= day < filters.end:
            sums.subtract(p.ABANDONED, day >= filters.start, quiet.currency, 1, quiet.value)
        if quiet.started is not None and before.start <= quiet.started[0] < filters.end:
            sums.subtract(p.STARTED_ABANDONED, quiet.started[0] >= filters.start, "", 1, 0)

    def counts(metric: str) -> Figure:
        return count_figure(sums.count(metric, True), sums.count(metric, False))

    def money(metric: str) -> Figure:
        return money_figure(sums.amounts(metric, True), sums.amounts(metric, False))

    def rate(current: bool) -> float | None:
        started = sums.count(p.STARTED_ITEMS, current)
        return sums.count(p.STARTED_ABANDONED, current) / started if started else None

    lift, n_t, n_h = _lift(r for r in rows if r.bucket)
    lift_before, n_t0, n_h0 = _lift(r for r in rows if not r.bucket)
    return Overview(
        filters=filters,
        previous_start=before.start,
        timezone=zone.key,
        carts_started=counts(p.STARTED),
        abandoned=counts(p.ABANDONED),
        abandonment_rate=rate_figure(rate(True), rate(False)),
        recovered=counts(p.RECOVERED),
        came_back=counts(p.CAME_BACK),
        orders=counts(p.ORDERS),
        recovered_revenue=money(p.RECOVERED),
        discount_cost=money(p.DISCOUNT),
        emails_sent=counts(p.SENT),
        offers_shown=counts(p.OFFER_SHOWN),
        offers_accepted=counts(p.OFFER_ACCEPTED),
        treated_carts=count_figure(n_t, n_t0),
        holdout_carts=count_figure(n_h, n_h0),
        conversion_lift=rate_figure(lift.absolute, lift_before.absolute),
        incremental_revenue=money_figure(_incremental(lift), _incremental(lift_before)),
        lift=lift,
    )


def _incremental(lift: Lift) -> Money:
    return {
        r.currency: round(r.incremental)
        for r in lift.incremental_revenue
        if r.incremental is not None and math.isfinite(r.incremental)
    }


_SERIES_METRICS = (
    p.STARTED,
    p.STARTED_ITEMS,
    p.STARTED_ABANDONED,
    p.ABANDONED,
    p.RECOVERED,
    p.CAME_BACK,
    p.ORDERS,
    p.DISCOUNT,
    p.SENT,
    p.OFFER_SHOWN,
    p.OFFER_ACCEPTED,
)


def timeseries(filters: Filters, *, now: datetime) -> Series:
    """The period's figures per local day, or per local hour when it spans at most two days
    (every bucket present, zeros included). Three queries."""
    zone = store_zone(filters.store_id)
    hourly = filters.hourly
    # Buckets are offsets from the start: days, or hours (day offset x 24 + local hour).
    offset = f"(day - '{filters.start.isoformat()}'::date)"
    rows = _rows(
        filters,
        _SERIES_METRICS,
        start=filters.start,
        bucket=f"{offset} * 24 + hour" if hourly else offset,
        hourly=hourly,
    )
    sums = _Sums(rows, filters.channel)

    def bucket_of(day: date, hour: int) -> int:
        days = (day - filters.start).days
        return days * 24 + hour if hourly else days

    for quiet in _not_yet_abandoned(filters, now):
        a_day, a_hour = quiet.abandoned
        if filters.start <= a_day < filters.end:
            sums.subtract(p.ABANDONED, bucket_of(a_day, a_hour), quiet.currency, 1, quiet.value)
        if quiet.started is not None and filters.start <= quiet.started[0] < filters.end:
            sums.subtract(p.STARTED_ABANDONED, bucket_of(*quiet.started), "", 1, 0)
    points = []
    day = filters.start
    while day < filters.end:
        for hour in range(24) if hourly else (0,):
            bucket = bucket_of(day, hour)
            started = sums.count(p.STARTED_ITEMS, bucket)
            points.append(
                SeriesPoint(
                    start=datetime.combine(day, time(hour), tzinfo=zone),
                    carts_started=sums.count(p.STARTED, bucket),
                    abandoned=sums.count(p.ABANDONED, bucket),
                    abandonment_rate=(
                        sums.count(p.STARTED_ABANDONED, bucket) / started if started else None
                    ),
                    recovered=sums.count(p.RECOVERED, bucket),
                    came_back=sums.count(p.CAME_BACK, bucket),
                    orders=sums.count(p.ORDERS, bucket),
                    recovered_revenue=sums.amounts(p.RECOVERED, bucket),
                    discount_cost=sums.amounts(p.DISCOUNT, bucket),
                    emails_sent=sums.count(p.SENT, bucket),
                    offers_shown=sums.count(p.OFFER_SHOWN, bucket),
                    offers_accepted=sums.count(p.OFFER_ACCEPTED, bucket),
                )
            )
        day += timedelta(days=1)
    return Series(
        filters=filters,
        granularity="hour" if hourly else "day",
        timezone=zone.key,
        points=tuple(points),
    )


_FUNNEL_METRICS = (
    p.SCHEDULED,
    p.SENT,
    p.SKIPPED,
    p.SUPPRESSED,
    p.DEFERRED,
    p.FAILED,
    p.CANCELLED,
    p.OPENED,
    p.CLICKED,
    p.RECOVERED,
)


def funnel(filters: Filters) -> list[FunnelRow]:
    """Per campaign and tier: scheduled, sent, skipped (by reason), suppressed, deferred, failed
    (finally), cancelled, opened, clicked, converted and its revenue, in order of campaign and
    tier position."""
    rows = _rows(filters, _FUNNEL_METRICS, start=filters.start, bucket="campaign_id")
    by_tier: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        if filters.channel is not None and row.channel != filters.channel:
            continue
        if row.tier_id == 0:
            continue
        acc = by_tier.setdefault(
            (row.bucket, row.tier_id),
            {
                "channel": row.channel,
                "counts": defaultdict(int),
                "reasons": defaultdict(int),
                "revenue": defaultdict(int),
            },
        )
        if row.metric == p.FAILED and row.key != "final":
            continue
        acc["counts"][row.metric] += row.count
        if row.metric == p.SKIPPED:
            acc["reasons"][row.key] += row.count
        if row.metric == p.RECOVERED:
            acc["revenue"][row.currency] += row.amount
        if not acc["channel"]:
            acc["channel"] = row.channel
    tiers = {
        t.pk: t
        for t in Tier.objects.filter(
            campaign__store_id=filters.store_id, pk__in={t for _, t in by_tier}
        ).only("pk", "position", "channel", "campaign_id")
    }
    names = dict(
        Campaign.objects.filter(
            store_id=filters.store_id, pk__in={k for k, _ in by_tier}
        ).values_list("pk", "name")
    )
    out = []
    for (campaign_id, tier_id), acc in by_tier.items():
        tier = tiers.get(tier_id)
        counts = acc["counts"]
        out.append(
            FunnelRow(
                campaign_id=campaign_id,
                campaign=names.get(campaign_id, ""),
                tier_id=tier_id,
                position=tier.position if tier is not None else 0,
                channel=tier.channel if tier is not None else acc["channel"],
                scheduled=counts[p.SCHEDULED],
                sent=counts[p.SENT],
                skipped=counts[p.SKIPPED],
                skipped_by_reason=dict(sorted(acc["reasons"].items())),
                suppressed=counts[p.SUPPRESSED],
                deferred=counts[p.DEFERRED],
                failed=counts[p.FAILED],
                cancelled=counts[p.CANCELLED],
                opened=counts[p.OPENED],
                clicked=counts[p.CLICKED],
                converted=counts[p.RECOVERED],
                revenue={c: a for c, a in sorted(acc["revenue"].items())},
            )
        )
    return sorted(out, key=lambda r: (r.campaign_id, r.position, r.tier_id))


_OFFER_METRICS = (p.OFFER_DECIDED, p.OFFER_NONE, p.OFFER_SHOWN, p.OFFER_ACCEPTED, p.OFFER_DISMISSED)


def offers(filters: Filters) -> OffersByKind:
    """On-site offers decided in the period by kind, with how many were shown, accepted and
    dismissed, and the decisions to offer nothing by reason. Offers are the on-site channel: a
    filter on another channel leaves nothing."""
    rows = (
        []
        if filters.channel not in (None, p.ONSITE)
        else _rows(filters, _OFFER_METRICS, start=filters.start, bucket="0")
    )
    kinds: dict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    reasons: defaultdict[str, int] = defaultdict(int)
    for row in rows:
        if row.metric == p.OFFER_NONE:
            reasons[row.key] += row.count
        else:
            kinds[row.key][row.metric] += row.count
    kind_rows = tuple(
        OfferKindRow(
            kind=kind,
            offered=c[p.OFFER_DECIDED],
            shown=c[p.OFFER_SHOWN],
            accepted=c[p.OFFER_ACCEPTED],
            dismissed=c[p.OFFER_DISMISSED],
            acceptance_rate=c[p.OFFER_ACCEPTED] / c[p.OFFER_SHOWN] if c[p.OFFER_SHOWN] else None,
        )
        for kind, c in sorted(kinds.items())
    )
    return OffersByKind(
        filters=filters,
        kinds=kind_rows,
        offered=sum(r.offered for r in kind_rows),
        shown=sum(r.shown for r in kind_rows),
        accepted=sum(r.accepted for r in kind_rows),
        dismissed=sum(r.dismissed for r in kind_rows),
        no_offer_by_reason={r: n for r, n in sorted(reasons.items()) if n},
    )


def scores(filters: Filters, *, now: datetime | None = None) -> list[ScoreBand]:
    """Calibration: for carts scored in the period (the score at enrolment, else at the last
    exit-intent decision) whose outcome is known at ``now``, per band of 0.1: carts, mean score
    (predicted abandonment) and the share without an order within 24 hours (observed)."""
    from django.utils import timezone

    moment = now or timezone.now()
    rows = _rows(filters, (p.SCORE, p.SCORE_ORDERED), start=filters.start, bucket="0")
    carts: defaultdict[int, int] = defaultdict(int)
    micros: defaultdict[int, int] = defaultdict(int)
    ordered: defaultdict[int, int] = defaultdict(int)
    for row in rows:
        band = int(row.key)
        if row.metric == p.SCORE:
            carts[band] += row.count
            micros[band] += row.amount
        else:
            ordered[band] += row.count
    sql = """
        SELECT score FROM dashboards_cartfact
         WHERE store_id = %s AND scored_at > %s AND scored_day >= %s AND scored_day < %s
           AND (converted_at IS NULL OR converted_at > scored_at + %s)
    """
    params: list[Any] = [
        filters.store_id,
        moment - OBSERVATION_WINDOW,
        filters.start,
        filters.end,
        OBSERVATION_WINDOW,
    ]
    if filters.campaign_id is not None:
        sql += " AND campaign_id = %s"
        params.append(filters.campaign_id)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for (score,) in cursor.fetchall():  # outcome not known yet
            band = p.band_of(score)
            carts[band] -= 1
            micros[band] -= round(score * p.SCORE_MICROS)
    out = []
    for band in range(10):
        n = carts[band]
        out.append(
            ScoreBand(
                band=band,
                low=band / 10,
                high=(band + 1) / 10,
                carts=n,
                predicted=micros[band] / n / p.SCORE_MICROS if n else None,
                observed=(n - ordered[band]) / n if n else None,
            )
        )
    return out


def top_products(
    filters: Filters,
    *,
    now: datetime,
    by: Literal["sku", "category"] = "sku",
    limit: int = 10,
) -> list[LostValue]:
    """The products (or categories) of the largest lost value: over the carts abandoned in the
    period (by ``now``) and not converted, quantity x unit price of each line as it was when the
    cart was abandoned, per currency, largest first."""
    if by not in ("sku", "category"):
        raise ValueError("by is 'sku' or 'category'")
    metric = p.LOST_SKU if by == "sku" else p.LOST_CATEGORY
    corrections: defaultdict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for quiet in _not_yet_abandoned(filters, now):
        if not filters.start <= quiet.abandoned[0] < filters.end:
            continue
        for line in quiet.lines:
            key = str(line[0]) if by == "sku" else str(line[4] or "")
            acc = corrections[(key, quiet.currency)]
            acc[0] += 1
            acc[1] += p.line_value(line)
    key_sql = "split_part(key, E'\\t', 1)" if by == "sku" else "key"
    name_sql = "MAX(split_part(key, E'\\t', 2))" if by == "sku" else "key"
    sql = f"""
        SELECT {key_sql} AS k, {name_sql}, currency, SUM(count), SUM(amount)
          FROM dashboards_dailycount
         WHERE store_id = %s AND hourly = false AND metric = %s AND day >= %s AND day < %s
               {"AND campaign_id = %s" if filters.campaign_id is not None else ""}
         GROUP BY k, currency
        HAVING SUM(count) > 0
         ORDER BY SUM(amount) DESC, k, currency
         LIMIT %s
    """
    params: list[Any] = [filters.store_id, metric, filters.start, filters.end]
    if filters.campaign_id is not None:
        params.append(filters.campaign_id)
    params.append(limit + len(corrections))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = cursor.fetchall()
    out = []
    for key, name, currency, carts, value in found:
        less = corrections.get((key, currency), [0, 0])
        carts, value = int(carts) - less[0], int(value) - less[1]
        if carts > 0:
            out.append(
                LostValue(key=key, name=name or key, currency=currency, carts=carts, value=value)
            )
    out.sort(key=lambda r: (-r.value, r.key, r.currency))
    return out[:limit]


_LIVE = """
    SELECT f.cart, f.started_at, f.last_activity_at, f.currency, f.value, f.item_count, s.score,
           f.exit_intents, f.offers_shown, f.offers_accepted, f.campaign_id
      FROM dashboards_cartfact f
      LEFT JOIN carts_cartstate s ON s.token = f.cart AND s.store_id = f.store_id
     WHERE f.store_id = %s AND f.last_activity_at > %s AND f.last_activity_at <= %s
       AND f.converted_at IS NULL
     ORDER BY f.last_activity_at DESC, f.cart
     LIMIT %s
"""


def live_carts(store_id: int, *, now: datetime, limit: int = 50) -> list[LiveCart]:
    """Carts active now (shopper activity in the last abandonment window, no order), most recent
    first, with their live score, exit intents and offers."""
    with connection.cursor() as cursor:
        cursor.execute(_LIVE, [store_id, now - ABANDONMENT_WINDOW, now, limit])
        rows = cursor.fetchall()
    return [LiveCart(*row) for row in rows]
