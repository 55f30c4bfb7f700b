"""Writes of the campaigns app."""

from __future__ import annotations

from datetime import datetime
from datetime import time as dt_time
from decimal import Decimal

from django.db import transaction

from campaigns.models import Campaign, CampaignSettings, Tier
from carts.models import Store

DEMO_CAMPAIGN_NAME = "Demo: exit-intent offer"


# The demo campaign (docs: the README's demo timeline). Short on purpose, so a newcomer sees the
# whole sequence within an hour of `make run`: a cart is abandoned after 2 minutes without
# activity, the email follows 3 minutes later, the discount email 15 minutes after abandonment.
# One cart in ten is in the holdout (no offer, no email: the lift's baseline), the on-site offer
# waits an hour per cart, and there are no quiet hours and no per-shopper email cap (a real
# campaign keeps both; the cart cap of 3 still bounds each cart).
DEMO_HOLDOUT_SHARE = Decimal("0.10")
DEMO_INACTIVITY_MINUTES = 2
DEMO_ONSITE_COOLDOWN_HOURS = 1
DEMO_EMAIL_DELAY_MINUTES = 3
DEMO_DISCOUNT_DELAY_MINUTES = 15
DEMO_OFFER_BODY = "Finish your order in the next 30 minutes and save 10% (up to €20.00)."

_DEMO_CAMPAIGN: dict[str, object] = {
    "holdout_share": DEMO_HOLDOUT_SHARE,
    "inactivity_minutes": DEMO_INACTIVITY_MINUTES,
    "shopper_cap_hours": 0,
    "quiet_start": None,
    "quiet_end": None,
}
_DEMO_TIERS: dict[int, dict[str, object]] = {
    1: {
        "channel": Tier.Channel.ONSITE,
        "min_score": 0.0,
        "min_cart_value": 1,
        "offer_kind": Tier.OfferKind.PERCENT_DISCOUNT,
        "percent": 10,
        "discount_cap": 2000,
        "headline": "Wait, 10% off your cart",
        "body": DEMO_OFFER_BODY,
        "cta_label": "Use my discount",
        "cta_url": "",
        "cooldown_hours": DEMO_ONSITE_COOLDOWN_HOURS,
        "offer_ttl_minutes": 30,
    },
    2: {
        "channel": Tier.Channel.EMAIL,
        "delay_minutes": DEMO_EMAIL_DELAY_MINUTES,
        "min_score": 0.0,
        "subject_template": "Your cart at {{ store_name }} is waiting",
    },
    3: {
        "channel": Tier.Channel.DISCOUNT,
        "delay_minutes": DEMO_DISCOUNT_DELAY_MINUTES,
        "min_score": 0.0,
        "offer_kind": Tier.OfferKind.PERCENT_DISCOUNT,
        "discount_min": 5,
        "discount_max": 15,
        "discount_cap": 3000,
        "subject_template": "A discount for the cart you left at {{ store_name }}",
    },
}
# What earlier demo definitions saved (the model's defaults where they set nothing). A field still
# holding one of these takes the current definition's value; one a person changed is left alone.
_DEMO_CAMPAIGN_BEFORE: dict[str, set[object]] = {
    "holdout_share": {Decimal("0")},
    "inactivity_minutes": {30},
    "shopper_cap_hours": {24},
    "quiet_start": {dt_time(21, 0)},
    "quiet_end": {dt_time(8, 0)},
}
_DEMO_TIERS_BEFORE: dict[int, dict[str, set[object]]] = {
    1: {
        "cooldown_hours": {0},
        "body": {"Finish your order in the next 30 minutes and save 10% (up to 20.00)."},
    },
    2: {"delay_minutes": {60}},
    3: {"delay_minutes": {24 * 60}},
}


def _demo_upgrade(
    row: Campaign | Tier | CampaignSettings,
    new: dict[str, object],
    before: dict[str, set[object]],
) -> None:
    """Give ``row`` the current demo definition's value of each field that still holds an earlier
    definition's (idempotent: a second run finds nothing to change)."""
    changed = [
        field
        for field, old in before.items()
        if getattr(row, field) in old and getattr(row, field) != new[field]
    ]
    for field in changed:
        setattr(row, field, new[field])
    if changed:
        row.save(update_fields=changed)


# The demo store shares its on-site budget with `make run`'s simulated shoppers (a new one every
# 3 s): sized so that they do not use up a newcomer's code. A real store keeps the defaults.
_DEMO_BUDGET: dict[str, object] = {
    "onsite_codes_per_hour": 5_000,
    "onsite_discount_per_day": 100_000_000,
}
_DEFAULT_BUDGET: dict[str, set[object]] = {
    "onsite_codes_per_hour": {60},
    "onsite_discount_per_day": {100_000},
}


@transaction.atomic
def campaign_demo_ensure(*, store: Store) -> Campaign:
    """The demo store's active campaign (the definition above): an on-site 10% offer to any cart
    with items on exit intent, then an email and a discount email minutes after the cart is
    abandoned (consent required). A demo campaign saved by an earlier version gets the current
    definition where it still holds the earlier one's values (so `make run` upgrades it, and
    keeps what a person changed in the admin)."""
    origin = next(iter(store.allowed_origins or []), "http://127.0.0.1:8000")
    settings_row, created = CampaignSettings.objects.get_or_create(
        store=store,
        defaults={
            "email_from": f"{store.name} <shop@example.com>",
            "cart_url": f"{origin}/demo/?items={{items}}&code={{code}}",
            **_DEMO_BUDGET,
        },
    )
    if not created:  # an earlier demo's defaults: upgraded, a person's values kept
        _demo_upgrade(settings_row, _DEMO_BUDGET, _DEFAULT_BUDGET)
    campaign, created = Campaign.objects.get_or_create(
        store=store,
        name=DEMO_CAMPAIGN_NAME,
        defaults={"active": True, "priority": 0, **_DEMO_CAMPAIGN},
    )
    if created:
        for position, fields in _DEMO_TIERS.items():
            Tier.objects.create(campaign=campaign, position=position, **fields)  # type: ignore[arg-type]
    else:
        _demo_upgrade(campaign, _DEMO_CAMPAIGN, _DEMO_CAMPAIGN_BEFORE)
        tiers = {t.position: t for t in Tier.objects.filter(campaign=campaign)}
        for position, before in _DEMO_TIERS_BEFORE.items():
            tier = tiers.get(position)
            if tier is not None and tier.channel == _DEMO_TIERS[position]["channel"]:
                _demo_upgrade(tier, _DEMO_TIERS[position], before)
    if campaign.active and campaign.activated_at is None:  # active from its creation
        campaign.activated_at = campaign.created_at
        campaign.save(update_fields=["activated_at"])
    return campaign


def campaign_activate(*, campaign_id: int, now: datetime) -> bool:
    """Activate a campaign that has a tier (keeping its first activation time); False when it
    has none. Under the row's lock, so a concurrent tier deletion cannot slip in between."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        if not Tier.objects.filter(campaign=campaign).exists():
            return False
        campaign.active = True
        if campaign.activated_at is None:
            campaign.activated_at = now
        campaign.save(update_fields=["active", "activated_at"])
    return True


_NOT_COPIED = {"id", "created_at", "activated_at", "enrolled_through"}


@transaction.atomic
def campaign_duplicate(*, campaign: Campaign) -> Campaign:
    """A paused copy of the campaign and its tiers, named "Copy of <name>"."""
    values = {
        field.attname: getattr(campaign, field.attname)
        for field in Campaign._meta.concrete_fields
        if field.name not in _NOT_COPIED
    }
    max_length = Campaign._meta.get_field("name").max_length or 200
    values.update(name=f"Copy of {campaign.name}"[:max_length], active=False)
    copy = Campaign.objects.create(**values)
    Tier.objects.bulk_create(
        Tier(
            **{
                field.attname: getattr(tier, field.attname)
                for field in Tier._meta.concrete_fields
                if field.name not in {"id", "campaign"}
            },
            campaign=copy,
        )
        for tier in Tier.objects.filter(campaign=campaign).order_by("position")
    )
    return copy


def campaigns_pause(*, campaign_ids: list[int]) -> int:
    """Pause campaigns: no new carts join; steps already scheduled still run their checks."""
    return Campaign.objects.filter(pk__in=campaign_ids).update(active=False)
