"""Reads of the campaigns app."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from campaigns.coupons import Budget, CodeTerms
from campaigns.models import Campaign, CampaignSettings, Step, Suppression, Tier


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
    # For the offer's code (campaigns.coupons): the tier's terms and the store's budget and margin.
    # None: the tier was read without them (its offer then carries no code).
    code_terms: CodeTerms | None = field(default=None, compare=False)
    budget: Budget | None = field(default=None, compare=False)
    gross_margin_percent: int = 40
    # The store as Redis keys name it: its id and creation time (a database recreated under the
    # same Redis, as in tests or a restore, does not inherit another store's keys).
    store_key: str = ""


def onsite_offer_for_store(*, store_id: int) -> OnsiteOffer | None:
    """The on-site tier of the store's highest-priority active campaign that has one, with what
    its codes need (the tier's code terms, the store's on-site budget and gross margin)."""
    tier = (
        Tier.objects.filter(
            campaign__store_id=store_id, campaign__active=True, channel=Tier.Channel.ONSITE
        )
        .select_related("campaign__store")
        .order_by("-campaign__priority", "campaign_id", "position")
        .first()
    )
    if tier is None:
        return None
    # A store without settings gets the fields' defaults.
    settings = CampaignSettings.objects.filter(store_id=store_id).first() or CampaignSettings()
    return onsite_offer_of(tier, settings=settings)


def onsite_offer_of(tier: Tier, *, settings: CampaignSettings | None = None) -> OnsiteOffer:
    """An on-site tier as plain values (its campaign is read too); with the store's
    ``settings``, also what its codes need."""
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
        code_terms=None if settings is None else CodeTerms.of(tier),
        budget=None
        if settings is None
        else Budget(
            codes_per_hour=settings.onsite_codes_per_hour,
            value_per_day=settings.onsite_discount_per_day,
        ),
        gross_margin_percent=40 if settings is None else settings.gross_margin_percent,
        store_key=""
        if settings is None
        else f"{campaign.store_id}.{campaign.store.created_at.timestamp():.6f}",
    )


def reminders_declined(*, store_id: int, shopper: str) -> bool:
    """Whether the shopper asked the store not to remind them (campaigns.tracking)."""
    return Suppression.objects.filter(
        store_id=store_id, shopper=shopper, kind=Suppression.Kind.DONT_REMIND
    ).exists()


def step_id_for_link(*, link_id: uuid.UUID) -> int:
    """The step whose email carried links with this ``link_id``; Step.DoesNotExist if none."""
    return Step.objects.filter(link_id=link_id).values_list("pk", flat=True).get()
