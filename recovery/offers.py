"""The exit-intent offer decision: pure (no ORM, no clock inside), from the cart, its score, the
store's on-site tier and what the cart was offered before. docs/websocket.md lists the rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from campaigns.rules import in_holdout
from carts.projections import CONVERTED, Cart

if TYPE_CHECKING:  # the tier's shape only: this module stays free of the ORM
    from campaigns.selectors import OnsiteOffer as OnsiteTier

OFFER = "offer"
NONE = "none"


@dataclass(frozen=True, slots=True)
class Decision:
    decision: str  # OFFER or NONE
    reason: str
    holdout: bool = False
    offer: dict[str, Any] | None = None

    def as_event_data(
        self, *, tier: OnsiteTier | None, score: float | None, model_version: str
    ) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reason": self.reason,
            "campaign": tier.campaign_id if tier else None,
            "tier": tier.tier_id if tier else None,
            "score": score,
            "model_version": model_version,
            "holdout": self.holdout,
            "offer": self.offer,
        }


def last_offer_at(accumulator: Mapping[str, Any]) -> datetime | None:
    """When the cart was last made an offer, as the scorer's accumulator remembers it."""
    offers = accumulator.get("offers")
    if not offers or not offers.get("last_at"):
        return None
    return datetime.fromisoformat(offers["last_at"])


def decide(
    *,
    cart: Cart,
    score: float | None,
    tier: OnsiteTier | None,
    last_offer: datetime | None,
    shopper: str,
    now: datetime,
    offer_id: str,
    code: str,
    declined: bool = False,
) -> Decision:
    """Whether and what to offer a shopper showing exit intent (``declined``: the shopper asked
    not to be reminded, from a campaign email)."""
    if tier is None:
        return Decision(NONE, "no_campaign")
    if cart.status == CONVERTED:
        return Decision(NONE, "converted")
    if declined:
        return Decision(NONE, "dont_remind")
    if not cart.lines:
        return Decision(NONE, "empty_cart")
    if (
        last_offer is not None
        and tier.cooldown_hours > 0
        and now - last_offer < timedelta(hours=tier.cooldown_hours)
    ):
        return Decision(NONE, "cooldown")
    if score is None or score < tier.min_score:
        return Decision(NONE, "below_min_score")
    if cart.value < tier.min_cart_value:
        return Decision(NONE, "below_min_value")
    if in_holdout(campaign_id=tier.campaign_id, shopper=shopper, share=tier.holdout_share):
        return Decision(NONE, "holdout", holdout=True)
    offer = offer_build(tier=tier, cart=cart, now=now, offer_id=offer_id, code=code)
    return Decision(OFFER, "eligible", offer=offer)


def offer_build(
    *, tier: OnsiteTier, cart: Cart, now: datetime, offer_id: str, code: str
) -> dict[str, Any]:
    """The offer frame for the browser, from the tier (the exit-intent offer and a campaign's
    scheduled on-site nudge look the same)."""
    offer: dict[str, Any] = {
        "id": offer_id,
        "kind": tier.offer_kind,
        "headline": tier.headline,
        "body": tier.body,
        "cta_label": tier.cta_label,
        "cta_url": tier.cta_url,
        "expires_at": (now + timedelta(minutes=tier.offer_ttl_minutes)).isoformat(),
    }
    if tier.offer_kind == "percent_discount":
        offer["percent"] = tier.percent
        offer["discount_cap"] = tier.discount_cap
        offer["discount_code"] = code
        if tier.percent:
            off = cart.value * tier.percent // 100
            offer["discount_amount"] = min(off, tier.discount_cap) if tier.discount_cap else off
            offer["currency"] = cart.currency
    elif tier.offer_kind == "free_shipping":
        offer["discount_code"] = code
    return offer
