"""The merchant admin for campaigns: a merchant (staff, not superuser, no model permissions)
configures campaigns of their own store with tiers inline, sees clear validation errors, runs the
activate / pause / duplicate actions, previews emails, and never sees another store's data."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from campaigns.admin import duration_text
from campaigns.models import Campaign, CampaignSettings, Coupon, Enrollment, Suppression, Tier
from carts import services
from carts.models import Store, StoreMember

ADD_URL = "/admin/campaigns/campaign/"
CHANGELIST = "/admin/campaigns/campaign/"
ADD = "/admin/campaigns/campaign/add/"
SETTINGS_ADD = "/admin/campaigns/campaignsettings/add/"


def make_store(name: str) -> Store:
    return Store.objects.get(pk=services.store_create(name=name).store_id)


def make_user(username: str, *, store: Store | None = None, role: str = "merchant") -> User:
    user = get_user_model().objects.create_user(username, f"{username}@example.com", "pw-123456")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    if store is not None:
        StoreMember.objects.create(user=user, store=store, role=role)
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def shop_a(db) -> Store:
    return make_store("Shop A")


@pytest.fixture
def shop_b(db) -> Store:
    return make_store("Shop B")


@pytest.fixture
def merchant(shop_a) -> Client:
    return logged_in(make_user("merchant-a", store=shop_a))


def campaign_fields(store: Store, **overrides: Any) -> dict[str, Any]:
    fields = {
        "name": "Win back",
        "store": store.pk,
        "inactivity_minutes": "45",
        "max_age_days": "5",
        "min_score": "30",
        "min_cart_value": "20.00",
        "only_skus": "SKU-1\nSKU-2",
        "only_categories": "",
        "holdout_share": "15",
        "shopper_cap_hours": "12",
        "cart_cap": "2",
        "quiet_start": "22:00",
        "quiet_end": "07:30",
        "attribution_hours": "48",
        "priority": "5",
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


TIER_DEFAULTS = {
    "position": "1",
    "channel": "onsite",
    "delay_minutes": "0",
    "min_score": "50",
    "min_cart_value": "0",
    "offer_kind": "message",
    "discount_cap": "",
    "percent": "",
    "headline": "Before you go",
    "body": "Your cart is saved for you.",
    "cta_label": "Back to my cart",
    "cta_url": "",
    "cooldown_hours": "24",
    "offer_ttl_minutes": "30",
    "subject_template": "Your cart at {{ store_name }}",
    "body_template": "{% for item in items %}{{ item.quantity }} x {{ item.name }}\n{% endfor %}",
    "discount_min": "",
    "discount_max": "",
    "code_expiry_hours": "48",
    "recent_code_days": "30",
    "recent_code_policy": "smaller",
    "margin_floor_percent": "",
}


def tiers_formset(tiers: list[dict[str, Any]], *, initial: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = {
        "tiers-TOTAL_FORMS": str(len(tiers)),
        "tiers-INITIAL_FORMS": str(initial),
        "tiers-MIN_NUM_FORMS": "0",
        "tiers-MAX_NUM_FORMS": "1000",
    }
    for index, tier in enumerate(tiers):
        for key, value in {**TIER_DEFAULTS, **tier}.items():
            if value is not None:
                data[f"tiers-{index}-{key}"] = value
    return data


THREE_TIERS = [
    {"position": "1", "channel": "onsite", "delay_minutes": "0", "offer_kind": "message"},
    {"position": "2", "channel": "email", "delay_minutes": "60"},
    {
        "position": "3",
        "channel": "discount",
        "delay_minutes": "1440",
        "offer_kind": "percent_discount",
        "discount_min": "5",
        "discount_max": "15",
        "discount_cap": "20.00",
        "margin_floor_percent": "20",
        "body_template": "Use {{ code }} for {{ discount }} off until {{ code_expires }}.",
    },
]


def post_add(client: Client, store: Store, tiers: list[dict[str, Any]], **overrides: Any):
    return client.post(ADD, {**campaign_fields(store, **overrides), **tiers_formset(tiers)})


def form_errors(response) -> dict[str, list[str]]:
    return {k: list(v) for k, v in response.context["adminform"].form.errors.items()}


def tier_errors(response) -> list[dict[str, list[str]]]:
    formset = response.context["inline_admin_formsets"][0].formset
    return [{k: list(v) for k, v in form.errors.items()} for form in formset.forms]


def tier_non_form_errors(response) -> list[str]:
    return list(response.context["inline_admin_formsets"][0].formset.non_form_errors())


def tier_rows(campaign: Campaign) -> list[tuple]:
    return list(
        campaign.tiers.order_by("position").values_list(
            "position", "channel", "delay_minutes", "offer_kind", "discount_min", "discount_max",
            "discount_cap", "margin_floor_percent",
        )
    )  # fmt: skip


# Creating a campaign ------------------------------------------------------------------------------


def test_a_merchant_creates_a_campaign_with_three_tiers_through_the_add_form(merchant, shop_a):
    response = post_add(merchant, shop_a, THREE_TIERS)

    assert response.status_code == 302
    assert response["Location"] == CHANGELIST
    campaign = Campaign.objects.get()
    assert (
        campaign.store_id, campaign.name, campaign.active, campaign.activated_at,
        campaign.inactivity_minutes, campaign.min_score, campaign.min_cart_value,
        campaign.only_skus, campaign.only_categories, campaign.holdout_share,
        campaign.shopper_cap_hours, campaign.cart_cap, campaign.quiet_start, campaign.quiet_end,
        campaign.attribution_hours, campaign.priority, campaign.max_age_days,
    ) == (
        shop_a.pk, "Win back", False, None,
        45, 0.3, 2000,
        ["SKU-1", "SKU-2"], [], Decimal("0.15"),
        12, 2, dt.time(22, 0), dt.time(7, 30),
        48, 5, 5,
    )  # fmt: skip
    assert tier_rows(campaign) == [
        (1, "onsite", 0, "message", None, None, None, None),
        (2, "email", 60, "message", None, None, None, None),
        (3, "discount", 1440, "percent_discount", 5, 15, 2000, 20),
    ]
    assert campaign.tiers.get(position=3).body_template == (
        "Use {{ code }} for {{ discount }} off until {{ code_expires }}."
    )


def test_a_campaigns_maximum_age_is_at_least_a_day(merchant, shop_a):
    response = post_add(merchant, shop_a, THREE_TIERS, max_age_days="0")

    assert response.status_code == 200
    assert form_errors(response) == {"max_age_days": ["Enter at least 1d (1 day)."]}
    assert not Campaign.objects.exists()


def test_the_add_form_offers_only_the_merchants_store_and_preselects_it(merchant, shop_a, shop_b):
    page = merchant.get(ADD)

    assert page.status_code == 200
    store_field = page.context["adminform"].form.fields["store"]
    assert list(store_field.queryset) == [shop_a]
    assert page.context["adminform"].form.initial["store"] == str(shop_a.pk)
    assert "Shop B" not in page.content.decode()
    # the tiers' fieldsets say which channel each group of fields is for
    for legend in (
        "When and for whom (every channel)",
        "On-site nudge (on-site tiers only)",
        "Email (email and discount tiers)",
        "Discount code (discount tiers only)",
    ):
        assert legend in page.content.decode()


def test_saving_an_active_campaign_stamps_its_activation_once(merchant, shop_a):
    post_add(merchant, shop_a, THREE_TIERS[:1], active="on")
    campaign = Campaign.objects.get()
    assert campaign.active is True
    first = campaign.activated_at
    assert first is not None

    tier = campaign.tiers.get()
    response = merchant.post(
        f"{CHANGELIST}{campaign.pk}/change/",
        {
            **campaign_fields(shop_a, name="Renamed", active="on"),
            **tiers_formset(
                [{**THREE_TIERS[0], "id": str(tier.pk), "campaign": str(campaign.pk)}], initial=1
            ),
        },
    )

    assert response.status_code == 302
    campaign.refresh_from_db()
    assert (campaign.name, campaign.active, campaign.activated_at) == ("Renamed", True, first)


def test_swapping_two_tiers_positions_saves_despite_the_unique_position(merchant, shop_a):
    post_add(merchant, shop_a, THREE_TIERS[:2])
    campaign = Campaign.objects.get()
    onsite, email = campaign.tiers.order_by("position")

    response = merchant.post(
        f"{CHANGELIST}{campaign.pk}/change/",
        {
            **campaign_fields(shop_a),
            **tiers_formset(
                [
                    {
                        **THREE_TIERS[0],
                        "id": str(onsite.pk),
                        "campaign": str(campaign.pk),
                        "position": "2",
                        "delay_minutes": "90",
                    },
                    {
                        **THREE_TIERS[1],
                        "id": str(email.pk),
                        "campaign": str(campaign.pk),
                        "position": "1",
                        "delay_minutes": "10",
                    },
                ],
                initial=2,
            ),
        },
    )

    assert response.status_code == 302
    rows = campaign.tiers.order_by("position").values_list("pk", "position", "delay_minutes")
    assert list(rows) == [(email.pk, 1, 10), (onsite.pk, 2, 90)]


# Validation ---------------------------------------------------------------------------------------


def test_delays_must_increase_with_position(merchant, shop_a):
    tiers = [
        {"position": "1", "channel": "onsite", "delay_minutes": "30"},
        {"position": "2", "channel": "email", "delay_minutes": "10"},
    ]

    response = post_add(merchant, shop_a, tiers)

    assert response.status_code == 200
    assert tier_errors(response) == [
        {},
        {
            "delay_minutes": [
                "Tier 2 must come after tier 1: its delay (10 minutes) must be more than tier "
                "1's (30 minutes)."
            ]
        },
    ]
    assert "Tier 2 must come after tier 1" in response.content.decode()
    assert Campaign.objects.count() == 0
    assert Tier.objects.count() == 0


def test_positions_must_be_unique(merchant, shop_a):
    tiers = [
        {"position": "1", "channel": "onsite", "delay_minutes": "0"},
        {"position": "1", "channel": "email", "delay_minutes": "60"},
    ]

    response = post_add(merchant, shop_a, tiers)

    assert tier_errors(response) == [
        {},
        {"position": ["Another tier already has position 1: positions must be unique."]},
    ]
    assert Campaign.objects.count() == 0


def test_an_active_campaign_needs_a_tier(merchant, shop_a):
    response = post_add(merchant, shop_a, [], active="on")

    assert response.status_code == 200
    assert tier_non_form_errors(response) == [
        "An active campaign needs at least one tier: add a tier, or untick Active."
    ]
    assert Campaign.objects.count() == 0


def test_a_paused_campaign_may_have_no_tier_yet(merchant, shop_a):
    response = post_add(merchant, shop_a, [])

    assert response.status_code == 302
    assert Campaign.objects.get().tiers.count() == 0


DISCOUNT_TIER = {"position": "1", "channel": "discount", "delay_minutes": "60"}


@pytest.mark.parametrize(
    ("tier", "errors"),
    [
        (
            {"offer_kind": "percent_discount", "discount_min": "20", "discount_max": "10"},
            {
                "discount_min": [
                    "The smallest discount (20 percent) must not exceed the largest (10 percent)."
                ]
            },
        ),
        (
            {"offer_kind": "percent_discount", "discount_min": "10", "discount_max": "95"},
            {"discount_max": ["A percentage discount is at most 90% (not 95)."]},
        ),
        (
            {
                "offer_kind": "percent_discount",
                "discount_min": "5",
                "discount_max": "10",
                "discount_cap": "0",
            },
            {"discount_cap": ["Enter at least 0.01 EUR, or leave it empty for no cap."]},
        ),
        (
            {
                "offer_kind": "fixed_discount",
                "discount_min": "5.00",
                "discount_max": "15.00",
                "discount_cap": "10.00",
            },
            {
                "discount_max": [
                    "A fixed discount must not exceed the cap: the largest discount "
                    "(15.00 EUR) is more than the cap (10.00 EUR)."
                ]
            },
        ),
        (
            {"offer_kind": "fixed_discount", "discount_min": "", "discount_max": ""},
            {
                "discount_min": ["Required for a fixed amount off."],
                "discount_max": ["Required for a fixed amount off."],
            },
        ),
        (
            {"offer_kind": "message"},
            {
                "offer_kind": [
                    "A discount tier gives a percentage discount, a fixed amount off or "
                    "free shipping; use an email tier for a message only."
                ]
            },
        ),
    ],
    ids=[
        "min-above-max",
        "percent-above-90",
        "cap-below-1",
        "fixed-above-cap",
        "no-range",
        "message-only",
    ],
)
def test_discount_tiers_are_checked_field_by_field(merchant, shop_a, tier, errors):
    response = post_add(merchant, shop_a, [{**DISCOUNT_TIER, **tier}])

    assert response.status_code == 200
    assert tier_errors(response) == [errors]
    assert Campaign.objects.count() == 0


def test_valid_discount_tiers_of_each_kind_save(merchant, shop_a):
    tiers = [
        {**DISCOUNT_TIER, "position": "1", "delay_minutes": "10", "offer_kind": "free_shipping"},
        {**DISCOUNT_TIER, "position": "2", "delay_minutes": "20", "offer_kind": "fixed_discount",
         "discount_min": "5.00", "discount_max": "10.00", "discount_cap": "10.00"},
        {**DISCOUNT_TIER, "position": "3", "delay_minutes": "30",
         "offer_kind": "percent_discount", "discount_min": "0", "discount_max": "90"},
    ]  # fmt: skip

    response = post_add(merchant, shop_a, tiers)

    assert response.status_code == 302
    assert tier_rows(Campaign.objects.get()) == [
        (1, "discount", 10, "free_shipping", None, None, None, None),
        (2, "discount", 20, "fixed_discount", 500, 1000, 1000, None),
        (3, "discount", 30, "percent_discount", 0, 90, None, None),
    ]


def test_an_on_site_tier_keeps_the_models_offer_rules(merchant, shop_a):
    tier = {"position": "1", "channel": "onsite", "offer_kind": "percent_discount", "percent": ""}

    response = post_add(merchant, shop_a, [tier])

    assert tier_errors(response) == [{"percent": ["A percentage discount needs its percentage."]}]


def test_a_broken_template_is_reported_on_its_field(merchant, shop_a):
    tier = {
        "position": "1",
        "channel": "email",
        "subject_template": "{% if shopper_name %}Hi {{ shopper_name }}",
        "body_template": "{{ items|nosuchfilter }}",
    }

    response = post_add(merchant, shop_a, [tier])

    assert response.status_code == 200
    assert tier_errors(response) == [
        {
            "subject_template": [
                "This template does not compile: Unclosed tag on line 1: 'if'. Looking for one "
                "of: elif, else, endif."
            ],
            "body_template": ["This template does not compile: Invalid filter: 'nosuchfilter'"],
        }
    ]
    assert "Unclosed tag on line 1" in response.content.decode()
    assert Campaign.objects.count() == 0


def test_templates_of_on_site_tiers_are_not_checked(merchant, shop_a):
    tier = {"position": "1", "channel": "onsite", "subject_template": "{% if %}"}

    response = post_add(merchant, shop_a, [tier])

    assert response.status_code == 302  # on-site tiers send no email


@pytest.mark.parametrize(
    ("start", "end", "field"), [("22:00", "", "quiet_end"), ("", "07:00", "quiet_start")]
)
def test_quiet_hours_need_both_ends_or_neither(merchant, shop_a, start, end, field):
    response = post_add(merchant, shop_a, THREE_TIERS[:1], quiet_start=start, quiet_end=end)

    assert response.status_code == 200
    assert form_errors(response) == {
        field: ["Set both the start and the end of quiet hours, or leave both empty (no quiet "
                "hours)."]
    }  # fmt: skip
    assert Campaign.objects.count() == 0


def test_no_quiet_hours_at_all_is_allowed(merchant, shop_a):
    response = post_add(merchant, shop_a, THREE_TIERS[:1], quiet_start="", quiet_end="")

    assert response.status_code == 302
    assert Campaign.objects.values_list("quiet_start", "quiet_end").get() == (None, None)


def test_holdout_share_is_at_most_half(merchant, shop_a):
    response = post_add(merchant, shop_a, THREE_TIERS[:1], holdout_share="60")

    assert form_errors(response) == {
        "holdout_share": ["Enter a whole percentage from 0 to 50, e.g. 10 for 10%."]
    }


# Campaign settings --------------------------------------------------------------------------------


def settings_fields(store: Store, **overrides: Any) -> dict[str, Any]:
    fields = {
        "store": store.pk,
        "email_from": "Shop A <hello@shop-a.example>",
        "reply_to": "",
        "timezone": "Europe/Berlin",
        "cart_url": "https://shop-a.example/cart?items={items}&code={code}",
        "email_legal_basis": "consent",
        "track_opens": "on",
        "gross_margin_percent": "45",
    }
    fields.update(overrides)
    return fields


def test_a_merchant_saves_the_stores_campaign_settings(merchant, shop_a):
    response = merchant.post(SETTINGS_ADD, settings_fields(shop_a))

    assert response.status_code == 302
    saved = CampaignSettings.objects.get()
    assert (
        saved.store_id, saved.email_from, saved.timezone, saved.cart_url, saved.track_opens,
        saved.track_clicks, saved.gross_margin_percent,
    ) == (
        shop_a.pk, "Shop A <hello@shop-a.example>", "Europe/Berlin",
        "https://shop-a.example/cart?items={items}&code={code}", True, False, 45,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        (
            {"timezone": "Mars/Olympus_Mons"},
            {
                "timezone": [
                    "“Mars/Olympus_Mons” is not a time zone: use an IANA name such as "
                    "Europe/Berlin or UTC."
                ]
            },
        ),
        (
            {"cart_url": "https://shop-a.example/cart?u={user}&c={cart}"},
            {
                "cart_url": [
                    "Unknown placeholder {user}: the cart URL may use only {items}, {code} "
                    "and {cart}."
                ]
            },
        ),
        (
            {"cart_url": "/cart?items={items}"},
            {
                "cart_url": [
                    "Enter a full http:// or https:// address, e.g. "
                    "https://shop.example/cart?items={items}&code={code}."
                ]
            },
        ),
        (
            {"email_from": "Shop A <not an address>"},
            {
                "email_from": [
                    "Enter a sender as Name <address@example.com> or address@example.com."
                ]
            },
        ),
    ],
    ids=["timezone", "placeholder", "relative-url", "sender"],
)
def test_campaign_settings_are_validated(merchant, shop_a, overrides, errors):
    response = merchant.post(SETTINGS_ADD, settings_fields(shop_a, **overrides))

    assert response.status_code == 200
    assert form_errors(response) == errors
    assert CampaignSettings.objects.count() == 0


# Actions ------------------------------------------------------------------------------------------


def run_action(client: Client, action: str, *campaigns: Campaign):
    return client.post(
        CHANGELIST, {"action": action, "_selected_action": [c.pk for c in campaigns]}, follow=True
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def make_campaign(store: Store, name: str, *, tiers: int = 1, **fields: Any) -> Campaign:
    campaign = Campaign.objects.create(store=store, name=name, **fields)
    for position in range(1, tiers + 1):
        Tier.objects.create(
            campaign=campaign,
            position=position,
            channel="email",
            delay_minutes=position * 60,
            subject_template=f"Reminder {position}",
        )
    return campaign


def test_activate_sets_the_activation_time_and_refuses_campaigns_without_tiers(merchant, shop_a):
    ready = make_campaign(shop_a, "Ready")
    empty = make_campaign(shop_a, "Empty", tiers=0)
    before = timezone.now()

    response = run_action(merchant, "activate", ready, empty)

    assert messages_of(response) == [
        "“Empty” has no tier: add one before activating it.",
        "Activated 1 campaign(s).",
    ]
    ready.refresh_from_db()
    empty.refresh_from_db()
    assert ready.active is True
    assert ready.activated_at is not None and ready.activated_at >= before
    assert (empty.active, empty.activated_at) == (False, None)

    # activating again keeps the first activation time
    first = ready.activated_at
    run_action(merchant, "activate", ready)
    ready.refresh_from_db()
    assert ready.activated_at == first


def test_pause_deactivates_and_keeps_the_activation_time(merchant, shop_a):
    activated = timezone.now() - dt.timedelta(days=2)
    campaign = make_campaign(shop_a, "Running", active=True, activated_at=activated)

    response = run_action(merchant, "pause", campaign)

    assert messages_of(response) == ["Paused 1 campaign(s)."]
    campaign.refresh_from_db()
    assert (campaign.active, campaign.activated_at) == (False, activated)


def test_duplicate_copies_the_campaign_and_its_tiers_paused(merchant, shop_a):
    original = make_campaign(
        shop_a,
        "Spring",
        tiers=2,
        active=True,
        activated_at=timezone.now(),
        priority=7,
        holdout_share=Decimal("0.20"),
        only_categories=["shoes"],
    )

    response = run_action(merchant, "duplicate", original)

    assert messages_of(response) == ["Created “Copy of Spring” (paused)."]
    copy = Campaign.objects.get(name="Copy of Spring")
    assert copy.pk != original.pk
    assert (
        copy.store_id, copy.active, copy.activated_at, copy.priority, copy.holdout_share,
        copy.only_categories,
    ) == (shop_a.pk, False, None, 7, Decimal("0.20"), ["shoes"])  # fmt: skip
    assert list(
        copy.tiers.order_by("position").values_list("position", "channel", "delay_minutes",
                                                     "subject_template")
    ) == [(1, "email", 60, "Reminder 1"), (2, "email", 120, "Reminder 2")]  # fmt: skip
    assert original.tiers.count() == 2
    assert Tier.objects.count() == 4


# Store isolation and permissions ------------------------------------------------------------------


def test_a_merchant_sees_only_their_stores_campaigns(merchant, shop_a, shop_b):
    mine = make_campaign(shop_a, "Mine")
    theirs = make_campaign(shop_b, "Theirs")

    listing = merchant.get(CHANGELIST)

    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [mine]
    assert "Theirs" not in listing.content.decode()
    assert "Shop B" not in listing.content.decode()  # not even as a filter choice

    # another store's campaign does not exist for them: Django's redirect for a missing object
    response = merchant.get(f"{CHANGELIST}{theirs.pk}/change/", follow=True)
    assert response.redirect_chain == [("/admin/", 302)]
    assert messages_of(response) == [
        f"campaign with ID “{theirs.pk}” doesn’t exist. Perhaps it was deleted?"  # noqa: RUF001
    ]
    assert merchant.get(f"{CHANGELIST}{theirs.pk}/delete/").status_code == 302
    assert merchant.get(f"{CHANGELIST}{theirs.pk}/history/").status_code == 302


def test_a_merchant_cannot_post_to_another_stores_campaign(merchant, shop_a, shop_b):
    theirs = make_campaign(shop_b, "Theirs")

    response = merchant.post(
        f"{CHANGELIST}{theirs.pk}/change/",
        {**campaign_fields(shop_a, name="Hijacked"), **tiers_formset([])},
    )
    run_action(merchant, "activate", theirs)
    run_action(merchant, "duplicate", theirs)

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    theirs.refresh_from_db()
    assert (theirs.name, theirs.active, theirs.store_id) == ("Theirs", False, shop_b.pk)
    assert Campaign.objects.count() == 1


def test_a_merchant_cannot_pick_another_store(merchant, shop_a, shop_b):
    response = post_add(merchant, shop_b, THREE_TIERS[:1])

    assert response.status_code == 200
    assert form_errors(response) == {
        "store": ["Select a valid choice. That choice is not one of the available choices."]
    }
    assert Campaign.objects.count() == 0

    response = merchant.post(SETTINGS_ADD, settings_fields(shop_b))
    assert form_errors(response) == {
        "store": ["Select a valid choice. That choice is not one of the available choices."]
    }


def test_campaign_settings_of_other_stores_are_hidden(merchant, shop_a, shop_b):
    mine = CampaignSettings.objects.create(store=shop_a)
    theirs = CampaignSettings.objects.create(store=shop_b)

    listing = merchant.get("/admin/campaigns/campaignsettings/")

    assert list(listing.context["cl"].result_list) == [mine]
    response = merchant.get(f"/admin/campaigns/campaignsettings/{theirs.pk}/change/")
    assert (response.status_code, response["Location"]) == (302, "/admin/")


def test_run_records_are_read_only_and_per_store(merchant, shop_a, shop_b):
    now = timezone.now()
    records = {}
    for store in (shop_a, shop_b):
        campaign = make_campaign(store, f"Run {store.name}")
        enrollment = Enrollment.objects.create(
            store=store, cart=f"cart-{store.pk}", campaign=campaign, abandoned_at=now
        )
        coupon = Coupon.objects.create(
            store=store, cart=f"cart-{store.pk}", code=f"CODE-{store.pk}", kind="percent",
            amount=10, reasons=[{"rule": "dynamic", "amount": 10}], issued_at=now,
            expires_at=now + dt.timedelta(hours=48),
        )  # fmt: skip
        suppression = Suppression.objects.create(
            store=store, shopper=f"shopper-{store.pk}", kind="unsubscribed", created_at=now
        )
        records[store.pk] = (enrollment, coupon, suppression)

    for index, path in enumerate(("enrollment", "coupon", "suppression")):
        listing = merchant.get(f"/admin/campaigns/{path}/")
        assert listing.status_code == 200
        assert list(listing.context["cl"].result_list) == [records[shop_a.pk][index]]
        mine, theirs = records[shop_a.pk][index], records[shop_b.pk][index]
        detail = merchant.get(f"/admin/campaigns/{path}/{mine.pk}/change/")
        assert detail.status_code == 200
        assert b'name="_save"' not in detail.content  # viewable, not editable
        hidden = merchant.get(f"/admin/campaigns/{path}/{theirs.pk}/change/")
        assert (hidden.status_code, hidden["Location"]) == (302, "/admin/")
        assert merchant.get(f"/admin/campaigns/{path}/add/").status_code == 403

    coupon_page = merchant.get(f"/admin/campaigns/coupon/{records[shop_a.pk][1].pk}/change/")
    assert "&quot;rule&quot;: &quot;dynamic&quot;" in coupon_page.content.decode()
    assert merchant.get("/admin/campaigns/step/").status_code == 200


@pytest.mark.parametrize("role", ["marketer", None])
def test_staff_who_are_not_merchants_get_no_campaign_admin(shop_a, role):
    user = make_user("someone", store=shop_a if role else None, role=role or "merchant")
    client = logged_in(user)
    make_campaign(shop_a, "Mine")

    index = client.get("/admin/")

    assert index.status_code == 200
    assert index.context["available_apps"] == []
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(ADD).status_code == 403


def test_a_merchant_of_two_stores_sees_both_and_a_superuser_sees_all(shop_a, shop_b):
    shop_c = make_store("Shop C")
    user = make_user("two-shops", store=shop_a)
    StoreMember.objects.create(user=user, store=shop_b, role="merchant")
    campaigns = [make_campaign(store, f"In {store.name}") for store in (shop_a, shop_b, shop_c)]

    listing = logged_in(user).get(CHANGELIST)
    assert {c.pk for c in listing.context["cl"].result_list} == {c.pk for c in campaigns[:2]}

    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    listing = logged_in(root).get(CHANGELIST)
    assert {c.pk for c in listing.context["cl"].result_list} == {c.pk for c in campaigns}


def test_merchants_index_lists_the_campaign_models_without_model_permissions(merchant):
    index = merchant.get("/admin/")

    apps = {a["app_label"]: a for a in index.context["available_apps"]}
    assert sorted(apps) == ["campaigns", "integrations"]
    assert sorted(m["object_name"] for m in apps["campaigns"]["models"]) == [
        "Campaign", "CampaignSettings", "Coupon", "Enrollment", "Step", "Suppression",
    ]  # fmt: skip
    # The store's platform connection and webhooks are the merchant's too (docs/integrations.md).
    assert sorted(m["object_name"] for m in apps["integrations"]["models"]) == [
        "Connection", "Endpoint", "InboundDelivery", "OutboundDelivery", "PlatformCode",
    ]  # fmt: skip
    assert User.objects.get(username="merchant-a").user_permissions.count() == 0


# Email preview ------------------------------------------------------------------------------------


def test_the_email_preview_shows_the_subject_and_the_sample_carts_items(merchant, shop_a):
    post_add(merchant, shop_a, THREE_TIERS)
    campaign = Campaign.objects.get()
    email, discount = campaign.tiers.filter(channel__in=["email", "discount"]).order_by("position")

    change_page = merchant.get(f"{CHANGELIST}{campaign.pk}/change/").content.decode()
    url = f"/admin/campaigns/campaign/{campaign.pk}/preview/{email.pk}/"
    assert f'href="{url}"' in change_page

    page = merchant.get(url)

    assert page.status_code == 200
    preview = page.context["preview"]
    assert preview.subject == "Your cart at Shop A"
    assert "2 x Stoneware mug\n1 x Pour-over coffee kit" in preview.text
    assert "Stoneware mug" in preview.html
    html = page.content.decode()
    assert '<p class="subject">Your cart at Shop A</p>' in html
    # the HTML part stays inside the sandboxed iframe's attribute, escaped, not in the admin page
    assert '<iframe sandbox="" title="HTML part of the email" srcdoc="&lt;!doctype html&gt;' in html
    assert html.count("<html") == 1
    assert "Stoneware mug" in html
    # the delay as the campaign page's sequence says it ("1 h"), not in raw minutes
    flat = " ".join(html.split())
    assert f"{duration_text(email.delay_minutes)} after abandonment" in flat

    discount_page = merchant.get(f"/admin/campaigns/campaign/{campaign.pk}/preview/{discount.pk}/")
    assert "SAMPLE-7K2M9Q" in discount_page.context["preview"].text
    assert "15%" in discount_page.context["preview"].text


def test_the_email_preview_is_per_store_and_only_for_email_tiers(merchant, shop_a, shop_b):
    theirs = make_campaign(shop_b, "Theirs")
    their_tier = theirs.tiers.get()
    mine = make_campaign(shop_a, "Mine")
    onsite = Tier.objects.create(campaign=mine, position=9, channel="onsite", delay_minutes=999)

    assert merchant.get(f"{CHANGELIST}{theirs.pk}/preview/{their_tier.pk}/").status_code == 404
    assert merchant.get(f"{CHANGELIST}{mine.pk}/preview/{onsite.pk}/").status_code == 404
    assert merchant.get(f"{CHANGELIST}{mine.pk}/preview/{their_tier.pk}/").status_code == 404
    email_tier = mine.tiers.get(position=1)
    assert merchant.get(f"{CHANGELIST}{mine.pk}/preview/{email_tier.pk}/").status_code == 200


def test_the_email_preview_lists_the_errors_of_a_tier_saved_with_a_broken_template(
    merchant, shop_a
):
    campaign = make_campaign(shop_a, "Old")
    tier = campaign.tiers.get()
    Tier.objects.filter(pk=tier.pk).update(body_template="{% if code %}no end")

    page = merchant.get(f"{CHANGELIST}{campaign.pk}/preview/{tier.pk}/")

    assert page.status_code == 200
    assert page.context["preview"] is None
    assert page.context["problems"] == {
        "body_template": [
            "This template does not compile: Unclosed tag on line 1: 'if'. Looking for one of: "
            "elif, else, endif."
        ]
    }


def test_a_campaign_that_has_enrolled_carts_cannot_be_deleted_only_paused(merchant, shop_a):
    fresh = make_campaign(shop_a, "Fresh")
    used = make_campaign(shop_a, "Used")
    Enrollment.objects.create(
        store=shop_a, cart="cart-1", campaign=used, abandoned_at=timezone.now()
    )

    deleted = merchant.post(f"{CHANGELIST}{fresh.pk}/delete/", {"post": "yes"})
    refused = merchant.post(f"{CHANGELIST}{used.pk}/delete/", {"post": "yes"})

    assert (deleted.status_code, deleted["Location"]) == (302, CHANGELIST)
    assert refused.status_code == 403  # its enrollments are read-only records
    assert list(Campaign.objects.values_list("name", flat=True)) == ["Used"]
    assert Tier.objects.filter(campaign=used).count() == 1


def test_a_campaigns_durations_are_at_most_a_year(merchant, shop_a):
    response = post_add(merchant, shop_a, THREE_TIERS, inactivity_minutes=str(10**9))

    assert response.status_code == 200
    assert form_errors(response) == {"inactivity_minutes": ["Enter at most 366d (366 days)."]}
    assert not Campaign.objects.exists()
