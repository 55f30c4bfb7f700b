""" "Don't remind me" from a campaign email also stops exit-intent offers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from campaigns.models import Suppression
from campaigns.services import campaign_demo_ensure
from carts.identity import cart_shopper_key
from recovery import live
from tests.campaigns.builders import cart_abandoned

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _exit(store_id: int, cart: str) -> str:
    outcome = live.shopper_event_append(
        session="test",
        store_id=store_id,
        cart=cart,
        raw={
            "id": str(uuid.uuid4()),
            "type": "shopper.exit_intent",
            "occurred_at": T.isoformat(),
            "data": {"trigger": "mouse_leave"},
        },
        now=T,
    )
    assert outcome.decision is not None
    return outcome.decision.reason


def test_a_shopper_who_declined_reminders_gets_no_exit_offer(store):
    live.onsite_tiers_forget()
    campaign_demo_ensure(store=store)
    store.campaigns.update(holdout_share=0)  # the demo's 10% holdout: no draw here
    declined = cart_abandoned(store.pk, at=T, email="no@example.com", token="cart-declined")
    other = cart_abandoned(store.pk, at=T, email="yes@example.com", token="cart-other-x")
    Suppression.objects.create(
        store=store,
        shopper=cart_shopper_key(shopper_id="", email="no@example.com") or "",
        kind=Suppression.Kind.DONT_REMIND,
        created_at=T,
    )
    assert _exit(store.pk, declined.token) == "dont_remind"
    assert _exit(store.pk, other.token) == "eligible"
