"""Reading the counters (DailyCount) and the few cart rows the moment of reading settles."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection

from campaigns import stats
from campaigns.attribution import INSUFFICIENT, IncrementalRevenue, Lift, lift_from_counts
from dashboards import ABANDONMENT_WINDOW, projection
from dashboards.projection import counters as p
from dashboards.projection.fold import DEFAULT_ATTRIBUTION_HOURS
from dashboards.selectors.results import Filters, Money

# -- reading the counters ----------------------------------------------------------------------


def store_zone(store_id: int) -> ZoneInfo:
    return projection.store_zones([store_id])[store_id]


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    metric: str
    bucket: Any
    tier_id: int
    channel: str
    key: str
    currency: str
    count: int
    amount: int
    squares: int


def counter_rows(
    filters: Filters,
    metrics: Sequence[str],
    *,
    start: date,
    bucket: str,
    hourly: bool = False,
) -> list[Row]:
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
            Row(m, b, t, ch, k, cur, int(n), int(a), int(s))
            for m, b, t, ch, k, cur, n, a, s in cursor.fetchall()
        ]


def channel_ok(metric: str, channel: str, wanted: str | None) -> bool:
    """Which counters a channel filter keeps: those with a channel (touches, sends, offers)."""
    if metric == p.SENT and channel not in p.EMAIL_CHANNELS:
        return False
    if wanted is None:
        return True
    if metric in (
        p.RECOVERED,
        p.SENT,
        p.OFFER_SHOWN,
        p.OFFER_ACCEPTED,
        p.ONSITE_RECOVERED,
        p.ONSITE_DISCOUNT,
    ):
        return channel == wanted
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Quiet:
    """A cart whose prospective abandonment is still ahead at the moment of reading."""

    started: tuple[date, int] | None
    abandoned: tuple[date, int]
    currency: str
    value: int
    lines: list[list[Any]]


def not_yet_abandoned(filters: Filters, now: datetime) -> list[Quiet]:
    """Carts counted as abandoned by the counters whose abandonment time is after ``now``: they
    were active in the last half hour (or have future times). Not enrolled, so none for a
    campaign. A prospective abandonment is last activity + the window, so these are found through
    the live carts' index (store, last activity)."""
    if filters.campaign_id is not None:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT started_day, started_hour, had_items, abandoned_day, abandoned_hour,
                   currency, value, lines
              FROM dashboards_cartfact
             WHERE store_id = %s AND last_activity_at > %s
               AND NOT abandoned_final AND abandoned_at > %s
            """,
            [filters.store_id, now - ABANDONMENT_WINDOW, now],
        )
        rows = cursor.fetchall()
    out = []
    for s_day, s_hour, had_items, a_day, a_hour, currency, value, lines in rows:
        started = (s_day, s_hour) if s_day is not None and had_items else None
        if isinstance(lines, str):
            lines = json.loads(lines)
        out.append(Quiet(started, (a_day, a_hour), currency, value, lines))
    return out


# Cohort carts whose conversion window (the campaign's attribution hours plus its largest tier
# delay, as the projector judges converted_in_window) is still open at the moment of reading. Found
# through the enrolments' (store, abandoned_at) index: no window is longer than the store's
# longest (72 hours for a campaign that is gone, as the projector has it).
_LIFT_PENDING = """
    WITH windows AS (
        SELECT c.id, make_interval(hours => c.attribution_hours,
                                   mins => COALESCE(MAX(t.delay_minutes), 0)) AS span
          FROM campaigns_campaign c LEFT JOIN campaigns_tier t ON t.campaign_id = c.id
         WHERE c.store_id = %(store)s GROUP BY c.id
    )
    SELECT f.enrolled_day, f.holdout, f.currency, f.converted_in_window,
           CASE WHEN f.converted_at IS NOT NULL AND f.order_total IS NOT NULL
                THEN f.order_total - f.discount - f.refunded ELSE 0 END
      FROM campaigns_enrollment e
      JOIN dashboards_cartfact f ON f.cart = e.cart AND f.store_id = e.store_id
      LEFT JOIN windows w ON w.id = f.campaign_id
     WHERE e.store_id = %(store)s
       AND e.abandoned_at >= %(now)s - GREATEST(
               (SELECT MAX(span) FROM windows), make_interval(hours => %(default)s))
       AND f.enrolled_day >= %(start)s AND f.enrolled_day < %(end)s
       AND f.enrolled_abandoned_at IS NOT NULL
       AND %(now)s - f.enrolled_abandoned_at
           <= COALESCE(w.span, make_interval(hours => %(default)s))
"""


def lift_pending(filters: Filters, now: datetime, *, start: date) -> list[Row]:
    """The cohort carts enrolled from ``start`` to filters.end whose conversion window is still
    open at ``now``, as counters to take off the cohorts (count -1, their net and squared net
    negated; bucket: enrolled in the period (True) or the previous one). Their outcome is not
    known yet, ordered or not: counting the early orders alone would overstate conversion,
    counting the others as not converted would understate it."""
    sql = _LIFT_PENDING
    params: dict[str, Any] = {
        "store": filters.store_id,
        "now": now,
        "default": DEFAULT_ATTRIBUTION_HOURS,
        "start": start,
        "end": filters.end,
    }
    if filters.campaign_id is not None:
        sql += " AND f.campaign_id = %(campaign)s"
        params["campaign"] = filters.campaign_id
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = cursor.fetchall()
    out = []
    for day, holdout, currency, converted, net in found:
        group = p.HOLDOUT if holdout else p.TREATED
        itt = int(net) if converted else 0
        current = day >= filters.start
        out.append(Row(p.COHORT, current, 0, "", group, currency, -1, -itt, -itt * itt))
        if converted:
            out.append(Row(p.COHORT_CONVERTED, current, 0, "", group, currency, -1, 0, 0))
    return out


class Sums:
    """Counter sums by (metric, bucket) with the channel filter applied."""

    def __init__(self, rows: Iterable[Row], channel: str | None) -> None:
        self.counts: defaultdict[tuple[str, Any], int] = defaultdict(int)
        # (metric, bucket) -> currency -> [count, amount]
        self.money: defaultdict[tuple[str, Any], defaultdict[str, list[int]]] = defaultdict(
            lambda: defaultdict(lambda: [0, 0])
        )
        for row in rows:
            if not channel_ok(row.metric, row.channel, channel):
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


def lift_of(rows: Iterable[Row]) -> tuple[Lift, int, int]:
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
        incremental_revenue_of(c, money.get((p.TREATED, c)), money.get((p.HOLDOUT, c)))
        for c in currencies
    )
    lift = lift_from_counts(x_t=x_t, n_t=n_t, x_h=x_h, n_h=n_h, revenue=revenue)
    return lift, n_t, n_h


def sample_of(acc: list[int] | None) -> stats.Sample:
    if not acc or acc[0] <= 0:
        return stats.Sample(n=0, mean=None, variance=None)
    count, total, squares = acc
    mean = total / count
    if count == 1:
        return stats.Sample(n=1, mean=mean, variance=None)
    variance = Fraction(count * squares - total * total, count * (count - 1))
    return stats.Sample(n=count, mean=mean, variance=float(variance))


def incremental_revenue_of(
    currency: str, treated: list[int] | None, holdout: list[int] | None
) -> IncrementalRevenue:
    t, h = sample_of(treated), sample_of(holdout)
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
