"""What campaigns needs from recovery, registered when the app is ready (campaigns cannot import
recovery): the council's price sensitivity for discount amounts, and the on-site nudge channel."""

from __future__ import annotations

import uuid
from datetime import datetime

from campaigns.extensions import HOOKS
from campaigns.models import CampaignSettings, Step, Tier
from campaigns.selectors import onsite_offer_of
from carts.models import CartState
from carts.services import NewEvent, cart_from_row
from recovery import council, live, offers, serving

_NAMESPACE = uuid.UUID("9d2f6c1a-4b8e-4f7a-b3c5-2e1d0a9f8b76")
PRICE_SPECIALIST = "price"


def price_sensitivity(store_id: int, row: CartState, now: datetime) -> float | None:
    """The price specialist's push towards abandonment, as a probability (0.5: no push)."""
    if not row.features:
        return None
    _, _, why = serving.explain(
        store_id=store_id, cart=cart_from_row(row), wrapper=row.features, at=now
    )
    for specialist in why.specialists:
        if specialist.name == PRICE_SPECIALIST:
            return council.sigmoid(specialist.log_odds)
    return None


def onsite_offer(
    store_id: int, row: CartState, tier: Tier, step: Step, now: datetime
) -> tuple[dict, list[NewEvent]]:
    """A campaign's on-site nudge for a cart, recorded as an offer decision (so the browser gets
    it again on reconnect, like an exit-intent offer). A discount's code is a coupon, issued as
    an exit intent's is (recovery.live.offer_code_issue): the cart's code if it has one, else a
    new one within the store's budget; its campaign.coupon_issued event comes first."""
    cfg = CampaignSettings.objects.filter(store_id=store_id).first() or CampaignSettings()
    onsite = onsite_offer_of(tier, settings=cfg)
    decision = offers.Decision(
        offers.OFFER,
        "campaign_step",
        offer=offers.offer_build(
            tier=onsite,
            cart=cart_from_row(row),
            now=now,
            offer_id=uuid.uuid5(_NAMESPACE, f"step:{step.pk}").hex,
            code=None,
        ),
    )
    recorded: list[NewEvent] = []
    if offers.carries_code(onsite):
        decision, issued = live.offer_code_issue(
            store_id=store_id,
            cart=row.token,
            state=row,
            decision=decision,
            tier=onsite,
            shopper=step.shopper or None,
            score=row.score,
            client_ip=None,
            now=now,
            step_id=step.pk,
        )
        if issued is not None:
            recorded.append(issued)
    assert decision.offer is not None
    offer = {**decision.offer, "step": step.pk}
    event = NewEvent(
        event_id=uuid.uuid5(_NAMESPACE, f"decided:step:{step.pk}"),
        cart=row.token,
        type=live.OFFER_DECIDED,
        schema_version=1,
        occurred_at=now,
        data={
            "decision": offers.OFFER,
            "reason": decision.reason,
            "campaign": tier.campaign_id,
            "tier": tier.pk,
            "step": step.pk,
            "score": row.score,
            "model_version": row.model_version,
            "holdout": False,
            "offer": offer,
        },
    )
    return offer, [*recorded, event]


def register() -> None:
    HOOKS.price_sensitivity = price_sensitivity
    HOOKS.onsite_offer = onsite_offer
