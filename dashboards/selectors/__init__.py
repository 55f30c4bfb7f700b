"""The dashboards' figures (docs/dashboards.md), read from the read models CartFact and DailyCount
and from campaign configuration; never from the event log.

Most figures are sums of DailyCount rows over a range of local days. Two things depend on the
moment of reading and are settled here: a cart whose prospective abandonment time has not come
yet is not abandoned (subtracted: only carts active in the last half hour), and a scored cart
whose 24 hours have not passed has no observed outcome yet (subtracted from the calibration).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from django.db import connection

from campaigns.attribution import Lift
from campaigns.models import Campaign, Tier
from dashboards import ABANDONMENT_WINDOW, OBSERVATION_WINDOW
from dashboards.projection import counters as p
from dashboards.selectors.reads import (
    Sums,
    counter_rows,
    lift_of,
    lift_pending,
    not_yet_abandoned,
    store_zone,
)
from dashboards.selectors.results import (
    COUNT,
    HOURLY_MAX_DAYS,
    MONEY,
    RATE,
    Figure,
    Filters,
    FunnelRow,
    LiveCart,
    LostValue,
    Money,
    Number,
    OfferKindRow,
    OffersByKind,
    Overview,
    ScoreBand,
    Series,
    SeriesPoint,
    count_figure,
    money_figure,
    rate_figure,
)

__all__ = [
    "COUNT",
    "HOURLY_MAX_DAYS",
    "MONEY",
    "RATE",
    "Figure",
    "Filters",
    "FunnelRow",
    "LiveCart",
    "LostValue",
    "Money",
    "Number",
    "OfferKindRow",
    "OffersByKind",
    "Overview",
    "ScoreBand",
    "Series",
    "SeriesPoint",
    "count_figure",
    "funnel",
    "live_carts",
    "money_figure",
    "offers",
    "overview",
    "rate_figure",
    "scores",
    "store_currency",
    "store_zone",
    "timeseries",
    "top_products",
]

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
    p.ONSITE_RECOVERED,
    p.ONSITE_DISCOUNT,
)


def overview(filters: Filters, *, now: datetime) -> Overview:
    """The headline figures of the period and of the one before it; carts count as abandoned once
    their quiet time has passed at ``now``. Four queries (the zone, the counters, the carts not
    yet abandoned, the lift's pending carts)."""
    zone = store_zone(filters.store_id)
    before = filters.previous()
    rows = counter_rows(
        filters,
        _OVERVIEW_METRICS,
        start=before.start,
        bucket=f"(day >= '{filters.start.isoformat()}'::date)",
    )
    sums = Sums(rows, filters.channel)
    in_progress = {True: 0, False: 0}
    for quiet in not_yet_abandoned(filters, now):
        day = quiet.abandoned[0]
        if before.start <= day < filters.end:
            sums.subtract(p.ABANDONED, day >= filters.start, quiet.currency, 1, quiet.value)
        if quiet.started is not None and before.start <= quiet.started[0] < filters.end:
            sums.subtract(p.STARTED_ABANDONED, quiet.started[0] >= filters.start, "", 1, 0)
            in_progress[quiet.started[0] >= filters.start] += 1

    def counts(metric: str) -> Figure:
        return count_figure(sums.count(metric, True), sums.count(metric, False))

    def money(metric: str) -> Figure:
        return money_figure(sums.amounts(metric, True), sums.amounts(metric, False))

    def settled(current: bool) -> int:
        return sums.count(p.STARTED_ITEMS, current) - in_progress[current]

    def rate(current: bool) -> float | None:
        n = settled(current)
        return sums.count(p.STARTED_ABANDONED, current) / n if n > 0 else None

    # The lift counts only cohort carts whose conversion window has closed at ``now``.
    pending = lift_pending(filters, now, start=before.start)
    waiting = {(group, current): 0 for group in (p.TREATED, p.HOLDOUT) for current in (1, 0)}
    for row in pending:
        if row.metric == p.COHORT:
            waiting[(row.key, int(row.bucket))] += 1
    cohorts = [*rows, *pending]
    lift, n_t, n_h = lift_of(r for r in cohorts if r.bucket)
    lift_before, n_t0, n_h0 = lift_of(r for r in cohorts if not r.bucket)
    return Overview(
        filters=filters,
        previous_start=before.start,
        timezone=zone.key,
        carts_started=counts(p.STARTED),
        abandoned=counts(p.ABANDONED),
        abandonment_rate=rate_figure(rate(True), rate(False)),
        in_progress=count_figure(in_progress[True], in_progress[False]),
        settled=count_figure(settled(True), settled(False)),
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
        treated_pending=count_figure(waiting[(p.TREATED, 1)], waiting[(p.TREATED, 0)]),
        holdout_pending=count_figure(waiting[(p.HOLDOUT, 1)], waiting[(p.HOLDOUT, 0)]),
        conversion_lift=rate_figure(lift.absolute, lift_before.absolute),
        incremental_revenue=money_figure(_incremental(lift), _incremental(lift_before)),
        lift=lift,
        onsite_recovered=counts(p.ONSITE_RECOVERED),
        onsite_revenue=money(p.ONSITE_RECOVERED),
        onsite_discount_cost=money(p.ONSITE_DISCOUNT),
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
    rows = counter_rows(
        filters,
        _SERIES_METRICS,
        start=filters.start,
        bucket=f"{offset} * 24 + hour" if hourly else offset,
        hourly=hourly,
    )
    sums = Sums(rows, filters.channel)

    def bucket_of(day: date, hour: int) -> int:
        days = (day - filters.start).days
        return days * 24 + hour if hourly else days

    in_progress: defaultdict[int, int] = defaultdict(int)
    for quiet in not_yet_abandoned(filters, now):
        a_day, a_hour = quiet.abandoned
        if filters.start <= a_day < filters.end:
            sums.subtract(p.ABANDONED, bucket_of(a_day, a_hour), quiet.currency, 1, quiet.value)
        if quiet.started is not None and filters.start <= quiet.started[0] < filters.end:
            sums.subtract(p.STARTED_ABANDONED, bucket_of(*quiet.started), "", 1, 0)
            in_progress[bucket_of(*quiet.started)] += 1
    points = []
    day = filters.start
    while day < filters.end:
        for hour in range(24) if hourly else (0,):
            bucket = bucket_of(day, hour)
            settled = sums.count(p.STARTED_ITEMS, bucket) - in_progress[bucket]
            cohort_abandoned = sums.count(p.STARTED_ABANDONED, bucket)
            points.append(
                SeriesPoint(
                    start=datetime.combine(day, time(hour), tzinfo=zone),
                    carts_started=sums.count(p.STARTED, bucket),
                    abandoned=sums.count(p.ABANDONED, bucket),
                    abandonment_rate=cohort_abandoned / settled if settled > 0 else None,
                    started_in_progress=in_progress[bucket],
                    started_abandoned=cohort_abandoned,
                    started_settled=max(settled, 0),
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
    p.WAITING,
)


def funnel(filters: Filters) -> list[FunnelRow]:
    """Per campaign and tier: scheduled, sent, skipped (by reason), suppressed, deferred, failed
    (finally), cancelled, opened, clicked, converted and its revenue, in order of campaign and
    tier position."""
    rows = counter_rows(filters, _FUNNEL_METRICS, start=filters.start, bucket="campaign_id")
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
                waiting=counts[p.WAITING],
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
        else counter_rows(filters, _OFFER_METRICS, start=filters.start, bucket="0")
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
    exit-intent decision), per band of 0.1: the settled carts (24 hours passed since the scored
    moment at ``now``), their mean score (predicted abandonment) and the share of them without an
    order within 24 hours (observed), and the pending carts (scored less than 24 hours ago: not
    counted, whether or not they have ordered yet)."""
    from django.utils import timezone

    moment = now or timezone.now()
    rows = counter_rows(filters, (p.SCORE, p.SCORE_ORDERED), start=filters.start, bucket="0")
    carts: defaultdict[int, int] = defaultdict(int)
    micros: defaultdict[int, int] = defaultdict(int)
    ordered: defaultdict[int, int] = defaultdict(int)
    pending: defaultdict[int, int] = defaultdict(int)
    for row in rows:
        band = int(row.key)
        if row.metric == p.SCORE:
            carts[band] += row.count
            micros[band] += row.amount
        else:
            ordered[band] += row.count
    sql = """
        SELECT score, converted_at IS NOT NULL AND converted_at - scored_at <= %s
          FROM dashboards_cartfact
         WHERE store_id = %s AND scored_at > %s AND scored_day >= %s AND scored_day < %s
           AND score IS NOT NULL
    """
    params: list[Any] = [
        OBSERVATION_WINDOW,
        filters.store_id,
        moment - OBSERVATION_WINDOW,
        filters.start,
        filters.end,
    ]
    if filters.campaign_id is not None:
        sql += " AND campaign_id = %s"
        params.append(filters.campaign_id)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for score, in_window in cursor.fetchall():  # outcome not known yet: pending
            band = p.band_of(score)
            carts[band] -= 1
            micros[band] -= round(score * p.SCORE_MICROS)
            pending[band] += 1
            if in_window:
                ordered[band] -= 1
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
                pending=pending[band],
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
    for quiet in not_yet_abandoned(filters, now):
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


def store_currency(store_id: int) -> str:
    """The store's currency as its carts have it: the one of its most recently active cart with a
    currency ('' before any). For money figures with no amount in any currency."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT currency FROM dashboards_cartfact
             WHERE store_id = %s AND currency <> '' AND last_activity_at IS NOT NULL
             ORDER BY last_activity_at DESC LIMIT 1
            """,
            [store_id],
        )
        row = cursor.fetchone()
    return str(row[0]) if row else ""


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
