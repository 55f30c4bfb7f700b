"""The exit-intent offer decision: pure (no ORM, no clock inside), from the cart, its score, the
store's on-site tier and what the cart was offered before. docs/websocket.md lists the rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from campaigns import discounts
from campaigns.rules import in_holdout
from carts.projections import CONVERTED, Cart

if TYPE_CHECKING:  # the tier's shape only: this module stays free of the ORM
    from campaigns.selectors import OnsiteOffer as OnsiteTier

OFFER = "offer"
NONE = "none"
# Offer kinds that carry a discount code (an on-site code is a campaigns Coupon).
CODE_KINDS = frozenset(discounts.OFFER_KINDS)
# An offer with a code is made at most this often to a cart, a shopper or a client address,
# whatever the tier's cooldown says (0 included): a new code on every exit intent is farming.
CODE_MIN_COOLDOWN = timedelta(hours=1)
# An offer shown without its code (cooldown elsewhere, budget, no discount): the tier's own words
# may promise the discount, so it says only this.
UNCODED_HEADLINE = "Before you go"
UNCODED_BODY = "Your cart is saved for you."
UNCODED_CTA = "Back to my cart"  # not the tier's button, which may say "Use my discount"
# Coupon kind -> the offer kind the browser shows.
_OFFER_KIND_OF = {kind: offer_kind for offer_kind, kind in discounts.OFFER_KINDS.items()}


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


def carries_code(tier: OnsiteTier) -> bool:
    """Whether the tier's offers carry a discount code."""
    return tier.offer_kind in CODE_KINDS


def cooldown(tier: OnsiteTier) -> timedelta:
    """How long after an offer the next one waits: the tier's cooldown, at least
    CODE_MIN_COOLDOWN for an offer with a code (timedelta(0): no wait)."""
    saved = timedelta(hours=tier.cooldown_hours)
    return max(saved, CODE_MIN_COOLDOWN) if carries_code(tier) else saved


def decide(
    *,
    cart: Cart,
    score: float | None,
    tier: OnsiteTier | None,
    last_offer: datetime | None,
    shopper: str,
    now: datetime,
    offer_id: str,
    code: str | None = None,
    declined: bool = False,
) -> Decision:
    """Whether and what to offer a shopper showing exit intent (``declined``: the shopper asked
    not to be reminded, from a campaign email). Without ``code``, an offer of a tier with codes
    carries the tier's terms and no code: the caller then gives it the code it issued
    (``offer_coded``) or shows it without one (``offer_uncoded``)."""
    if tier is None:
        return Decision(NONE, "no_campaign")
    if cart.status == CONVERTED:
        return Decision(NONE, "converted")
    if declined:
        return Decision(NONE, "dont_remind")
    if not cart.lines:
        return Decision(NONE, "empty_cart")
    wait = cooldown(tier)
    if last_offer is not None and wait and now - last_offer < wait:
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
    *, tier: OnsiteTier, cart: Cart, now: datetime, offer_id: str, code: str | None
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
        if code is not None:
            offer["discount_code"] = code
        if tier.percent:
            off = cart.value * tier.percent // 100
            offer["discount_amount"] = min(off, tier.discount_cap) if tier.discount_cap else off
            offer["currency"] = cart.currency
    elif tier.offer_kind == "free_shipping" and code is not None:
        offer["discount_code"] = code
    return offer


_FRAME = ("id", "headline", "body", "cta_label", "cta_url", "expires_at")


def offer_coded(
    offer: dict[str, Any],
    *,
    code: str,
    kind: str,
    amount: int,
    cap: int | None,
    currency: str,
    min_cart_value: int,
    code_expires_at: datetime,
    cart_value: int,
) -> dict[str, Any]:
    """The offer with its code's terms as stored (campaigns Coupon): kind, percentage or amount,
    cap, and what it takes off this cart computed as redemption computes it, so the frame never
    promises other terms than ``/coupons/validate`` and ``/coupons/redeem`` apply."""
    coded: dict[str, Any] = {key: offer[key] for key in _FRAME}
    coded["kind"] = _OFFER_KIND_OF[kind]
    if kind == discounts.PERCENT:
        coded["percent"] = amount
        coded["discount_cap"] = cap
    elif kind == discounts.FIXED:
        coded["amount"] = amount
    coded["discount_code"] = code
    if kind != discounts.FREE_SHIPPING:
        coded["discount_amount"] = discounts.discount_applied(
            kind=kind, amount=amount, cap=cap, cart_value=cart_value
        )
        coded["currency"] = currency
    if min_cart_value:
        coded["min_cart_value"] = min_cart_value
    coded["code_expires_at"] = code_expires_at.isoformat()
    return coded


def offer_uncoded(offer: dict[str, Any]) -> dict[str, Any]:
    """The offer without a code: a plain reminder (the tier's own headline, body and button may
    promise the discount)."""
    plain: dict[str, Any] = {key: offer[key] for key in _FRAME}
    plain.update(
        kind="message", headline=UNCODED_HEADLINE, body=UNCODED_BODY, cta_label=UNCODED_CTA
    )
    return plain
