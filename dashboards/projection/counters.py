"""The counters of DailyCount: metric names, a batch's deltas (``Counters``) and what a cart's
row contributes (``contributions``). Pure: no ORM, no clock."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from dashboards import OBSERVATION_WINDOW
from dashboards.projection.row import as_int

if TYPE_CHECKING:
    from dashboards.projection.row import Fact

EMAIL_CHANNELS = ("email", "discount")
ONSITE = "onsite"
KEY_CHARS = 256  # DailyCount.key holds up to 300
_KEY_NAME_CHARS = 120  # a product name in a counter key (keeps the unique index small)

# Metrics. Cart counters (from ``contributions``) and event counters; "hourly" ones also have
# a row per local hour, for short time series.
STARTED = "started"
STARTED_ITEMS = "started_items"
STARTED_ABANDONED = "started_abandoned"
ABANDONED = "abandoned"
ORDERS = "orders"
RECOVERED = "recovered"
CAME_BACK = "came_back"
DISCOUNT = "discount"
LOST_SKU = "lost_sku"
LOST_CATEGORY = "lost_category"
COHORT = "cohort"
COHORT_CONVERTED = "cohort_converted"
SCORE = "score"
SCORE_ORDERED = "score_ordered"
SCHEDULED = "scheduled"
SENT = "sent"
SKIPPED = "skipped"
SUPPRESSED = "suppressed"
DEFERRED = "deferred"
FAILED = "failed"
CANCELLED = "cancelled"
OPENED = "opened"
CLICKED = "clicked"
OFFER_DECIDED = "offer_decided"
OFFER_NONE = "offer_none"
OFFER_SHOWN = "offer_shown"
OFFER_ACCEPTED = "offer_accepted"
OFFER_DISMISSED = "offer_dismissed"
EXIT_INTENT = "exit_intent"
WAITING = "waiting"  # steps scheduled and not finished yet, on the enrolment's day
ONSITE_RECOVERED = "onsite_recovered"  # orders credited to an accepted on-site offer (net)
ONSITE_DISCOUNT = "onsite_discount"  # their discount cost

HOLDOUT = "holdout"
TREATED = "treated"
SCORE_MICROS = 1_000_000  # scores are summed as integers (exact, so rebuild equals live)

STEP_METRICS = {
    "campaign.step_sent": SENT,
    "campaign.step_skipped": SKIPPED,
    "campaign.step_suppressed": SUPPRESSED,
    "campaign.step_deferred": DEFERRED,
    "campaign.step_failed": FAILED,
    "campaign.step_cancelled": CANCELLED,
    "campaign.email_opened": OPENED,
}
KEYED_BY_REASON = {SKIPPED, DEFERRED, CANCELLED}
# What ends a step (a failure only when final): the step is no longer waiting.
STEP_TERMINAL = {SENT, SKIPPED, SUPPRESSED, CANCELLED, FAILED}
REACTIONS = {
    "recovery.offer_shown": OFFER_SHOWN,
    "recovery.offer_accepted": OFFER_ACCEPTED,
    "recovery.offer_dismissed": OFFER_DISMISSED,
}

# (store, metric, hourly, day, hour, campaign, tier, channel, key, currency)
CounterKey = tuple[int, str, bool, date, int, int, int, str, str, str]
# The same without the store: what one cart contributes.
CartKey = tuple[str, bool, date, int, int, int, str, str, str]


class Counters:
    """Counter deltas of one batch, keyed by CounterKey: [count, amount, squares]."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: defaultdict[CounterKey, list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(
        self,
        store: int,
        metric: str,
        day: date,
        hour: int | None,
        *,
        campaign: int = 0,
        tier: int = 0,
        channel: str = "",
        key: str = "",
        currency: str = "",
        count: int = 1,
        amount: int = 0,
        squares: int = 0,
    ) -> None:
        """Add to the day's row and, with ``hour``, to that hour's row too."""
        row = self.rows[(store, metric, False, day, -1, campaign, tier, channel, key, currency)]
        row[0] += count
        row[1] += amount
        row[2] += squares
        if hour is not None:
            row = self.rows[
                (store, metric, True, day, hour, campaign, tier, channel, key, currency)
            ]
            row[0] += count
            row[1] += amount
            row[2] += squares

    def merge(self, store: int, contributions: Mapping[CartKey, list[int]], sign: int) -> None:
        for dims, (count, amount, squares) in contributions.items():
            row = self.rows[(store, *dims)]
            row[0] += sign * count
            row[1] += sign * amount
            row[2] += sign * squares


def band_of(score: float) -> int:
    """Score band 0-9: [0, 0.1), ..., [0.9, 1.0]."""
    return min(max(int(score * 10), 0), 9)


def line_value(line: Sequence[Any]) -> int:
    """Quantity x unit price of a stored line."""
    return as_int(line[2]) * as_int(line[3])


def _key_name(name: Any) -> str:
    return str(name or "").replace("\t", " ")[:_KEY_NAME_CHARS]


def sku_key(sku: str, name: str) -> str:
    return f"{sku}\t{_key_name(name)}"


def contributions(fact: Fact) -> dict[CartKey, list[int]]:
    """The cart counters this fact adds: (metric, hourly, day, hour, campaign, tier, channel,
    key, currency) -> [count, amount, squares]. A pure function of the row."""
    out: dict[CartKey, list[int]] = {}
    campaign = fact.campaign_id or 0
    currency = fact.currency

    def add(
        metric: str,
        day: date,
        hour: int | None,
        *,
        tier: int = 0,
        channel: str = "",
        key: str = "",
        cur: str = "",
        amount: int = 0,
        squares: int = 0,
        of: int | None = None,
    ) -> None:
        camp = campaign if of is None else of
        dims = (metric, False, day, -1, camp, tier, channel, key, cur)
        row = out.setdefault(dims, [0, 0, 0])
        row[0] += 1
        row[1] += amount
        row[2] += squares
        if hour is not None:
            dims = (metric, True, day, hour, camp, tier, channel, key, cur)
            row = out.setdefault(dims, [0, 0, 0])
            row[0] += 1
            row[1] += amount
            row[2] += squares

    if fact.started_day is not None:
        add(STARTED, fact.started_day, fact.started_hour)
        if fact.had_items:
            add(STARTED_ITEMS, fact.started_day, fact.started_hour)
            if fact.abandoned_at is not None:
                add(STARTED_ABANDONED, fact.started_day, fact.started_hour)
    if fact.abandoned_at is not None and fact.abandoned_day is not None:
        lines = fact.lines_abandoned()
        value = fact.abandoned_value if fact.abandoned_final else fact.value
        add(ABANDONED, fact.abandoned_day, fact.abandoned_hour, cur=currency, amount=value or 0)
        if fact.converted_at is None:
            for line in lines:
                lost = line_value(line)
                add(
                    LOST_SKU,
                    fact.abandoned_day,
                    None,
                    key=sku_key(line[0], line[1]),
                    cur=currency,
                    amount=lost,
                )
                add(
                    LOST_CATEGORY,
                    fact.abandoned_day,
                    None,
                    key=str(line[4] or ""),
                    cur=currency,
                    amount=lost,
                )
    if fact.converted_at is not None and fact.converted_day is not None:
        net = fact.net
        day, hour = fact.converted_day, fact.converted_hour
        add(ORDERS, day, hour, cur=currency, amount=net)
        if fact.recovered:
            add(
                RECOVERED,
                day,
                hour,
                tier=fact.credit_tier or 0,
                channel=fact.credit_channel,
                cur=currency,
                amount=net,
            )
        elif fact.abandoned_final:
            add(CAME_BACK, day, hour, cur=currency, amount=net)
        if fact.onsite_recovered:
            of, tier = fact.onsite_campaign or 0, fact.onsite_tier or 0
            add(
                ONSITE_RECOVERED,
                day,
                None,
                of=of,
                tier=tier,
                channel=ONSITE,
                cur=currency,
                amount=net,
            )
            add(
                ONSITE_DISCOUNT,
                day,
                None,
                of=of,
                tier=tier,
                channel=ONSITE,
                cur=currency,
                amount=fact.onsite_discount,
            )
    for tier, channel, scheduled in (fact.steps_open or {}).values():
        try:
            scheduled_day = date.fromisoformat(str(scheduled))
        except ValueError:
            continue
        add(WAITING, scheduled_day, None, tier=as_int(tier), channel=str(channel))
    if fact.redeemed_day is not None and fact.discount:
        add(
            DISCOUNT,
            fact.redeemed_day,
            fact.redeemed_hour,
            cur=fact.discount_currency or currency,
            amount=fact.discount,
        )
    if fact.enrolled_day is not None:
        itt = fact.net if fact.converted_in_window else 0
        group = HOLDOUT if fact.holdout else TREATED
        add(COHORT, fact.enrolled_day, None, key=group, cur=currency, amount=itt, squares=itt * itt)
        if fact.converted_in_window:
            add(COHORT_CONVERTED, fact.enrolled_day, None, key=group, cur=currency)
    if fact.scored_day is not None and fact.score is not None and fact.scored_at is not None:
        band = str(band_of(fact.score))
        add(SCORE, fact.scored_day, None, key=band, amount=round(fact.score * SCORE_MICROS))
        if (
            fact.converted_at is not None
            # A difference, not a sum: no overflow near the end of the calendar.
            and fact.converted_at - fact.scored_at <= OBSERVATION_WINDOW
        ):
            add(SCORE_ORDERED, fact.scored_day, None, key=band)
    return out
