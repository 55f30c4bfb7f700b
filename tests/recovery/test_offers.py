"""The exit-intent decision (recovery/offers.py): pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from campaigns.selectors import OnsiteOffer
from carts.projections import Cart, Line
from recovery import offers

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def tier(**changes) -> OnsiteOffer:
    base: dict[str, Any] = dict(
        campaign_id=7, campaign_name="c", holdout_share=Decimal("0"), tier_id=3, min_score=0.5,
        min_cart_value=1000, offer_kind="percent_discount", percent=10, discount_cap=500,
        headline="H", body="B", cta_label="Go", cta_url="https://shop.example/cart",
        cooldown_hours=24, offer_ttl_minutes=30,
    )  # fmt: skip
    base.update(changes)
    return OnsiteOffer(**base)


def cart(value: int = 8000, status: str = "active") -> Cart:
    lines = (Line(sku="A", name="A", quantity=1, unit_price=value),) if value else ()
    return Cart(version=2, status=status, currency="EUR", lines=lines)


def decide(**kw):
    args: dict[str, Any] = dict(
        cart=cart(), score=0.8, tier=tier(), last_offer=None, shopper="s1", now=NOW,
        offer_id="o1", code="CODE123456",
    )  # fmt: skip
    args.update(kw)
    return offers.decide(**args)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"tier": None}, "no_campaign"),
        ({"cart": cart(status="converted")}, "converted"),
        ({"cart": cart(value=0)}, "empty_cart"),
        ({"last_offer": NOW - timedelta(hours=23)}, "cooldown"),
        ({"score": 0.49}, "below_min_score"),
        ({"score": None}, "below_min_score"),
        ({"cart": cart(value=999)}, "below_min_value"),
        ({"tier": tier(holdout_share=Decimal("0.5")), "shopper": "s-in"}, None),
    ],
)
def test_reasons_for_no_offer(kw, reason):
    if reason is None:  # find a shopper the 50% holdout takes
        shopper = next(
            f"s{n}"
            for n in range(1000)
            if offers.in_holdout(campaign_id=7, shopper=f"s{n}", share=Decimal("0.5"))
        )
        decision = decide(tier=kw["tier"], shopper=shopper)
        assert (decision.decision, decision.reason, decision.holdout) == ("none", "holdout", True)
        return
    decision = decide(**kw)
    assert (decision.decision, decision.reason, decision.offer) == ("none", reason, None)


def test_an_eligible_cart_gets_the_tiers_offer():
    decision = decide()
    assert decision.decision == "offer" and not decision.holdout
    assert decision.offer == {
        "id": "o1", "kind": "percent_discount", "headline": "H", "body": "B",
        "cta_label": "Go", "cta_url": "https://shop.example/cart",
        "expires_at": (NOW + timedelta(minutes=30)).isoformat(),
        "percent": 10, "discount_cap": 500, "discount_code": "CODE123456",
        "discount_amount": 500, "currency": "EUR",  # 10% of 80.00 = 8.00, capped at 5.00
    }  # fmt: skip


def test_cooldown_expires_and_zero_means_none():
    assert decide(last_offer=NOW - timedelta(hours=25)).decision == "offer"
    message = tier(offer_kind="message", percent=None, discount_cap=None, cooldown_hours=0)
    assert decide(last_offer=NOW, tier=message).decision == "offer"


@pytest.mark.parametrize("kind", ["percent_discount", "free_shipping"])
def test_an_offer_with_a_code_waits_at_least_an_hour_whatever_the_tier_says(kind):
    # (security review 2, finding 5: cooldown 0 gave a new code on every exit intent)
    percent = 10 if kind == "percent_discount" else None
    coded = tier(offer_kind=kind, percent=percent, discount_cap=None, cooldown_hours=0)
    assert offers.cooldown(coded) == timedelta(hours=1) == offers.CODE_MIN_COOLDOWN
    soon = decide(last_offer=NOW - timedelta(minutes=59), tier=coded)
    assert (soon.decision, soon.reason) == ("none", "cooldown")
    assert decide(last_offer=NOW - timedelta(minutes=60), tier=coded).decision == "offer"
    # a longer saved cooldown stands
    assert offers.cooldown(tier(cooldown_hours=24)) == timedelta(hours=24)


def test_message_and_free_shipping_offers():
    message = decide(tier=tier(offer_kind="message", percent=None, discount_cap=None)).offer
    assert message is not None and "discount_code" not in message and "percent" not in message
    shipping = decide(tier=tier(offer_kind="free_shipping", percent=None, discount_cap=None))
    assert shipping.offer is not None and shipping.offer["discount_code"] == "CODE123456"


def test_holdout_is_stable_and_close_to_its_share():
    draws = [
        offers.in_holdout(campaign_id=1, shopper=f"s{n}", share=Decimal("0.1")) for n in range(4000)
    ]
    assert 0.08 < sum(draws) / len(draws) < 0.12
    assert draws == [
        offers.in_holdout(campaign_id=1, shopper=f"s{n}", share=Decimal("0.1")) for n in range(4000)
    ]
    assert not offers.in_holdout(campaign_id=1, shopper="x", share=Decimal("0"))


def test_last_offer_at_reads_the_accumulator():
    assert offers.last_offer_at({}) is None
    assert offers.last_offer_at({"offers": {"last_at": NOW.isoformat(), "count": 1}}) == NOW


def test_a_shopper_who_asked_not_to_be_reminded_gets_no_exit_offer():
    from datetime import UTC, datetime

    from campaigns.selectors import OnsiteOffer
    from carts.projections import Cart, Line

    tier = OnsiteOffer(
        campaign_id=1, campaign_name="c", holdout_share=Decimal("0"), tier_id=1, min_score=0.0,
        min_cart_value=0, offer_kind="message", percent=None, discount_cap=None, headline="h",
        body="b", cta_label="l", cta_url="", cooldown_hours=0, offer_ttl_minutes=30,
    )  # fmt: skip
    cart = Cart(lines=(Line("A", "a", 1, 1000),), currency="EUR")
    kwargs: dict[str, Any] = dict(
        cart=cart, score=0.9, tier=tier, last_offer=None, shopper="id:7",
        now=datetime(2026, 1, 1, tzinfo=UTC), offer_id="o", code="C",
    )  # fmt: skip
    assert offers.decide(**kwargs).decision == offers.OFFER
    declined = offers.decide(**kwargs, declined=True)
    assert (declined.decision, declined.reason) == (offers.NONE, "dont_remind")


def test_an_offer_shown_without_its_code_promises_nothing():
    tier_offer = {
        "id": "o-1",
        "headline": "Wait, 10% off your cart",
        "body": "Use your code at checkout.",
        "cta_label": "Use my discount",
        "cta_url": "",
        "expires_at": "2026-12-06T18:00:00+00:00",
        "kind": "percent",
        "percent": 10,
    }

    plain = offers.offer_uncoded(tier_offer)

    assert plain["kind"] == "message" and "percent" not in plain
    assert (plain["headline"], plain["body"], plain["cta_label"]) == (
        "Before you go",
        "Your cart is saved for you.",
        "Back to my cart",
    )
