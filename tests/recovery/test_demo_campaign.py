"""The demo campaign's definition (campaigns.services.campaign_demo_ensure): what a newcomer sees
within an hour of `make run`, and how `make run` upgrades a demo store an earlier version made."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.management import call_command

from campaigns.models import Campaign, CampaignSettings, Tier
from campaigns.services import DEMO_CAMPAIGN_NAME, campaign_demo_ensure
from carts.models import Store
from carts.services import DEMO_STORE_NAME
from recovery import offers

OLD_BODY = "Finish your order in the next 30 minutes and save 10% (up to 20.00)."


def _tiers(campaign: Campaign) -> dict[int, Tier]:
    return {t.position: t for t in Tier.objects.filter(campaign=campaign)}


def test_the_demo_campaign_shows_the_whole_sequence_within_an_hour(store) -> None:
    campaign = campaign_demo_ensure(store=store)
    assert campaign.active and campaign.activated_at is not None
    assert campaign.holdout_share == Decimal("0.10")
    assert campaign.inactivity_minutes == 2
    assert (campaign.quiet_start, campaign.quiet_end, campaign.shopper_cap_hours) == (None, None, 0)
    tiers = _tiers(campaign)
    assert [(t.channel, t.delay_minutes) for t in tiers.values()] == [
        ("onsite", 0),
        ("email", 3),
        ("discount", 15),
    ]
    onsite = tiers[1]
    assert onsite.cooldown_hours == 1  # one offer per cart an hour, never "no limit"
    assert (onsite.offer_kind, onsite.percent, onsite.discount_cap) == (
        "percent_discount",
        10,
        2000,
    )
    assert onsite.body.endswith("save 10% (up to €20.00).")  # the cap with its currency
    assert onsite.cta_label == "Use my discount"
    # The last email is due well within the hour after the cart's last activity.
    last = max(t.delay_minutes for t in tiers.values())
    assert campaign.inactivity_minutes + last <= 30
    settings = CampaignSettings.objects.get(store=store)
    assert settings.cart_url.endswith("/demo/?items={items}&code={code}")


def _old_demo_campaign(store: Store) -> Campaign:
    """The demo campaign as the version before this one made it."""
    CampaignSettings.objects.create(
        store=store,
        email_from=f"{store.name} <shop@example.com>",
        cart_url="http://127.0.0.1:8000/demo/?items={items}&code={code}",
    )
    campaign = Campaign.objects.create(
        store=store, name=DEMO_CAMPAIGN_NAME, active=True, holdout_share=Decimal("0"), priority=0
    )
    Tier.objects.create(
        campaign=campaign, position=1, channel=Tier.Channel.ONSITE, min_score=0.0,
        min_cart_value=1, offer_kind=Tier.OfferKind.PERCENT_DISCOUNT, percent=10,
        discount_cap=2000, headline="Wait, 10% off your cart", body=OLD_BODY,
        cta_label="Use my discount", cta_url="", cooldown_hours=0, offer_ttl_minutes=30,
    )  # fmt: skip
    Tier.objects.create(
        campaign=campaign, position=2, channel=Tier.Channel.EMAIL, delay_minutes=60,
        min_score=0.0, subject_template="Your cart at {{ store_name }} is waiting",
    )  # fmt: skip
    Tier.objects.create(
        campaign=campaign, position=3, channel=Tier.Channel.DISCOUNT, delay_minutes=24 * 60,
        min_score=0.0, offer_kind=Tier.OfferKind.PERCENT_DISCOUNT, discount_min=5,
        discount_max=15, discount_cap=3000,
        subject_template="A discount for the cart you left at {{ store_name }}",
    )  # fmt: skip
    return campaign


@pytest.fixture
def demo_store(db, settings, tmp_path) -> Store:
    settings.DEMO_STORE_FILE = tmp_path / "demo-store.json"
    call_command("create_store", "--demo", "--origin", "http://127.0.0.1:8000", stdout=None)
    store = Store.objects.get(name=DEMO_STORE_NAME)
    Campaign.objects.filter(store=store).delete()
    CampaignSettings.objects.filter(store=store).delete()
    return store


def test_make_run_upgrades_an_earlier_demo_campaign_once(demo_store, settings) -> None:
    old = _old_demo_campaign(demo_store)
    assert old.activated_at is None  # as the admin review found it

    call_command("create_store", "--demo", "--origin", "http://127.0.0.1:8000")  # `make run`

    [campaign] = Campaign.objects.filter(store=demo_store)
    assert campaign.pk == old.pk
    assert campaign.holdout_share == Decimal("0.10")
    assert (campaign.inactivity_minutes, campaign.shopper_cap_hours) == (2, 0)
    assert (campaign.quiet_start, campaign.quiet_end) == (None, None)
    assert campaign.activated_at == campaign.created_at
    tiers = _tiers(campaign)
    assert len(tiers) == 3
    assert tiers[1].cooldown_hours == 1
    assert tiers[1].body == "Finish your order in the next 30 minutes and save 10% (up to €20.00)."
    assert (tiers[2].delay_minutes, tiers[3].delay_minutes) == (3, 15)
    assert offers.cooldown(tiers[1]) == dt.timedelta(hours=1)  # type: ignore[arg-type]

    # Idempotent: a second start changes nothing.
    before = {t.pk: (t.cooldown_hours, t.delay_minutes, t.body) for t in tiers.values()}
    call_command("create_store", "--demo", "--origin", "http://127.0.0.1:8000")
    assert Campaign.objects.filter(store=demo_store).count() == 1
    again = _tiers(campaign)
    assert {t.pk: (t.cooldown_hours, t.delay_minutes, t.body)
            for t in again.values()} == before  # fmt: skip
    assert Campaign.objects.get(pk=campaign.pk).holdout_share == Decimal("0.10")


def test_what_a_person_changed_in_the_admin_is_kept(demo_store) -> None:
    old = _old_demo_campaign(demo_store)
    Campaign.objects.filter(pk=old.pk).update(
        holdout_share=Decimal("0.20"), quiet_start=dt.time(22), quiet_end=dt.time(6)
    )
    Tier.objects.filter(campaign=old, position=1).update(cooldown_hours=6, body="My own words")
    Tier.objects.filter(campaign=old, position=2).update(delay_minutes=45)

    campaign_demo_ensure(store=demo_store)

    campaign = Campaign.objects.get(pk=old.pk)
    assert campaign.holdout_share == Decimal("0.20")
    assert (campaign.quiet_start, campaign.quiet_end) == (dt.time(22), dt.time(6))
    assert campaign.inactivity_minutes == 2  # still the earlier default: upgraded
    tiers = _tiers(campaign)
    assert (tiers[1].cooldown_hours, tiers[1].body) == (6, "My own words")
    assert (tiers[2].delay_minutes, tiers[3].delay_minutes) == (45, 15)


def test_the_demo_stores_on_site_budget_leaves_room_for_the_simulator_and_a_newcomer(db):
    from campaigns.models import CampaignSettings
    from campaigns.services import campaign_demo_ensure
    from carts import services as cart_services
    from carts.models import Store

    store = Store.objects.get(pk=cart_services.store_create(name="Demo budget").store_id)
    campaign_demo_ensure(store=store)
    row = CampaignSettings.objects.get(store=store)
    assert (row.onsite_codes_per_hour, row.onsite_discount_per_day) == (5_000, 100_000_000)

    # an earlier demo store with the defaults is upgraded; a merchant's own budget is kept
    row.onsite_codes_per_hour, row.onsite_discount_per_day = 60, 100_000
    row.save()
    campaign_demo_ensure(store=store)
    row.refresh_from_db()
    assert row.onsite_codes_per_hour == 5_000
    row.onsite_codes_per_hour = 7
    row.save()
    campaign_demo_ensure(store=store)
    row.refresh_from_db()
    assert row.onsite_codes_per_hour == 7
