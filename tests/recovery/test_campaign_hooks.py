"""What recovery supplies to campaigns: the price specialist's view and the on-site channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from campaigns import enrolment, steps
from campaigns.models import Step
from carts.models import CartState
from carts.services import cart_from_row
from recovery import campaign_hooks, live, serving
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_price_sensitivity_is_the_price_specialists_push_as_a_probability(store):
    cart = cart_abandoned(store.pk, at=T)
    _, _, why = serving.explain(
        store_id=store.pk,
        cart=cart_from_row(cart),
        wrapper=cart.features,
        at=T,
    )
    [price] = [s for s in why.specialists if s.name == "price"]
    sensitivity = campaign_hooks.price_sensitivity(store.pk, cart, T)
    assert sensitivity is not None and 0 < sensitivity < 1
    assert (sensitivity > 0.5) == (price.log_odds > 0)
    assert campaign_hooks.price_sensitivity(store.pk, CartState(features={}), T) is None


def test_a_campaigns_onsite_nudge_is_an_offer_the_browser_gets_again_on_reconnect(
    store, django_capture_on_commit_callbacks
):
    campaign_with_tiers(
        store.pk,
        activated_at=T - timedelta(days=1),
        tiers=[{"channel": "onsite", "headline": "Still there?", "offer_ttl_minutes": 60}],
    )
    cart = cart_abandoned(store.pk, at=T)
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    step = Step.objects.get(store=store)
    Step.objects.filter(pk=step.pk).update(status="enqueued")
    now = T + timedelta(minutes=31)

    with django_capture_on_commit_callbacks(execute=False) as pushes:
        assert steps.steps_execute(step_ids=[step.pk], now=lambda: now) == {"sent": 1}

    # Nothing is pushed from the step's transaction: the offer reaches the cart's sockets from
    # its committed event (recovery/offer_push.py); the one callback wakes the projectors.
    assert [p.__qualname__.split(".")[0] for p in pushes] == ["events_append"]
    [offer] = live.pending_offers(store_id=store.pk, cart=cart.token, now=now)
    assert (offer["headline"], offer["step"], offer["kind"]) == ("Still there?", step.pk, "message")
    assert offer["expires_at"] == (now + timedelta(minutes=60)).isoformat()
    step.refresh_from_db()
    assert step.message_id == offer["id"]


def test_a_campaigns_onsite_discount_is_a_coupon_of_the_cart(store):
    # The scheduled nudge's code is issued as an exit intent's is: a coupon row with its event,
    # so /coupons/validate and /redeem know it (security review 2, finding 5).
    from campaigns.models import Coupon
    from carts.models import CartEvent

    campaign_with_tiers(
        store.pk,
        activated_at=T - timedelta(days=1),
        tiers=[
            {
                "channel": "onsite",
                "headline": "10% off",
                "offer_kind": "percent_discount",
                "percent": 10,
                "offer_ttl_minutes": 60,
            }
        ],
    )
    cart = cart_abandoned(store.pk, at=T)
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    step = Step.objects.get(store=store)
    Step.objects.filter(pk=step.pk).update(status="enqueued")
    now = T + timedelta(minutes=31)

    assert steps.steps_execute(step_ids=[step.pk], now=lambda: now) == {"sent": 1}

    [offer] = live.pending_offers(store_id=store.pk, cart=cart.token, now=now)
    coupon = Coupon.objects.get(store=store, cart=cart.token)
    assert offer["discount_code"] == coupon.code
    assert (coupon.kind, coupon.amount) == ("percent", 10)
    types = list(
        CartEvent.objects.filter(store=store, cart=cart.token)
        .order_by("version")
        .values_list("type", flat=True)
    )
    assert types[-3:] == [
        "campaign.coupon_issued",
        "recovery.offer_decided",
        "campaign.step_sent",
    ]
