"""What the dashboard selectors return: frozen dataclasses with ``as_dict()`` (JSON values; money
as ``{currency: minor units}``), and the filters they take."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from campaigns.attribution import Lift

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
    the period whose conversion window has closed (the others are ``treated_pending`` and
    ``holdout_pending``); ``conversion_lift`` and ``incremental_revenue`` repeat its estimates
    as figures (incremental revenue rounded to minor units; currencies without an estimate left
    out)."""

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
    # Carts started in the period (with items) whose abandonment window has not expired at the
    # moment of reading: neither abandoned nor not; the rest are settled (the rate's base).
    in_progress: Figure
    settled: Figure
    # Orders credited to an accepted on-site offer (docs/dashboards.md), their net revenue and
    # the offers' discount cost, on the order's day.
    onsite_recovered: Figure
    onsite_revenue: Figure
    onsite_discount_cost: Figure
    # Cohort carts whose conversion window is still open at the moment of reading: not in the
    # lift (nor in treated_carts / holdout_carts) until it closes, ordered or not.
    treated_pending: Figure
    holdout_pending: Figure


@dataclasses.dataclass(frozen=True, slots=True)
class SeriesPoint(_AsDict):
    start: datetime  # the local day's (or hour's) start, in the store's zone
    carts_started: int
    abandoned: int
    abandonment_rate: float | None  # started_abandoned / started_settled
    recovered: int
    came_back: int
    orders: int
    recovered_revenue: Money
    discount_cost: Money
    emails_sent: int
    offers_shown: int
    offers_accepted: int
    # The cohort of the carts (with items) started in this bucket: still in progress (their
    # abandonment window not expired), abandoned by now, and settled (the others).
    started_in_progress: int = 0
    started_abandoned: int = 0
    started_settled: int = 0


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
    # Steps scheduled in the period (enrolments) not finished at the moment of reading: not yet
    # due, due and queued, or deferred (docs/dashboards.md).
    waiting: int = 0


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
    """Carts scored in the period by score band. ``carts`` are the settled ones (24 hours have
    passed since the scored moment: their outcome is known); ``predicted`` and ``observed`` are
    over them only. ``pending``: scored less than 24 hours ago, outcome not known yet (whether or
    not they ordered since: counting early orders alone would bias the observed share down)."""

    band: int
    low: float
    high: float
    carts: int  # settled
    predicted: float | None  # mean score of the settled carts: predicted abandonment
    observed: float | None  # share of the settled carts without an order within 24 hours
    pending: int = 0


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
