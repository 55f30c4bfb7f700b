"""campaigns.attribution: recovered carts and revenue, and lift against the holdout, with exact
figures on a small log built through the append service.

The data set: store A, carts abandoned (ab.) in [T0, T0 + 24 h), times in hours after T0,
touches are sent steps. K1 attributes 24 h, tiers at 0, 60 and 240 minutes (conversion window
28 h); K2 attributes 48 h, one tier at 30 minutes (conversion window 48.5 h).

| cart        | K  | arm     | ab. | touches                       | order | money                 |
|-------------|----|---------|-----|-------------------------------|-------|-----------------------|
| c-before    | K1 | treated | 0   | onsite 1                      | 0.5   | 5000 EUR              |
| c-late      | K1 | treated | 1   | onsite 1                      | 26    | 3000 EUR              |
| c-two       | K1 | treated | 2   | onsite 2, email 3             | 5     | 8000 EUR, refund 2000 |
| c-coupon    | K1 | treated | 3   | onsite 3, email 4, discount 7 | 8     | 6000 EUR, coupon 1200 |
| c-usd       | K1 | treated | 4   | email 5                       | 6     | 9000 USD              |
| c-none      | K1 | treated | 5   | onsite 5, discount 9          | -     | unredeemed coupon     |
| c-untouched | K1 | treated | 6   | (skipped, failed)             | -     |                       |
| h-conv      | K1 | holdout | 2   | (suppressed)                  | 10    | 4000 EUR              |
| h-none      | K1 | holdout | 3   | (suppressed)                  | -     |                       |
| h-usd       | K1 | holdout | 4   | -                             | 40    | 7000 USD              |
| h-quiet     | K1 | holdout | 5   | -                             | -     |                       |
| k2-rec      | K2 | treated | 7   | email 7.5                     | 30    | 2000 EUR              |

Outside the cohort: c-outside (abandoned at T0 + 24 h, recovered) and store B's c-two.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from campaigns.attribution import (
    Attribution,
    ChannelCount,
    CohortCart,
    GroupFigures,
    RevenueByCurrency,
    TierCount,
    Touch,
    attribution_summary,
    converted_in_window,
    recovering_touch,
)
from campaigns.models import Campaign, Coupon, Enrollment, Step, Tier
from carts import services
from carts.models import Store
from carts.sources import Source
from tests.conftest import new_event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
START, END = T0, T0 + timedelta(hours=24)
_codes = itertools.count(1)


def r4(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def a_cart(
    store: Store,
    token: str,
    *,
    currency: str = "EUR",
    value: int = 5000,
    added_at: datetime,
    order_at: datetime | None = None,
    total: int | None = None,
    refund: int = 0,
) -> None:
    events = [
        new_event(
            "cart.item_added",
            token,
            {"sku": "S1", "name": "Shoe", "quantity": 1, "unit_price": value, "currency": currency},
            at=added_at,
        )
    ]
    if order_at is not None:
        order = {"order_id": f"o-{token}", "total": total or value, "currency": currency}
        events.append(new_event("order.placed", token, order, at=order_at))
        if refund:
            refunded = {"order_id": f"o-{token}", "amount": refund}
            events.append(new_event("order.refunded", token, refunded, at=order_at + timedelta(1)))
    services.events_append(store_id=store.pk, events=events, source=Source.server("test"))


def a_campaign(store: Store, *, hours: int, delays: list[tuple[str, int]]) -> Campaign:
    campaign = Campaign.objects.create(store=store, name=f"K{hours}", attribution_hours=hours)
    for position, (channel, delay) in enumerate(delays, start=1):
        Tier.objects.create(
            campaign=campaign, position=position, channel=channel, delay_minutes=delay
        )
    return campaign


def enrol(
    campaign: Campaign,
    token: str,
    *,
    abandoned_at: datetime,
    holdout: bool = False,
    currency: str = "EUR",
    steps: dict[int, tuple[str, datetime | None]] | None = None,
) -> Enrollment:
    """Enrol a cart; ``steps`` maps tier position to (status, finished_at)."""
    enrollment = Enrollment.objects.create(
        store=campaign.store,
        cart=token,
        campaign=campaign,
        holdout=holdout,
        abandoned_at=abandoned_at,
        currency=currency,
    )
    tiers = {t.position: t for t in campaign.tiers.all()}
    for position, (status, finished_at) in (steps or {}).items():
        tier = tiers[position]
        Step.objects.create(
            store=campaign.store,
            cart=token,
            enrollment=enrollment,
            tier=tier,
            channel=tier.channel,
            due_at=abandoned_at + timedelta(minutes=tier.delay_minutes),
            status=status,
            finished_at=finished_at,
        )
    return enrollment


def a_coupon(store: Store, token: str, *, issued_at: datetime, discount: int | None) -> None:
    Coupon.objects.create(
        store=store,
        cart=token,
        code=f"CODE{next(_codes)}",
        kind=Coupon.Kind.FIXED,
        amount=discount or 500,
        currency="EUR",
        issued_at=issued_at,
        expires_at=issued_at + timedelta(hours=48),
        redeemed_at=issued_at + timedelta(minutes=50) if discount is not None else None,
        order_id=f"o-{token}" if discount is not None else "",
        discount_applied=discount,
    )


SENT, SUPPRESSED = Step.Status.SENT, Step.Status.SUPPRESSED


@pytest.fixture
def world(db):
    store = Store.objects.get(pk=services.store_create(name="A").store_id)
    other = Store.objects.get(pk=services.store_create(name="B").store_id)
    k1 = a_campaign(store, hours=24, delays=[("onsite", 0), ("email", 60), ("discount", 240)])
    k2 = a_campaign(store, hours=48, delays=[("email", 30)])

    # An order before any touch: converted, not recovered.
    a_cart(store, "c-before", added_at=h(-1), order_at=h(0.5), total=5000)
    enrol(k1, "c-before", abandoned_at=h(0), steps={1: (SENT, h(1))})
    # An order 25 h after the only touch: outside K1's 24 h window, inside its 28 h conversion.
    a_cart(store, "c-late", added_at=h(0), order_at=h(26), total=3000)
    enrol(
        k1, "c-late", abandoned_at=h(1), steps={1: (SENT, h(1)), 2: (Step.Status.CANCELLED, None)}
    )
    # Recovered after two touches: counted once, credited to the email; partly refunded.
    a_cart(store, "c-two", added_at=h(1), order_at=h(5), total=8000, refund=2000)
    enrol(k1, "c-two", abandoned_at=h(2), steps={1: (SENT, h(2)), 2: (SENT, h(3))})
    # Recovered after three touches with a redeemed code: credited to the discount.
    a_cart(store, "c-coupon", added_at=h(2), order_at=h(8), total=6000)
    enrol(
        k1,
        "c-coupon",
        abandoned_at=h(3),
        steps={1: (SENT, h(3)), 2: (SENT, h(4)), 3: (SENT, h(7))},
    )
    a_coupon(store, "c-coupon", issued_at=h(7), discount=1200)
    # Another currency.
    a_cart(store, "c-usd", currency="USD", added_at=h(3), order_at=h(6), total=9000)
    enrol(k1, "c-usd", abandoned_at=h(4), currency="USD", steps={2: (SENT, h(5))})
    # Touched, given a code never redeemed, no order.
    a_cart(store, "c-none", added_at=h(4))
    enrol(k1, "c-none", abandoned_at=h(5), steps={1: (SENT, h(5)), 3: (SENT, h(9))})
    a_coupon(store, "c-none", issued_at=h(9), discount=None)
    # Nothing sent: a skipped and a failed step.
    a_cart(store, "c-untouched", added_at=h(5))
    enrol(
        k1,
        "c-untouched",
        abandoned_at=h(6),
        steps={1: (Step.Status.SKIPPED, h(6)), 2: (Step.Status.FAILED, h(7))},
    )
    # The holdout: suppressed steps are not touches; one order in the window, one after it.
    a_cart(store, "h-conv", added_at=h(1), order_at=h(10), total=4000)
    enrol(
        k1,
        "h-conv",
        abandoned_at=h(2),
        holdout=True,
        steps={1: (SUPPRESSED, h(2)), 2: (SUPPRESSED, h(3))},
    )
    a_cart(store, "h-none", added_at=h(2))
    enrol(k1, "h-none", abandoned_at=h(3), holdout=True, steps={1: (SUPPRESSED, h(3))})
    a_cart(store, "h-usd", currency="USD", added_at=h(3), order_at=h(40), total=7000)
    enrol(k1, "h-usd", abandoned_at=h(4), holdout=True, currency="USD")
    a_cart(store, "h-quiet", added_at=h(4))
    enrol(k1, "h-quiet", abandoned_at=h(5), holdout=True)
    # K2: an order 22.5 h after its touch, inside K2's 48 h window.
    a_cart(store, "k2-rec", added_at=h(6), order_at=h(30), total=2000)
    enrol(k2, "k2-rec", abandoned_at=h(7), steps={1: (SENT, h(7.5))})

    # Outside: abandoned at the end of the range (excluded), and another store's cart.
    a_cart(store, "c-outside", added_at=h(23), order_at=h(25), total=99000)
    enrol(k1, "c-outside", abandoned_at=END, steps={1: (SENT, h(24.5))})
    b1 = a_campaign(other, hours=24, delays=[("email", 0)])
    a_cart(other, "c-two", added_at=h(1), order_at=h(4), total=50000)
    enrol(b1, "c-two", abandoned_at=h(2), steps={1: (SENT, h(3))})
    return store, other, k1, k2, b1


def test_recovered_carts_and_their_net_revenue_per_currency(world, django_assert_num_queries):
    store, _other, k1, k2, _b1 = world
    tiers = {(t.campaign_id, t.position): t.pk for t in Tier.objects.all()}

    with django_assert_num_queries(2):
        result = attribution_summary(store_id=store.pk, start=START, end=END)

    assert result.touches == 11
    assert result.touched_carts == 7
    # c-two, c-coupon, c-usd, k2-rec; not c-before (order first), c-late (25 h after).
    assert result.recovered_carts == 4
    assert result.recovered_by_channel == (
        ChannelCount(channel="discount", carts=1),
        ChannelCount(channel="email", carts=3),
    )
    assert sorted(result.recovered_by_tier, key=lambda t: t.tier_id) == sorted(
        [
            TierCount(
                campaign_id=k1.pk, tier_id=tiers[k1.pk, 2], position=2, channel="email", carts=2
            ),
            TierCount(
                campaign_id=k1.pk, tier_id=tiers[k1.pk, 3], position=3, channel="discount", carts=1
            ),
            TierCount(
                campaign_id=k2.pk, tier_id=tiers[k2.pk, 1], position=1, channel="email", carts=1
            ),
        ],
        key=lambda t: t.tier_id,
    )
    assert result.revenue == (
        # c-two 8000 - 2000 refunded, c-coupon 6000 - 1200 discount, k2-rec 2000
        RevenueByCurrency(
            currency="EUR", orders=3, gross=16000, discounts=1200, refunds=2000, net=12800
        ),
        RevenueByCurrency(currency="USD", orders=1, gross=9000, discounts=0, refunds=0, net=9000),
    )


def test_both_arms_convert_within_the_conversion_window(world):
    store = world[0]

    result = attribution_summary(store_id=store.pk, start=START, end=END)

    # Treated: every order within 28 h (K1) or 48.5 h (K2) of the abandonment, touched or not.
    assert result.treated == GroupFigures(
        carts=8,
        conversions=6,
        conversion_rate=0.75,
        revenue=(
            RevenueByCurrency(
                currency="EUR", orders=5, gross=24000, discounts=1200, refunds=2000, net=20800
            ),
            RevenueByCurrency(
                currency="USD", orders=1, gross=9000, discounts=0, refunds=0, net=9000
            ),
        ),
    )
    # Holdout: h-conv; h-usd ordered 36 h after abandoning, after K1's 28 h.
    assert result.holdout == GroupFigures(
        carts=4,
        conversions=1,
        conversion_rate=0.25,
        revenue=(
            RevenueByCurrency(
                currency="EUR", orders=1, gross=4000, discounts=0, refunds=0, net=4000
            ),
        ),
    )


def test_lift_against_the_holdout_with_intervals(world):
    store = world[0]

    lift = attribution_summary(store_id=store.pk, start=START, end=END).lift

    assert (lift.treated_rate, lift.holdout_rate) == (0.75, 0.25)
    assert lift.absolute == 0.5
    assert r4(lift.absolute_low) == -0.0639  # Newcombe, 6/8 versus 1/4
    assert r4(lift.absolute_high) == 0.7714
    assert lift.relative == 2.0
    assert lift.incremental_conversions == 4.0
    assert r4(lift.incremental_conversions_low) == -0.5114
    assert r4(lift.incremental_conversions_high) == 6.1711
    assert (lift.confidence, lift.method, lift.note) == (0.95, "newcombe-wilson", "")

    eur, usd = lift.incremental_revenue
    # Net per EUR cart, treated: 5000, 3000, 6000, 4800, 0, 0, 2000; holdout: 4000, 0, 0.
    assert (eur.currency, eur.treated_carts, eur.holdout_carts) == ("EUR", 7, 3)
    assert r4(eur.treated_mean_net) == 2971.4286
    assert r4(eur.holdout_mean_net) == 1333.3333
    assert r4(eur.per_cart) == 1638.0952
    assert r4(eur.per_cart_low) == -1532.3786
    assert r4(eur.per_cart_high) == 4808.5691
    assert r4(eur.incremental) == 11466.6667
    assert r4(eur.low) == -10726.6502
    assert r4(eur.high) == 33659.9835
    assert eur.note == ""
    # One USD cart in each arm: an estimate without an interval.
    assert (usd.currency, usd.treated_carts, usd.holdout_carts) == ("USD", 1, 1)
    assert (usd.treated_mean_net, usd.holdout_mean_net, usd.per_cart, usd.incremental) == (
        9000.0,
        0.0,
        9000.0,
        9000.0,
    )
    assert (usd.per_cart_low, usd.per_cart_high, usd.low, usd.high) == (None, None, None, None)
    assert usd.note == "insufficient data: an interval needs two carts in each group"


def test_one_campaign(world):
    store, _other, k1, _k2, _b1 = world

    result = attribution_summary(store_id=store.pk, start=START, end=END, campaign_id=k1.pk)

    assert result.campaign_id == k1.pk
    assert (result.treated.carts, result.treated.conversions) == (7, 5)
    assert (result.holdout.carts, result.holdout.conversions) == (4, 1)
    assert (result.touches, result.touched_carts, result.recovered_carts) == (10, 6, 3)
    assert result.recovered_by_channel == (
        ChannelCount(channel="discount", carts=1),
        ChannelCount(channel="email", carts=2),
    )
    assert result.revenue == (
        RevenueByCurrency(
            currency="EUR", orders=2, gross=14000, discounts=1200, refunds=2000, net=10800
        ),
        RevenueByCurrency(currency="USD", orders=1, gross=9000, discounts=0, refunds=0, net=9000),
    )
    assert r4(result.lift.absolute) == 0.4643  # 5/7 - 1/4
    assert r4(result.lift.absolute_low) == -0.1086
    assert r4(result.lift.absolute_high) == 0.7527
    eur = result.lift.incremental_revenue[0]
    assert [r4(eur.per_cart), r4(eur.low), r4(eur.high)] == [
        1800.0,
        -9279.8286,
        30879.8286,
    ]


def test_an_empty_holdout_gives_no_lift(world):
    store, _other, _k1, k2, _b1 = world

    result = attribution_summary(store_id=store.pk, start=START, end=END, campaign_id=k2.pk)

    assert (result.treated.carts, result.treated.conversions, result.recovered_carts) == (1, 1, 1)
    assert result.holdout == GroupFigures(carts=0, conversions=0, conversion_rate=None, revenue=())
    lift = result.lift
    assert (lift.treated_rate, lift.holdout_rate) == (1.0, None)
    assert [
        lift.absolute,
        lift.absolute_low,
        lift.absolute_high,
        lift.relative,
        lift.incremental_conversions,
        lift.incremental_conversions_low,
        lift.incremental_conversions_high,
    ] == [None] * 7
    assert lift.note == "insufficient data: no holdout carts"
    (eur,) = lift.incremental_revenue
    assert (eur.treated_mean_net, eur.holdout_mean_net, eur.per_cart, eur.incremental) == (
        2000.0,
        None,
        None,
        None,
    )
    assert eur.note == "insufficient data: no holdout carts in EUR"


def test_another_store_sees_only_its_own_cart(world):
    _store, other, _k1, _k2, _b1 = world

    result = attribution_summary(store_id=other.pk, start=START, end=END)

    assert (result.treated.carts, result.recovered_carts) == (1, 1)
    assert result.revenue == (
        RevenueByCurrency(currency="EUR", orders=1, gross=50000, discounts=0, refunds=0, net=50000),
    )


def test_an_empty_range_has_no_figures(world):
    store = world[0]

    result = attribution_summary(store_id=store.pk, start=h(-48), end=h(-24))

    assert result == Attribution(
        store_id=store.pk,
        start=h(-48),
        end=h(-24),
        campaign_id=None,
        treated=GroupFigures(carts=0, conversions=0, conversion_rate=None, revenue=()),
        holdout=GroupFigures(carts=0, conversions=0, conversion_rate=None, revenue=()),
        touches=0,
        touched_carts=0,
        recovered_carts=0,
        recovered_by_channel=(),
        recovered_by_tier=(),
        revenue=(),
        lift=result.lift,
    )
    assert result.lift.note == "insufficient data: no treated carts"
    assert result.lift.incremental_revenue == ()


def test_naive_times_are_refused(db):
    with pytest.raises(ValueError):
        attribution_summary(store_id=1, start=datetime(2026, 3, 2), end=datetime(2026, 3, 3))


def test_as_dict_is_plain_json(world):
    import json

    store, _other, _k1, k2, _b1 = world

    data = attribution_summary(store_id=store.pk, start=START, end=END, campaign_id=k2.pk).as_dict()

    assert json.loads(json.dumps(data)) == data
    assert data["start"] == "2026-03-02T09:00:00+00:00"
    assert data["revenue"] == [
        {"currency": "EUR", "orders": 1, "gross": 2000, "discounts": 0, "refunds": 0, "net": 2000}
    ]
    assert data["lift"]["absolute"] is None
    assert data["recovered_by_channel"] == [{"channel": "email", "carts": 1}]


# -- the pure rules at their boundaries (no database) --------------------------------------------


def cohort_cart(*, touches: list[float], order: float | None, holdout: bool = False) -> CohortCart:
    return CohortCart(
        enrollment_id=1,
        campaign_id=1,
        holdout=holdout,
        abandoned_at=h(0),
        currency="EUR",
        converted_at=h(order) if order is not None else None,
        order_total=1000 if order is not None else None,
        refunded=0,
        discount=0,
        attribution_window=timedelta(hours=24),
        conversion_window=timedelta(hours=28),
        touches=tuple(
            Touch(at=h(t), campaign_id=1, tier_id=i, position=i, channel="email", step_id=i)
            for i, t in enumerate(touches, start=1)
        ),
    )


@pytest.mark.parametrize(
    ("touches", "order", "credited"),
    [
        ([1], 25, 1),  # exactly 24 h after the touch: inside
        ([1], 25.001, None),  # just after the window
        ([1], 1, None),  # at the touch, not after it
        ([2], 1, None),  # before any touch
        ([1, 3], 2, 1),  # the touch after the order does not count
        ([1, 3], 26, 2),  # the last touch before the order
        ([0.5, 1, 30], 26, None),  # the last touch before it is 25 h old
        ([], 5, None),  # never touched
        ([1], None, None),  # never ordered
    ],
)
def test_the_recovering_touch(touches, order, credited):
    touch = recovering_touch(cohort_cart(touches=touches, order=order))

    assert (touch.tier_id if touch else None) == credited


def test_a_holdout_cart_is_never_recovered():
    assert recovering_touch(cohort_cart(touches=[1], order=2, holdout=True)) is None


@pytest.mark.parametrize(
    ("order", "converted"),
    [(None, False), (-1, False), (0, False), (0.001, True), (28, True), (28.001, False)],
)
def test_conversion_within_the_window_of_the_abandonment(order, converted):
    assert converted_in_window(cohort_cart(touches=[], order=order)) is converted


def test_net_revenue_of_a_cart():
    cart = dataclasses.replace(cohort_cart(touches=[], order=1), discount=150, refunded=300)

    assert (cart.net, cohort_cart(touches=[], order=None).net) == (550, 0)
