"""Attribution and incremental lift of recovery campaigns (docs/attribution.md).

Two measures side by side:

* **attributed** (treated carts only): a cart is *recovered* when its order follows one of its
  touches (a sent step) within the campaign's attribution window; its revenue counts net of the
  discount and of refunds, per currency, and the last touch before the order gets the credit.
* **incremental** (intention to treat, both groups measured the same way): cohort carts convert
  when the order comes within the campaign's conversion window of the abandonment, whatever was
  sent; treated versus holdout conversion and net revenue per cart give the lift with 95%
  intervals (campaigns/stats.py).

``attribution_summary`` reads the cohort in two queries; everything after that is the pure fold
``summarise`` over ``CohortCart`` values, testable without a database.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.db import connection

from campaigns import events, stats
from campaigns.models import Step

INSUFFICIENT = "insufficient data"


# -- the cohort, as plain values ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Touch:
    """A sent step: when it was sent (``finished_at``), from which tier, over which channel."""

    at: datetime
    campaign_id: int
    tier_id: int
    position: int
    channel: str
    step_id: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class CohortCart:
    """One enrolled cart with what attribution needs of its state, coupon and campaign."""

    enrollment_id: int
    campaign_id: int
    holdout: bool
    abandoned_at: datetime
    currency: str
    converted_at: datetime | None
    order_total: int | None
    refunded: int
    discount: int  # the redeemed coupon's discount_applied; 0 without one
    attribution_window: timedelta  # Campaign.attribution_hours
    conversion_window: timedelta  # attribution_hours + the campaign's largest tier delay
    touches: tuple[Touch, ...] = ()

    @property
    def ordered(self) -> bool:
        return self.converted_at is not None and self.order_total is not None

    @property
    def net(self) -> int:
        """order_total - discount - refunded for an ordered cart, else 0 (minor units)."""
        if not self.ordered:
            return 0
        assert self.order_total is not None
        return self.order_total - self.discount - self.refunded


def recovering_touch(cart: CohortCart) -> Touch | None:
    """The touch credited with the cart's order, or None when the cart is not recovered.

    That is the last touch strictly before the order, provided the order came no later than the
    attribution window after it (an earlier touch is further away, so it cannot qualify when the
    last one does not). Holdout carts are never recovered."""
    if cart.holdout or cart.converted_at is None or cart.order_total is None:
        return None
    before = [t for t in cart.touches if t.at < cart.converted_at]
    if not before:
        return None
    last = max(before, key=lambda t: (t.at, t.position, t.step_id))
    return last if cart.converted_at - last.at <= cart.attribution_window else None


def converted_in_window(cart: CohortCart) -> bool:
    """The intention-to-treat outcome: an order after the abandonment and no later than the
    conversion window after it, in either group, whatever was sent."""
    if cart.converted_at is None or cart.order_total is None:
        return False
    return cart.abandoned_at < cart.converted_at <= cart.abandoned_at + cart.conversion_window


# -- the result ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _AsDict:
    """``as_dict`` for the result dataclasses below."""

    __slots__ = ()
    if TYPE_CHECKING:
        __dataclass_fields__: ClassVar[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values: tuples become lists, datetimes ISO 8601 strings."""
        result: dict[str, Any] = _plain(dataclasses.asdict(self))
        return result


@dataclasses.dataclass(frozen=True, slots=True)
class RevenueByCurrency(_AsDict):
    """Orders in one currency, in minor units: net = gross - discounts - refunds."""

    currency: str
    orders: int
    gross: int
    discounts: int
    refunds: int
    net: int


@dataclasses.dataclass(frozen=True, slots=True)
class GroupFigures(_AsDict):
    """One arm of the cohort: its carts, its in-window conversions (intention to treat) and the
    revenue of those conversions per currency."""

    carts: int
    conversions: int
    conversion_rate: float | None  # None for an empty group
    revenue: tuple[RevenueByCurrency, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelCount(_AsDict):
    channel: str
    carts: int


@dataclasses.dataclass(frozen=True, slots=True)
class TierCount(_AsDict):
    campaign_id: int
    tier_id: int
    position: int
    channel: str
    carts: int


@dataclasses.dataclass(frozen=True, slots=True)
class IncrementalRevenue(_AsDict):
    """(mean net per treated cart - mean net per holdout cart) x treated carts, in one currency,
    with a 95% normal interval from the two groups' sample variances. Means and amounts are minor
    units (floats: a mean is rarely whole). None fields: see ``note``."""

    currency: str
    treated_carts: int
    holdout_carts: int
    treated_mean_net: float | None
    holdout_mean_net: float | None
    per_cart: float | None
    per_cart_low: float | None
    per_cart_high: float | None
    incremental: float | None
    low: float | None
    high: float | None
    note: str


@dataclasses.dataclass(frozen=True, slots=True)
class Lift(_AsDict):
    """Treated versus holdout conversion (intention to treat) with Newcombe's hybrid score
    interval for the difference; incremental conversions = (p_t - p_h) x n_t. The fields are None
    and ``note`` says why when a group is empty (relative: also when p_h is 0)."""

    treated_rate: float | None
    holdout_rate: float | None
    absolute: float | None
    absolute_low: float | None
    absolute_high: float | None
    relative: float | None
    incremental_conversions: float | None
    incremental_conversions_low: float | None
    incremental_conversions_high: float | None
    incremental_revenue: tuple[IncrementalRevenue, ...]
    confidence: float
    method: str
    note: str


@dataclasses.dataclass(frozen=True, slots=True)
class Attribution(_AsDict):
    """What a store's campaigns recovered and added for carts abandoned in [start, end)."""

    store_id: int
    start: datetime
    end: datetime
    campaign_id: int | None
    treated: GroupFigures
    holdout: GroupFigures
    touches: int  # sent steps of treated cohort carts
    touched_carts: int  # treated cohort carts with at least one touch
    recovered_carts: int
    recovered_by_channel: tuple[ChannelCount, ...]  # of the crediting (last) touch
    recovered_by_tier: tuple[TierCount, ...]
    revenue: tuple[RevenueByCurrency, ...]  # of the recovered carts
    lift: Lift


# -- the fold -----------------------------------------------------------------------------------


def _revenue(carts: Iterable[CohortCart]) -> tuple[RevenueByCurrency, ...]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for cart in carts:
        assert cart.order_total is not None
        row = sums[cart.currency]
        row[0] += 1
        row[1] += cart.order_total
        row[2] += cart.discount
        row[3] += cart.refunded
    return tuple(
        RevenueByCurrency(
            currency=currency,
            orders=orders,
            gross=gross,
            discounts=discounts,
            refunds=refunds,
            net=gross - discounts - refunds,
        )
        for currency, (orders, gross, discounts, refunds) in sorted(sums.items())
    )


def _group(carts: Sequence[CohortCart]) -> GroupFigures:
    converted = [c for c in carts if converted_in_window(c)]
    return GroupFigures(
        carts=len(carts),
        conversions=len(converted),
        conversion_rate=len(converted) / len(carts) if carts else None,
        revenue=_revenue(converted),
    )


def _itt_net(cart: CohortCart) -> int:
    return cart.net if converted_in_window(cart) else 0


def _incremental_revenue(
    currency: str, treated: Sequence[CohortCart], holdout: Sequence[CohortCart]
) -> IncrementalRevenue:
    t = stats.sample([_itt_net(c) for c in treated])
    h = stats.sample([_itt_net(c) for c in holdout])
    n_t = len(treated)
    per_cart = t.mean - h.mean if t.mean is not None and h.mean is not None else None
    interval = stats.mean_difference(t, h)
    if per_cart is None:
        note = f"{INSUFFICIENT}: no {'treated' if not treated else 'holdout'} carts in {currency}"
    elif interval is None:
        note = f"{INSUFFICIENT}: an interval needs two carts in each group"
    else:
        note = ""
    return IncrementalRevenue(
        currency=currency,
        treated_carts=n_t,
        holdout_carts=len(holdout),
        treated_mean_net=t.mean,
        holdout_mean_net=h.mean,
        per_cart=per_cart,
        per_cart_low=interval.low if interval else None,
        per_cart_high=interval.high if interval else None,
        incremental=per_cart * n_t if per_cart is not None else None,
        low=interval.low * n_t if interval else None,
        high=interval.high * n_t if interval else None,
        note=note,
    )


def _lift(treated: Sequence[CohortCart], holdout: Sequence[CohortCart]) -> Lift:
    by_currency: dict[str, tuple[list[CohortCart], list[CohortCart]]] = defaultdict(
        lambda: ([], [])
    )
    for cart in (*treated, *holdout):
        by_currency[cart.currency][1 if cart.holdout else 0].append(cart)
    revenue = tuple(
        _incremental_revenue(currency, t, h) for currency, (t, h) in sorted(by_currency.items())
    )
    n_t, n_h = len(treated), len(holdout)
    x_t = sum(1 for c in treated if converted_in_window(c))
    x_h = sum(1 for c in holdout if converted_in_window(c))
    return lift_from_counts(x_t=x_t, n_t=n_t, x_h=x_h, n_h=n_h, revenue=revenue)


def lift_from_counts(
    *,
    x_t: int,
    n_t: int,
    x_h: int,
    n_h: int,
    revenue: tuple[IncrementalRevenue, ...],
) -> Lift:
    """The lift from conversions ``x`` of ``n`` carts per group (treated, holdout) and the
    incremental revenue per currency: Newcombe's interval on the difference, and its scaling to
    the treated group. The dashboards compute the same from their counters."""
    p_t = x_t / n_t if n_t else None
    p_h = x_h / n_h if n_h else None
    d: stats.Difference | None = None
    if p_t is None or p_h is None:
        note = f"{INSUFFICIENT}: no {'treated' if p_t is None else 'holdout'} carts"
    else:
        d = stats.newcombe(x_t, n_t, x_h, n_h)
        note = "" if p_h > 0 else "relative lift undefined: no holdout conversions"
    return Lift(
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


def summarise(
    *,
    store_id: int,
    start: datetime,
    end: datetime,
    campaign_id: int | None,
    carts: Sequence[CohortCart],
) -> Attribution:
    """The attribution figures of a cohort (pure: no ORM, no clock)."""
    treated = [c for c in carts if not c.holdout]
    holdout = [c for c in carts if c.holdout]
    credited = [(c, t) for c in treated if (t := recovering_touch(c)) is not None]
    channels = Counter(t.channel for _, t in credited)
    tiers = Counter((t.campaign_id, t.tier_id, t.position, t.channel) for _, t in credited)
    return Attribution(
        store_id=store_id,
        start=start,
        end=end,
        campaign_id=campaign_id,
        treated=_group(treated),
        holdout=_group(holdout),
        touches=sum(len(c.touches) for c in treated),
        touched_carts=sum(1 for c in treated if c.touches),
        recovered_carts=len(credited),
        recovered_by_channel=tuple(
            ChannelCount(channel=ch, carts=n) for ch, n in sorted(channels.items())
        ),
        recovered_by_tier=tuple(
            TierCount(campaign_id=k, tier_id=tier, position=pos, channel=ch, carts=n)
            for (k, tier, pos, ch), n in sorted(tiers.items())
        ),
        revenue=_revenue(c for c, _ in credited),
        lift=_lift(treated, holdout),
    )


# -- the selector -------------------------------------------------------------------------------

# One row per enrolled cart: its state, its redeemed coupon (one per cart) and its campaign's
# windows. CartState and Coupon are joined through their (token, store) / (store, cart) indexes.
_COHORT = """
    SELECT e.id, e.campaign_id, e.holdout, e.abandoned_at,
           COALESCE(NULLIF(s.currency, ''), e.currency),
           s.converted_at, s.order_total, COALESCE(s.refunded, 0),
           COALESCE(cp.discount_applied, 0),
           k.attribution_hours,
           (SELECT COALESCE(MAX(t.delay_minutes), 0)
              FROM campaigns_tier t WHERE t.campaign_id = e.campaign_id)
      FROM campaigns_enrollment e
      JOIN campaigns_campaign k ON k.id = e.campaign_id
      LEFT JOIN carts_cartstate s ON s.token = e.cart AND s.store_id = e.store_id
      LEFT JOIN campaigns_coupon cp
             ON cp.store_id = e.store_id AND cp.cart = e.cart AND cp.redeemed_at IS NOT NULL
     WHERE e.store_id = %s AND e.abandoned_at >= %s AND e.abandoned_at < %s
"""


def _touches(
    *, store_id: int, start: datetime, end: datetime, campaign_id: int | None
) -> Mapping[int, tuple[Touch, ...]]:
    steps = Step.objects.filter(
        store_id=store_id,
        enrollment__store_id=store_id,
        enrollment__abandoned_at__gte=start,
        enrollment__abandoned_at__lt=end,
        status=Step.Status.SENT,
        finished_at__isnull=False,
    ).exclude(reason=events.IN_FLIGHT_AT_ORDER)  # it left before the order, but too late to count
    if campaign_id is not None:
        steps = steps.filter(enrollment__campaign_id=campaign_id)
    by_enrollment: dict[int, list[Touch]] = defaultdict(list)
    for step_id, enrollment_id, at, k, tier_id, position, channel in steps.values_list(
        "id",
        "enrollment_id",
        "finished_at",
        "tier__campaign_id",
        "tier_id",
        "tier__position",
        "channel",
    ):
        assert at is not None  # finished_at__isnull=False
        by_enrollment[enrollment_id].append(
            Touch(
                at=at,
                campaign_id=k,
                tier_id=tier_id,
                position=position,
                channel=channel,
                step_id=step_id,
            )
        )
    return {
        e: tuple(sorted(ts, key=lambda t: (t.at, t.step_id))) for e, ts in by_enrollment.items()
    }


def attribution_summary(
    *, store_id: int, start: datetime, end: datetime, campaign_id: int | None = None
) -> Attribution:
    """Recovered carts and revenue (attributed) and lift against the holdout (incremental) for
    the store's carts abandoned in [start, end), optionally of one campaign. Two queries."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    touches = _touches(store_id=store_id, start=start, end=end, campaign_id=campaign_id)
    with connection.cursor() as cursor:
        if campaign_id is None:
            cursor.execute(_COHORT, [store_id, start, end])
        else:
            cursor.execute(_COHORT + " AND e.campaign_id = %s", [store_id, start, end, campaign_id])
        rows = cursor.fetchall()
    carts = [
        CohortCart(
            enrollment_id=enrollment_id,
            campaign_id=k,
            holdout=holdout,
            abandoned_at=abandoned_at,
            currency=currency,
            converted_at=converted_at,
            order_total=order_total,
            refunded=refunded,
            discount=discount,
            attribution_window=timedelta(hours=hours),
            conversion_window=timedelta(hours=hours, minutes=max_delay),
            touches=touches.get(enrollment_id, ()),
        )
        for (
            enrollment_id,
            k,
            holdout,
            abandoned_at,
            currency,
            converted_at,
            order_total,
            refunded,
            discount,
            hours,
            max_delay,
        ) in rows
    ]
    return summarise(store_id=store_id, start=start, end=end, campaign_id=campaign_id, carts=carts)
