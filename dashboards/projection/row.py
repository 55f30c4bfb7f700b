"""The dashboards' cart row in memory (``Fact``, one CartFact row) and reading payload values
into it. Pure: no ORM, no clock."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from carts.validation import MAX_MONEY


class Unrepresentable(ValueError):
    """A value of an event that the read model cannot hold: a time too near either end of the
    calendar, an amount past MAX_AMOUNT. The projector dead-letters the event (docs/operations.md)
    instead of failing later, deep in a computation or in the database."""


# The times of events the read model holds: clear of either end of Python's calendar, so that
# the times computed from them (the abandonment and observation windows: at most a day later, up
# to COMPUTABLE) have a local time in any zone (offsets are under a day).
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
COMPUTABLE = LATEST + timedelta(days=1)
# Amounts of one cart (value, order total, refunds, discount), in minor units: a thousand times
# the largest amount one field of an event may carry. The int8 columns hold over 9,000 of these;
# the counters that sum them over carts are numeric.
MAX_AMOUNT = 1000 * MAX_MONEY
MAX_COUNT = 2**31 - 1  # item counts (an int column)

# -- time and payload values --------------------------------------------------------------------


def in_range(at: datetime, what: str, latest: datetime = LATEST) -> datetime:
    """``at``, or Unrepresentable when it is outside EARLIEST..``latest``."""
    if not EARLIEST <= at <= latest:
        raise Unrepresentable(
            f"{what} out of range: {at.isoformat()} (the dashboards hold "
            f"{EARLIEST.isoformat()} to {latest.isoformat()})"
        )
    return at


def plus(at: datetime, delta: timedelta, what: str) -> datetime:
    """``at + delta``, or Unrepresentable (never OverflowError) past COMPUTABLE."""
    try:
        return in_range(at + delta, what, COMPUTABLE)
    except OverflowError:
        raise Unrepresentable(f"{what} out of range: {at.isoformat()} + {delta}") from None


def amount_in_range(value: int, what: str) -> int:
    """``value``, or Unrepresentable when its magnitude exceeds MAX_AMOUNT."""
    if not -MAX_AMOUNT <= value <= MAX_AMOUNT:
        raise Unrepresentable(f"{what} out of range: {value} (at most {MAX_AMOUNT} minor units)")
    return value


def zone_of(name: str | None) -> ZoneInfo:
    """The zone named, UTC when empty or unknown."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local(at: datetime, zone: ZoneInfo) -> tuple[date, int]:
    """The local day and hour of ``at`` in ``zone`` (Unrepresentable outside
    EARLIEST..COMPUTABLE, where the conversion could overflow)."""
    t = in_range(at, "time", COMPUTABLE).astimezone(zone)
    return t.date(), t.hour


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time from a payload (UTC when naive), None when it is not one."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def as_int(value: Any, default: int = 0) -> int:
    """An integer from a payload, ``default`` when it is not one."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def as_id(value: Any) -> int:
    """A database id from a payload (0 when missing or out of an integer column's range)."""
    number = as_int(value)
    return number if 0 < number < 2**31 else 0


def as_text(value: Any, length: int) -> str:
    """Text from a payload, cut to its column."""
    return str(value or "")[:length]


def as_score(value: Any) -> float | None:
    """A probability from a payload, None unless a finite number (clamped to 0..1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(max(float(value), 0.0), 1.0)


# -- the cart row ------------------------------------------------------------------------------

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
    "steps_open": "jsonb",
    "redeemed_code": "text",
    "onsite_recovered": "bool",
    "onsite_campaign": "int",
    "onsite_tier": "int",
    "onsite_discount": "int8",
}
JSON_COLUMNS = {name for name, kind in COLUMNS.items() if kind == "jsonb"}


class Fact:
    """A CartFact row in memory while a batch is folded into it.

    Its lines are kept by SKU while item events are folded (``line``, ``line_append``,
    ``line_drop``: each costs the same whatever the cart's line count), and become the list of
    the ``lines`` column again when it is read: one copy per batch, not one per event."""

    # ``lines`` is a property over ``_lines`` (the column's list, stale after a removal until it
    # is read) and ``_by_sku`` (the same line objects by SKU, built on the first item event).
    __slots__ = (*(name for name in COLUMNS if name != "lines"), "_lines", "_by_sku", "_stale")

    store_id: int
    cart: str
    currency: str
    started_at: datetime | None
    started_day: date | None
    started_hour: int | None
    last_activity_at: datetime | None
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
    steps_open: dict[str, list[Any]]
    redeemed_code: str
    onsite_recovered: bool
    onsite_campaign: int | None
    onsite_tier: int | None
    onsite_discount: int
    _lines: list[list[Any]]
    _by_sku: dict[str | tuple[str, int], list[Any]] | None
    _stale: bool

    def __init__(self, store_id: int, cart: str) -> None:
        for name in COLUMNS:
            setattr(self, name, None)
        self.store_id, self.cart = store_id, cart
        self.currency = self.discount_currency = self.redeemed_code = ""
        self.last_touch_channel = self.credit_channel = ""
        self.lines, self.touches, self.clicked, self.offers = [], [], [], {}
        self.steps_open = {}
        self.item_count = self.value = self.peak_value = 0
        self.refunded = self.discount = self.onsite_discount = 0
        self.exit_intents = self.offers_shown = self.offers_accepted = 0
        self.had_items = self.abandoned_final = self.recovered = self.onsite_recovered = False
        self.converted_in_window = self.scored_by_enrolment = False

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Fact:
        fact = cls.__new__(cls)
        for name, value in zip(COLUMNS, row, strict=True):
            if name in JSON_COLUMNS and isinstance(value, str):
                value = json.loads(value)
            setattr(fact, name, value)
        return fact

    @property
    def lines(self) -> list[list[Any]]:
        """The cart's lines now, in the order they were added (a line removed and added again
        comes last): [[sku, name, quantity, unit_price, category], ...]. Refilled from the SKU
        index (one copy, into the same list) only when read after a line was dropped."""
        if self._stale and self._by_sku is not None:
            self._lines[:] = self._by_sku.values()
            self._stale = False
        return self._lines

    @lines.setter
    def lines(self, value: list[list[Any]] | None) -> None:
        self._lines, self._by_sku, self._stale = value if value is not None else [], None, False

    def _index(self) -> dict[str | tuple[str, int], list[Any]]:
        index = self._by_sku
        if index is None:
            index = {}
            for i, line in enumerate(self._lines):
                sku = str(line[0])
                # A SKU found twice (no fold writes that) keeps its first line as the cart's,
                # as carts/projections.py finds it; the others stay, untouched, in their place.
                index[(sku, i) if sku in index else sku] = line
            self._by_sku = index
        return index

    def line(self, sku: str) -> list[Any] | None:
        """The line of ``sku``, None when the cart has none."""
        return self._index().get(sku)

    def line_append(self, line: list[Any]) -> None:
        """Add a line for a SKU the cart has none of, at the end."""
        self._index()[str(line[0])] = line
        if not self._stale:
            self._lines.append(line)

    def line_drop(self, sku: str) -> None:
        """Remove the line of ``sku`` (which the cart has)."""
        del self._index()[sku]
        self._stale = True  # until read again

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
