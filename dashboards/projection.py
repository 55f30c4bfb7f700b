"""The ``dashboard`` projector: folds the event log into CartFact and DailyCount.

``apply(events)`` is set-based: one query loads the batch's carts, one pass in Python folds every
event into them, then two statements write the carts and the counters back. Counters come in two
kinds: event counters (a step sent, an offer shown: +1 on the event's local day) and cart
counters, which are a pure function of a cart's row (``contributions``): a batch adds the
difference between a cart's contributions after and before it, so a refund arriving weeks later
moves the recovered revenue of the order's day, and counters always equal what the rows say.

Local days and hours are the store's (``CampaignSettings.timezone``, UTC without one), computed
when a time is set and stored with it. A campaign's attribution window and tier delays are read
per batch; changing them (or a store's zone) applies to carts the projector touches afterwards:
rebuild to apply them to the past.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from django.db import connection

from carts import event_types
from carts.models import CartEvent
from dashboards import ABANDONMENT_WINDOW, OBSERVATION_WINDOW

NAME = "dashboard"

_SYSTEM_PREFIXES = ("campaign.", "recovery.")
# What counts as the shopper doing something (as carts/projections.py has it).
_ACTIVITY_PREFIXES = ("cart.", "page.", "checkout.", "coupon.", "shopper.", "order.placed")
EMAIL_CHANNELS = ("email", "discount")
ONSITE = "onsite"
DEFAULT_ATTRIBUTION_HOURS = 72
_KEY_NAME_CHARS = 120  # a product name in a counter key (keeps the unique index small)
KEY_CHARS = 256  # DailyCount.key holds up to 300

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

HOLDOUT = "holdout"
TREATED = "treated"
SCORE_MICROS = 1_000_000  # scores are summed as integers (exact, so rebuild equals live)

_STEP_METRICS = {
    "campaign.step_sent": SENT,
    "campaign.step_skipped": SKIPPED,
    "campaign.step_suppressed": SUPPRESSED,
    "campaign.step_deferred": DEFERRED,
    "campaign.step_failed": FAILED,
    "campaign.step_cancelled": CANCELLED,
    "campaign.email_opened": OPENED,
}
_KEYED_BY_REASON = {SKIPPED, DEFERRED, CANCELLED}
_REACTIONS = {
    "recovery.offer_shown": OFFER_SHOWN,
    "recovery.offer_accepted": OFFER_ACCEPTED,
    "recovery.offer_dismissed": OFFER_DISMISSED,
}

# (store, metric, hourly, day, hour, campaign, tier, channel, key, currency)
CounterKey = tuple[int, str, bool, date, int, int, int, str, str, str]


# -- time --------------------------------------------------------------------------------------


def zone_of(name: str | None) -> ZoneInfo:
    """The zone named, UTC when empty or unknown."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def store_zones(store_ids: Iterable[int]) -> dict[int, ZoneInfo]:
    """Each store's zone (one query)."""
    ids = sorted(set(store_ids))
    zones = dict.fromkeys(ids, ZoneInfo("UTC"))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT store_id, timezone FROM campaigns_campaignsettings WHERE store_id = ANY(%s)",
            [ids],
        )
        for store_id, name in cursor.fetchall():
            zones[store_id] = zone_of(name)
    return zones


def _local(at: datetime, zone: ZoneInfo) -> tuple[date, int]:
    t = at.astimezone(zone)
    return t.date(), t.hour


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _id(value: Any) -> int:
    """A database id from a payload (0 when missing or out of an integer column's range)."""
    number = _int(value)
    return number if 0 < number < 2**31 else 0


def _text(value: Any, length: int) -> str:
    """Text from a payload, cut to its column."""
    return str(value or "")[:length]


def _score(value: Any) -> float | None:
    """A probability from a payload, None unless a finite number (clamped to 0..1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(max(float(value), 0.0), 1.0)


# -- the cart row --------------------------------------------------------------------------------

# Column name -> PostgreSQL type, in table order for the loads and the upsert.
COLUMNS: dict[str, str] = {
    "store_id": "int",
    "cart": "text",
    "currency": "text",
    "started_at": "timestamptz",
    "started_day": "date",
    "started_hour": "int2",
    "last_activity_at": "timestamptz",
    "lines": "jsonb",
    "item_count": "int",
    "value": "int8",
    "peak_value": "int8",
    "had_items": "bool",
    "abandoned_at": "timestamptz",
    "abandoned_day": "date",
    "abandoned_hour": "int2",
    "abandoned_final": "bool",
    "abandoned_lines": "jsonb",
    "abandoned_value": "int8",
    "converted_at": "timestamptz",
    "converted_day": "date",
    "converted_hour": "int2",
    "order_total": "int8",
    "refunded": "int8",
    "discount": "int8",
    "discount_currency": "text",
    "redeemed_at": "timestamptz",
    "redeemed_day": "date",
    "redeemed_hour": "int2",
    "campaign_id": "int",
    "holdout": "bool",
    "enrolled_at": "timestamptz",
    "enrolled_abandoned_at": "timestamptz",
    "enrolled_day": "date",
    "touches": "jsonb",
    "last_touch_at": "timestamptz",
    "last_touch_tier": "int",
    "last_touch_channel": "text",
    "recovered": "bool",
    "credit_tier": "int",
    "credit_channel": "text",
    "converted_in_window": "bool",
    "score": "float8",
    "scored_at": "timestamptz",
    "scored_day": "date",
    "scored_by_enrolment": "bool",
    "exit_intents": "int",
    "offers_shown": "int",
    "offers_accepted": "int",
    "offers": "jsonb",
    "clicked": "jsonb",
}
_JSON = {name for name, kind in COLUMNS.items() if kind == "jsonb"}


class Fact:
    """A CartFact row in memory while a batch is folded into it."""

    __slots__ = tuple(COLUMNS)

    store_id: int
    cart: str
    currency: str
    started_at: datetime | None
    started_day: date | None
    started_hour: int | None
    last_activity_at: datetime | None
    lines: list[list[Any]]
    item_count: int
    value: int
    peak_value: int
    had_items: bool
    abandoned_at: datetime | None
    abandoned_day: date | None
    abandoned_hour: int | None
    abandoned_final: bool
    abandoned_lines: list[list[Any]] | None
    abandoned_value: int | None
    converted_at: datetime | None
    converted_day: date | None
    converted_hour: int | None
    order_total: int | None
    refunded: int
    discount: int
    discount_currency: str
    redeemed_at: datetime | None
    redeemed_day: date | None
    redeemed_hour: int | None
    campaign_id: int | None
    holdout: bool | None
    enrolled_at: datetime | None
    enrolled_abandoned_at: datetime | None
    enrolled_day: date | None
    touches: list[list[Any]]
    last_touch_at: datetime | None
    last_touch_tier: int | None
    last_touch_channel: str
    recovered: bool
    credit_tier: int | None
    credit_channel: str
    converted_in_window: bool
    score: float | None
    scored_at: datetime | None
    scored_day: date | None
    scored_by_enrolment: bool
    exit_intents: int
    offers_shown: int
    offers_accepted: int
    offers: dict[str, list[Any]]
    clicked: list[int]

    def __init__(self, store_id: int, cart: str) -> None:
        for name in COLUMNS:
            setattr(self, name, None)
        self.store_id, self.cart = store_id, cart
        self.currency = self.discount_currency = ""
        self.last_touch_channel = self.credit_channel = ""
        self.lines, self.touches, self.clicked, self.offers = [], [], [], {}
        self.item_count = self.value = self.peak_value = 0
        self.refunded = self.discount = 0
        self.exit_intents = self.offers_shown = self.offers_accepted = 0
        self.had_items = self.abandoned_final = self.recovered = False
        self.converted_in_window = self.scored_by_enrolment = False

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Fact:
        fact = cls.__new__(cls)
        for name, value in zip(COLUMNS, row, strict=True):
            if name in _JSON and isinstance(value, str):
                value = json.loads(value)
            setattr(fact, name, value)
        return fact

    @property
    def net(self) -> int:
        """order_total - discount - refunded (0 without an order)."""
        if self.converted_at is None or self.order_total is None:
            return 0
        return self.order_total - self.discount - self.refunded

    def lines_abandoned(self) -> list[list[Any]]:
        """The lines as they were at the (first) abandonment."""
        if self.abandoned_final and self.abandoned_lines is not None:
            return self.abandoned_lines
        return self.lines


# -- the fold ----------------------------------------------------------------------------------


def _set_lines(fact: Fact, lines: list[list[Any]]) -> None:
    fact.lines = lines
    fact.item_count = sum(_int(line[2]) for line in lines)
    fact.value = sum(_int(line[2]) * _int(line[3]) for line in lines)
    if fact.value > fact.peak_value:
        fact.peak_value = fact.value
    if fact.item_count > 0:
        fact.had_items = True


def _line_index(lines: list[list[Any]], sku: str) -> int:
    for i, line in enumerate(lines):
        if line[0] == sku:
            return i
    return -1


def _fold_items(fact: Fact, event_type: str, data: Mapping[str, Any]) -> None:
    """The cart's lines after an item event (as carts/projections.py folds them)."""
    sku = str(data.get("sku", ""))
    lines = [list(line) for line in fact.lines]
    i = _line_index(lines, sku)
    if event_type == "cart.item_added":
        quantity, price = _int(data.get("quantity")), _int(data.get("unit_price"))
        if i >= 0:
            lines[i][2] = _int(lines[i][2]) + quantity
            lines[i][3] = price
        else:
            name = str(data.get("name", ""))
            lines.append([sku, name, quantity, price, str(data.get("category", "") or "")])
        if not fact.currency and data.get("currency"):
            fact.currency = _text(data["currency"], 3)
    elif i >= 0:
        if event_type == "cart.item_removed":
            remaining = _int(lines[i][2]) - (_int(data.get("quantity")) or 10**9)
        else:
            remaining = _int(data.get("quantity"))
        if remaining <= 0:
            del lines[i]
        else:
            lines[i][2] = remaining
    _set_lines(fact, lines)


def _settle_abandonment(fact: Fact, at: datetime, zone: ZoneInfo) -> None:
    fact.abandoned_final = True
    fact.abandoned_at = at
    fact.abandoned_day, fact.abandoned_hour = _local(at, zone)
    fact.abandoned_lines = [list(line) for line in fact.lines]
    fact.abandoned_value = fact.value


def _prospective(fact: Fact) -> datetime | None:
    if fact.converted_at is None and fact.item_count > 0 and fact.last_activity_at is not None:
        return fact.last_activity_at + ABANDONMENT_WINDOW
    return None


class _Counters:
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

    def merge(self, store: int, contributions: Mapping[tuple, list[int]], sign: int) -> None:
        for dims, (count, amount, squares) in contributions.items():
            row = self.rows[(store, *dims)]  # type: ignore[index]
            row[0] += sign * count
            row[1] += sign * amount
            row[2] += sign * squares


def _campaign_of(data: Mapping[str, Any], fact: Fact) -> int:
    return _id(data.get("campaign")) or fact.campaign_id or 0


def fold(
    fact: Fact, event: CartEvent, data: Mapping[str, Any], zone: ZoneInfo, counters: _Counters
) -> None:
    """One event into its cart's fact; event counters into ``counters``."""
    event_type = event.type
    at = event.occurred_at
    store = fact.store_id
    if not event_type.startswith(_SYSTEM_PREFIXES):
        if fact.started_at is None:
            fact.started_at = at
            fact.started_day, fact.started_hour = _local(at, zone)
        if event_type.startswith(_ACTIVITY_PREFIXES):
            last = fact.last_activity_at
            if (
                last is not None
                and at - last >= ABANDONMENT_WINDOW
                and not fact.abandoned_final
                and fact.converted_at is None
                and fact.item_count > 0
            ):
                # The shopper was quiet for the window before this event: abandoned then.
                _settle_abandonment(fact, last + ABANDONMENT_WINDOW, zone)
            if last is None or at > last:
                fact.last_activity_at = at
        if event_type.startswith("cart.item_"):
            _fold_items(fact, event_type, data)
        elif event_type == "order.placed":
            if fact.converted_at is None:
                fact.converted_at = at
                fact.converted_day, fact.converted_hour = _local(at, zone)
                fact.order_total = _int(data.get("total"))
                if not fact.currency and data.get("currency"):
                    fact.currency = _text(data["currency"], 3)
        elif event_type == "order.refunded":
            fact.refunded += _int(data.get("amount"))
        elif event_type == "checkout.shipping_quoted":
            if not fact.currency and data.get("currency"):
                fact.currency = _text(data["currency"], 3)
        elif event_type == "shopper.exit_intent":
            fact.exit_intents += 1
            day, hour = _local(at, zone)
            counters.add(store, EXIT_INTENT, day, hour, campaign=fact.campaign_id or 0)
        return

    day, hour = _local(at, zone)
    if event_type == "campaign.enrolled":
        _fold_enrolled(fact, at, data, zone)
        for step in data.get("steps") or ():
            if isinstance(step, Mapping):
                counters.add(
                    store,
                    SCHEDULED,
                    day,
                    None,
                    campaign=_campaign_of(data, fact),
                    tier=_id(step.get("tier")),
                    channel=_text(step.get("channel"), 16),
                )
        return
    metric = _STEP_METRICS.get(event_type)
    if metric is not None or event_type == "campaign.link_clicked":
        campaign = _campaign_of(data, fact)
        tier = _id(data.get("tier"))
        channel = _text(data.get("channel"), 16)
        if event_type == "campaign.step_sent":
            fact.touches.append(
                [
                    at.isoformat(),
                    campaign,
                    tier,
                    _id(data.get("position")),
                    channel,
                    _id(data.get("step")),
                ]
            )
            if fact.last_touch_at is None or at >= fact.last_touch_at:
                fact.last_touch_at, fact.last_touch_tier, fact.last_touch_channel = (
                    at,
                    tier,
                    channel,
                )
        key = ""
        if metric in _KEYED_BY_REASON:
            key = _text(data.get("reason"), KEY_CHARS)
        elif metric == FAILED:
            key = "final" if data.get("final") else "retry"
        elif metric is None:  # a click: the first of each step counts
            step = _id(data.get("step"))
            if step in fact.clicked:
                return
            fact.clicked = [*fact.clicked, step]
            metric = CLICKED
        counters.add(
            store,
            metric,
            day,
            hour if metric == SENT else None,
            campaign=campaign,
            tier=tier,
            channel=channel,
            key=key,
        )
        return
    if event_type == "campaign.coupon_redeemed":
        applied = data.get("discount_applied")
        fact.discount = _int(applied) if applied is not None else 0
        fact.discount_currency = _text(data.get("currency"), 3)
        fact.redeemed_at = at
        fact.redeemed_day, fact.redeemed_hour = day, hour
        return
    if event_type == "recovery.offer_decided":
        campaign = _id(data.get("campaign"))
        tier = _id(data.get("tier"))
        score = _score(data.get("score"))
        if "exit_event" in data and score is not None and not fact.scored_by_enrolment:
            fact.score, fact.scored_at, fact.scored_day = score, at, day
        offer = data.get("offer")
        if data.get("decision") == "offer" and isinstance(offer, Mapping):
            kind = _text(offer.get("kind"), KEY_CHARS)
            fact.offers = {**fact.offers, str(offer.get("id", "")): [kind, campaign, tier]}
            counters.add(
                store,
                OFFER_DECIDED,
                day,
                None,
                campaign=campaign,
                tier=tier,
                channel=ONSITE,
                key=kind,
            )
        else:
            counters.add(
                store,
                OFFER_NONE,
                day,
                None,
                campaign=campaign,
                tier=tier,
                key=_text(data.get("reason"), KEY_CHARS),
            )
        return
    reaction = _REACTIONS.get(event_type)
    if reaction is not None:
        kind, campaign, tier = fact.offers.get(str(data.get("offer_id", "")), ["", 0, 0])
        if reaction == OFFER_SHOWN:
            fact.offers_shown += 1
        elif reaction == OFFER_ACCEPTED:
            fact.offers_accepted += 1
        counters.add(
            store,
            reaction,
            day,
            hour if reaction != OFFER_DISMISSED else None,
            campaign=campaign,
            tier=tier,
            channel=ONSITE,
            key=kind,
        )


def _fold_enrolled(fact: Fact, at: datetime, data: Mapping[str, Any], zone: ZoneInfo) -> None:
    fact.campaign_id = _id(data.get("campaign")) or None
    fact.holdout = bool(data.get("holdout"))
    fact.enrolled_at = at
    abandoned = _parse_time(data.get("abandoned_at")) or at
    fact.enrolled_abandoned_at = abandoned
    fact.enrolled_day = _local(abandoned, zone)[0]
    score = _score(data.get("score"))
    if score is not None:
        fact.score, fact.scored_at, fact.scored_day = score, at, _local(at, zone)[0]
        fact.scored_by_enrolment = True
    # The campaign judged the cart abandoned: it is, at the earlier of its abandonment time and
    # ours (so every recovered cart is an abandoned one).
    if fact.converted_at is not None and fact.converted_at <= abandoned:
        return  # enrolled on a stale view of a cart that had ordered: not abandoned
    if not fact.abandoned_final:
        prospective = _prospective(fact)
        when = min(abandoned, prospective) if prospective is not None else abandoned
        _settle_abandonment(fact, when, zone)
    elif fact.abandoned_at is not None and abandoned < fact.abandoned_at:
        fact.abandoned_at = abandoned
        fact.abandoned_day, fact.abandoned_hour = _local(abandoned, zone)


def derive(fact: Fact, windows: Mapping[int, tuple[int, int]], zone: ZoneInfo) -> None:
    """What follows from the fact and its campaign's windows: the prospective abandonment, whether
    its order was recovered (and by which touch), whether it converted within the lift window.

    ``windows``: campaign id -> (attribution hours, largest tier delay in minutes)."""
    if not fact.abandoned_final:
        prospective = _prospective(fact)
        if prospective != fact.abandoned_at:
            fact.abandoned_at = prospective
            fact.abandoned_day, fact.abandoned_hour = (
                _local(prospective, zone) if prospective is not None else (None, None)
            )
    hours, delay = windows.get(fact.campaign_id or 0, (DEFAULT_ATTRIBUTION_HOURS, 0))
    fact.recovered, fact.credit_tier, fact.credit_channel = False, None, ""
    fact.converted_in_window = False
    converted = fact.converted_at
    if converted is None or fact.order_total is None or fact.campaign_id is None:
        return
    abandoned = fact.enrolled_abandoned_at
    if abandoned is not None:
        window = timedelta(hours=hours, minutes=delay)
        fact.converted_in_window = abandoned < converted <= abandoned + window
    if fact.holdout:
        return
    # The last touch strictly before the order gets the credit (campaigns.attribution).
    best: tuple[datetime, int, int] | None = None
    credit: list[Any] | None = None
    for touch in fact.touches:
        touched_at = _parse_time(touch[0])
        if touched_at is None or touched_at >= converted:
            continue
        rank = (touched_at, _int(touch[3]), _int(touch[5]))
        if best is None or rank > best:
            best, credit = rank, touch
    if best is not None and credit is not None and converted - best[0] <= timedelta(hours=hours):
        fact.recovered = True
        fact.credit_tier, fact.credit_channel = _int(credit[2]), str(credit[4])


def band_of(score: float) -> int:
    """Score band 0-9: [0, 0.1), ..., [0.9, 1.0]."""
    return min(max(int(score * 10), 0), 9)


def line_value(line: Sequence[Any]) -> int:
    """Quantity x unit price of a stored line."""
    return _int(line[2]) * _int(line[3])


def _key_name(name: Any) -> str:
    return str(name or "").replace("\t", " ")[:_KEY_NAME_CHARS]


def sku_key(sku: str, name: str) -> str:
    return f"{sku}\t{_key_name(name)}"


def contributions(fact: Fact) -> dict[tuple, list[int]]:
    """The cart counters this fact adds: (metric, hourly, day, hour, campaign, tier, channel,
    key, currency) -> [count, amount, squares]. A pure function of the row."""
    out: dict[tuple, list[int]] = {}
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
    ) -> None:
        dims = (metric, False, day, -1, campaign, tier, channel, key, cur)
        row = out.setdefault(dims, [0, 0, 0])
        row[0] += 1
        row[1] += amount
        row[2] += squares
        if hour is not None:
            dims = (metric, True, day, hour, campaign, tier, channel, key, cur)
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
            and fact.converted_at <= fact.scored_at + OBSERVATION_WINDOW
        ):
            add(SCORE_ORDERED, fact.scored_day, None, key=band)
    return out


# -- storage -----------------------------------------------------------------------------------

_LOAD = f"SELECT {', '.join(COLUMNS)} FROM dashboards_cartfact WHERE cart = ANY(%s::text[])"

_UPSERT_FACTS = (
    f"INSERT INTO dashboards_cartfact ({', '.join(COLUMNS)}) "
    f"SELECT {', '.join(f'{n}::jsonb' if n in _JSON else n for n in COLUMNS)} FROM unnest("
    + ", ".join(f"%b::{'text' if t == 'jsonb' else t}[]" for t in COLUMNS.values())
    + f") AS v({', '.join(COLUMNS)}) "
    "ON CONFLICT (cart, store_id) DO UPDATE SET "
    + ", ".join(f"{n} = EXCLUDED.{n}" for n in COLUMNS if n not in ("store_id", "cart"))
)

_UPSERT_COUNTS = """
    INSERT INTO dashboards_dailycount AS d
        (store_id, metric, hourly, day, hour, campaign_id, tier_id, channel, key, currency,
         count, amount, squares)
    SELECT * FROM unnest(%b::int[], %b::text[], %b::bool[], %b::date[], %b::int2[], %b::int[],
                         %b::int[], %b::text[], %b::text[], %b::text[], %b::int8[], %b::int8[],
                         %b::numeric[])
    ON CONFLICT (store_id, hourly, metric, day, hour, campaign_id, tier_id, channel, key, currency)
    DO UPDATE SET count = d.count + EXCLUDED.count, amount = d.amount + EXCLUDED.amount,
                  squares = d.squares + EXCLUDED.squares
"""


def _campaign_windows(campaign_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    ids = sorted(set(campaign_ids))
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.id, c.attribution_hours, COALESCE(MAX(t.delay_minutes), 0)
              FROM campaigns_campaign c LEFT JOIN campaigns_tier t ON t.campaign_id = c.id
             WHERE c.id = ANY(%s) GROUP BY c.id
            """,
            [ids],
        )
        return {k: (hours, delay) for k, hours, delay in cursor.fetchall()}


def _load(keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Fact]:
    wanted = set(keys)
    facts: dict[tuple[int, str], Fact] = {}
    with connection.cursor() as cursor:
        cursor.execute(_LOAD, [sorted({cart for _, cart in wanted})])
        for row in cursor.fetchall():
            key = (row[0], row[1])
            if key in wanted:  # the same token in another store is another cart
                facts[key] = Fact.from_row(row)
    return facts


def _column(facts: Sequence[Fact], name: str) -> list[Any]:
    if name in _JSON:
        return [
            None if (v := getattr(f, name)) is None else json.dumps(v, separators=(",", ":"))
            for f in facts
        ]
    return [getattr(f, name) for f in facts]


def _write(facts: Sequence[Fact], counters: _Counters) -> None:
    rows = [(k, v) for k, v in counters.rows.items() if v != [0, 0, 0]]
    connection.ensure_connection()
    # Raw psycopg with binary parameters: Django's client-side binding quotes every array
    # element as text (with regular expressions), which cost more than the fold itself.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        if facts:
            cursor.execute(_UPSERT_FACTS, [_column(facts, name) for name in COLUMNS])
        if rows:
            columns: list[list[Any]] = [[k[i] for k, _ in rows] for i in range(10)]
            columns += [[v[0] for _, v in rows], [v[1] for _, v in rows]]
            columns.append([Decimal(v[2]) for _, v in rows])
            cursor.execute(_UPSERT_COUNTS, columns)


def apply(events: Sequence[CartEvent]) -> None:
    """Fold a batch of events (in position order) into CartFact and DailyCount."""
    if not events:
        return
    keys = {(e.store_id, e.cart) for e in events}
    zones = store_zones(store for store, _ in keys)
    facts = _load(keys)
    counters = _Counters()
    for key, fact in facts.items():
        counters.merge(key[0], contributions(fact), -1)
    registry = event_types.REGISTRY
    for event in events:
        key = (event.store_id, event.cart)
        fact = facts.get(key) or facts.setdefault(key, Fact(event.store_id, event.cart))
        data = event.data if isinstance(event.data, Mapping) else {}
        known = registry.get(event.type)
        if known is not None and event.schema_version < known.version:
            data = event_types.upcast(event.type, event.schema_version, dict(data))
        fold(fact, event, data, zones[event.store_id], counters)
    windows = _campaign_windows(f.campaign_id for f in facts.values() if f.campaign_id)
    for key, fact in facts.items():
        derive(fact, windows, zones[key[0]])
        counters.merge(key[0], contributions(fact), +1)
    _write(list(facts.values()), counters)


def reset() -> None:
    """Empty both read models (readers keep the old rows until the rebuild commits)."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dashboards_dailycount")
        cursor.execute("DELETE FROM dashboards_cartfact")
