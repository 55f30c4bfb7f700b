"""Reads of the campaigns app."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from campaigns.models import Campaign, Step, Suppression, Tier


@dataclass(frozen=True, slots=True)
class OnsiteOffer:
    """The active campaign's on-site tier, as plain values (cached per process by recovery)."""

    campaign_id: int
    campaign_name: str
    holdout_share: Decimal
    tier_id: int
    min_score: float
    min_cart_value: int
    offer_kind: str
    percent: int | None
    discount_cap: int | None
    headline: str
    body: str
    cta_label: str
    cta_url: str
    cooldown_hours: int
    offer_ttl_minutes: int


def onsite_offer_for_store(*, store_id: int) -> OnsiteOffer | None:
    """The on-site tier of the store's highest-priority active campaign that has one."""
    tier = (
        Tier.objects.filter(
            campaign__store_id=store_id, campaign__active=True, channel=Tier.Channel.ONSITE
        )
        .select_related("campaign")
        .order_by("-campaign__priority", "campaign_id", "position")
        .first()
    )
    return None if tier is None else onsite_offer_of(tier)


def onsite_offer_of(tier: Tier) -> OnsiteOffer:
    """An on-site tier as plain values (its campaign is read too)."""
    campaign: Campaign = tier.campaign
    return OnsiteOffer(
        campaign_id=campaign.pk,
        campaign_name=campaign.name,
        holdout_share=campaign.holdout_share,
        tier_id=tier.pk,
        min_score=tier.min_score,
        min_cart_value=tier.min_cart_value,
        offer_kind=tier.offer_kind,
        percent=tier.percent,
        discount_cap=tier.discount_cap,
        headline=tier.headline,
        body=tier.body,
        cta_label=tier.cta_label,
        cta_url=tier.cta_url,
        cooldown_hours=tier.cooldown_hours,
        offer_ttl_minutes=tier.offer_ttl_minutes,
    )


def reminders_declined(*, store_id: int, shopper: str) -> bool:
    """Whether the shopper asked the store not to remind them (campaigns.tracking)."""
    return Suppression.objects.filter(
        store_id=store_id, shopper=shopper, kind=Suppression.Kind.DONT_REMIND
    ).exists()


def step_id_for_link(*, link_id: uuid.UUID) -> int:
    """The step whose email carried links with this ``link_id``; Step.DoesNotExist if none."""
    return Step.objects.filter(link_id=link_id).values_list("pk", flat=True).get()
