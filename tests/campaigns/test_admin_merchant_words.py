"""The campaign admin in a merchant's units where an audit found it was not (issue 14), each
through the admin with a merchant's session: the list's Activate action warns about competing
campaigns, the read-only lists show money and percentages, every duration takes a unit, an email
tier refuses the discount's variables, and money is written in the store's locale, which the
merchant sets in the campaign settings."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib import messages
from django.utils import timezone

from campaigns.models import Campaign, CampaignSettings, Coupon, Enrollment, Tier
from carts.models import Store
from tests.campaigns.test_admin import (
    ADD,
    CHANGELIST,
    SETTINGS_ADD,
    THREE_TIERS,
    form_errors,
    logged_in,
    make_campaign,
    make_store,
    make_user,
    merchant,  # noqa: F401 - fixture
    post_add,
    run_action,
    settings_fields,
    shop_a,  # noqa: F401 - fixture
    shop_b,  # noqa: F401 - fixture
    tier_errors,
)
from tests.campaigns.test_admin_units import EMAIL, ONSITE, input_value
from tests.campaigns.test_admin_workflow import PREVIEW, draft

DISCOUNT = {
    "position": "2",
    "channel": "discount",
    "delay_minutes": "2h",
    "offer_kind": "percent_discount",
    "discount_min": "5",
    "discount_max": "10",
}


def _german(store: Store) -> Store:
    store.locale = "de-DE"
    store.save(update_fields=["locale"])
    return store


# 1. The list's Activate action warns as saving the form does --------------------------------------


def test_activating_from_the_list_warns_which_competing_campaign_acts(merchant, shop_a):  # noqa: F811
    first = make_campaign(shop_a, "Demo", active=True)
    second = make_campaign(shop_a, "Second")

    response = run_action(merchant, "activate", second)

    shown = [(m.level, str(m)) for m in response.context["messages"]]
    assert shown[0] == (messages.SUCCESS, "Activated 1 campaign(s).")
    [(level, warning)] = [m for m in shown if "would take the same carts" in m[1]]
    assert level == messages.WARNING
    assert warning == (
        f"“Second” and “Demo” (#{first.pk}) are both active on Shop A and would take the same "
        f"carts: “Demo” acts, because at equal priority (0) it is the older campaign "
        f"(#{first.pk} before #{second.pk})."
    )


def test_two_campaigns_activated_together_are_warned_about_once(merchant, shop_a):  # noqa: F811
    one = make_campaign(shop_a, "One")
    two = make_campaign(shop_a, "Two", priority=3)
    make_campaign(shop_a, "Elsewhere paused")

    response = run_action(merchant, "activate", one, two)

    warnings = [str(m) for m in response.context["messages"] if m.level == messages.WARNING]
    assert len(warnings) == 1, warnings
    assert "“Two” acts, because its priority is higher (3 > 0)." in warnings[0]


def test_activating_a_campaign_without_competition_warns_nothing(merchant, shop_a, shop_b):  # noqa: F811
    make_campaign(shop_b, "Other store", active=True)
    alone = make_campaign(shop_a, "Alone")

    response = run_action(merchant, "activate", alone)

    assert [m.level for m in response.context["messages"]] == [messages.SUCCESS]


# 2. Read-only lists: money in the store's format, percentages as percentages ----------------------


def test_enrollments_show_the_cart_value_as_money_and_the_score_as_a_percentage(merchant, shop_a):  # noqa: F811
    campaign = make_campaign(shop_a, "Run")
    Enrollment.objects.create(
        store=shop_a, cart="cart-1", campaign=campaign, score=0.734, cart_value=123801,
        currency="EUR", abandoned_at=timezone.now(),
    )  # fmt: skip

    listing = merchant.get("/admin/campaigns/enrollment/").content.decode()

    assert "€1,238.01" in listing and "73%" in listing
    assert "123801" not in listing and "0.734" not in listing
    detail = merchant.get(f"/admin/campaigns/enrollment/{Enrollment.objects.get().pk}/change/")
    assert "€1,238.01" in detail.content.decode() and "73%" in detail.content.decode()

    _german(shop_a)
    assert "1.238,01\xa0€" in merchant.get("/admin/campaigns/enrollment/").content.decode()


def test_coupons_show_amounts_in_their_kind_and_money_in_the_stores_format(merchant, shop_a):  # noqa: F811
    now = timezone.now()
    common = {"store": shop_a, "issued_at": now, "expires_at": now + timedelta(hours=48),
              "currency": "EUR"}  # fmt: skip
    percent = Coupon.objects.create(
        **common, cart="c-1", code="PCT-1", kind="percent", amount=10, cap=2000, value=605,
        min_cart_value=3000, redeemed_at=now, order_id="o-1", discount_applied=605,
    )  # fmt: skip
    Coupon.objects.create(**common, cart="c-2", code="FIX-1", kind="fixed", amount=500, value=500)

    listing = merchant.get("/admin/campaigns/coupon/").content.decode()
    rows = {code: row for row in listing.split("<tr") if (code := _code(row))}

    assert re.findall(r">(10%|€20\.00|€6\.05)<", rows["PCT-1"]) == ["10%", "€20.00", "€6.05",
                                                                       "€6.05"]  # fmt: skip
    assert ">€5.00<" in rows["FIX-1"] and ">2000<" not in listing and ">605<" not in listing
    detail = merchant.get(f"/admin/campaigns/coupon/{percent.pk}/change/").content.decode()
    for shown in ("10%", "€20.00", "€30.00", "€6.05"):
        assert f">{shown}<" in detail, shown

    _german(shop_a)
    assert ">20,00\xa0€<" in merchant.get("/admin/campaigns/coupon/").content.decode()


def _code(row: str) -> str | None:
    found = re.search(r">(PCT-1|FIX-1)<", row)
    return found.group(1) if found else None


# 3. Every duration takes a unit, saved in its column's unit ---------------------------------------


def test_hours_and_days_are_typed_with_a_unit_and_saved_in_their_columns_unit(merchant, shop_a):  # noqa: F811
    tiers = [
        {**ONSITE, "cooldown_hours": "1d 12h"},
        {**DISCOUNT, "code_expiry_hours": "2d", "recent_code_days": "60"},
    ]

    response = post_add(
        merchant, shop_a, tiers, max_age_days="2d", shopper_cap_hours="90", attribution_hours="3d"
    )

    assert response.status_code == 302, (form_errors(response), tier_errors(response))
    campaign = Campaign.objects.get()
    assert (campaign.max_age_days, campaign.shopper_cap_hours, campaign.attribution_hours) == (
        2, 90, 72
    )  # fmt: skip
    onsite, discount = campaign.tiers.order_by("position")
    assert onsite.cooldown_hours == 36
    assert (discount.code_expiry_hours, discount.recent_code_days) == (48, 60)
    change = merchant.get(f"{CHANGELIST}{campaign.pk}/change/").content.decode()
    assert [input_value(change, name) for name in (
        "max_age_days", "shopper_cap_hours", "attribution_hours", "tiers-0-cooldown_hours",
        "tiers-1-code_expiry_hours", "tiers-1-recent_code_days",
    )] == ["2d", "3d 18h", "3d", "1d 12h", "2d", "60d"]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_age_days", "12h", "Enter whole days, such as 7d or 30d: 12h is 12 hours."),
        ("max_age_days", "a week", "Enter a duration in whole days such as 7d or 30d (a number "
         "alone is days)."),
        ("attribution_hours", "0h", "Enter at least 1h (1 hour)."),
        ("attribution_hours", "90m", "Enter whole hours, such as 12h, 2d or 1d 12h: 90m is 1 "
         "hour 30 minutes."),
        ("shopper_cap_hours", "367d", "Enter at most 366d (366 days)."),
        ("inactivity_minutes", "²", "Enter a duration such as 90m, 2h, 1d or 1d 12h (a number "
         "alone is minutes)."),
        ("inactivity_minutes", "9" * 5000, "Enter a duration such as 90m, 2h, 1d or 1d 12h (a "
         "number alone is minutes)."),
    ],
    ids=["part-of-a-day", "words", "zero", "part-of-an-hour", "over-a-year", "superscript",
         "long"],
)  # fmt: skip
def test_a_campaign_duration_that_is_not_one_says_what_to_type(
    merchant,  # noqa: F811
    shop_a,  # noqa: F811
    field,
    value,
    message,
):
    response = post_add(merchant, shop_a, [ONSITE], **{field: value})

    assert response.status_code == 200
    assert form_errors(response) == {field: [message]}
    assert not Campaign.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("code_expiry_hours", "367d", "Enter at most 366d (366 days)."),
        ("code_expiry_hours", "99999999999", "Enter at most 366d (366 days)."),
        ("code_expiry_hours", "0", "Enter at least 1h (1 hour)."),
        ("recent_code_days", "400", "Enter at most 366d (366 days)."),
        ("cooldown_hours", "30m", "Enter whole hours, such as 12h, 2d or 1d 12h: 30m is 30 "
         "minutes."),
    ],
    ids=["expiry-over-a-year", "expiry-past-the-column", "expiry-zero", "recent-over-a-year",
         "cooldown-minutes"],
)  # fmt: skip
def test_a_tier_duration_out_of_bounds_says_what_to_type(merchant, shop_a, field, value, message):  # noqa: F811
    tier = DISCOUNT if field != "cooldown_hours" else ONSITE

    response = post_add(merchant, shop_a, [{**tier, "position": "1", field: value}])

    assert response.status_code == 200
    assert tier_errors(response) == [{field: [message]}]
    assert not Campaign.objects.exists()


def test_the_duration_fields_say_what_to_type(merchant):  # noqa: F811
    page = merchant.get(ADD).content.decode()

    assert "delay after the cart is abandoned (e.g. 30m, 2h, 1d) must be longer" in page
    assert "minutes after" not in page
    for label in ("Max age", "One email per shopper in", "Attribution window", "Cooldown",
                  "Code valid for", "Recent code window"):  # fmt: skip
        assert f">{label}:</label>" in page, label
    assert page.count("a number alone is hours.") >= 4  # per field, and the empty tier's
    assert "a number alone is days." in page


# 4. An email tier has no code ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["Use {{ code }} today.", "{{ discount|default:'a gift' }} off",
     "{% if items %}{{ code_expires }}{% endif %}", "{% if not code %}{{ code }}{% endif %}"],
    ids=["code", "discount-with-a-default", "in-another-if", "in-a-negated-if"],
)  # fmt: skip
def test_the_discounts_variables_are_refused_on_an_email_tier(merchant, shop_a, body):  # noqa: F811
    response = post_add(merchant, shop_a, [{**EMAIL, "body_template": body}])

    assert response.status_code == 200
    [errors] = tier_errors(response)
    [message] = errors["body_template"]
    name = re.search(r"code_expires|code|discount", body)
    assert name is not None
    assert message == (
        f"'{name.group()}' on line 1 is only on discount tiers: an email tier has no code, so it "
        "would be empty. Remove it, keep it inside {% if code %}...{% endif %}, or make this a "
        "discount tier."
    )
    assert not Campaign.objects.exists()


def test_a_tested_code_and_the_default_body_are_accepted_on_an_email_tier(merchant, shop_a):  # noqa: F811
    guarded = "{% if code and items %}Use {{ code }} for {{ discount }}.{% endif %} Bye."
    tiers = [
        {**EMAIL, "body_template": Tier().body_template},  # the model's default tests {% if code %}
        {**EMAIL, "position": "2", "delay_minutes": "2h", "body_template": guarded},
        {**DISCOUNT, "position": "3", "delay_minutes": "3h", "body_template": "Use {{ code }}."},
    ]

    response = post_add(merchant, shop_a, tiers)

    assert response.status_code == 302, tier_errors(response)
    assert Tier.objects.count() == 3


def test_the_preview_of_an_email_tier_refuses_the_code_too(merchant, shop_a):  # noqa: F811
    typed = merchant.post(
        PREVIEW, draft(shop_a, {"channel": "email", "subject_template": "{{ code }}"})
    )

    assert typed.status_code == 400
    assert "only on discount tiers" in typed.context["problems"]["subject_template"][0]

    # saved before the check knew the channel: its preview shows the problem, not an empty code
    campaign = make_campaign(shop_a, "Old")
    tier = campaign.tiers.get()
    Tier.objects.filter(pk=tier.pk).update(body_template="Your code: {{ code }}")
    saved = merchant.get(f"/admin/campaigns/campaign/{campaign.pk}/preview/{tier.pk}/")
    assert saved.status_code == 200
    assert saved.context["preview"] is None
    assert "only on discount tiers" in saved.context["problems"]["body_template"][0]


# 5. One money format: the store's locale, set by the merchant -------------------------------------


def test_the_merchant_sets_the_stores_locale_in_the_campaign_settings(merchant, shop_a):  # noqa: F811
    page = merchant.get(SETTINGS_ADD).content.decode()
    assert "Money format (locale)" in page
    assert not input_value(page, "store_locale")  # the store has none yet: English

    refused = merchant.post(SETTINGS_ADD, settings_fields(shop_a, store_locale="xx-nowhere"))
    assert form_errors(refused) == {
        "store_locale": [
            "'xx-nowhere' is not a locale we know: type a language and region such as en-GB, "
            "de-DE or fr-FR, or leave it empty for English."
        ]
    }
    assert not CampaignSettings.objects.exists()

    saved = merchant.post(SETTINGS_ADD, settings_fields(shop_a, store_locale="de-DE"))
    assert saved.status_code == 302
    shop_a.refresh_from_db()
    assert shop_a.locale == "de-DE"

    settings = CampaignSettings.objects.get()
    change = merchant.get(f"/admin/campaigns/campaignsettings/{settings.pk}/change/")
    assert input_value(change.content.decode(), "store_locale") == "de-DE"
    # saving other settings leaves it; emptying it goes back to English
    data = settings_fields(shop_a, store_locale="de-DE", timezone="UTC")
    merchant.post(f"/admin/campaigns/campaignsettings/{settings.pk}/change/", data)
    shop_a.refresh_from_db()
    assert shop_a.locale == "de-DE"
    merchant.post(
        f"/admin/campaigns/campaignsettings/{settings.pk}/change/",
        settings_fields(shop_a, store_locale=""),
    )
    shop_a.refresh_from_db()
    assert shop_a.locale == ""


def test_another_stores_locale_is_not_the_merchants_to_set(merchant, shop_a, shop_b):  # noqa: F811
    response = merchant.post(SETTINGS_ADD, settings_fields(shop_b, store_locale="de-DE"))

    assert "store" in form_errors(response)
    shop_b.refresh_from_db()
    assert shop_b.locale == ""


def test_a_german_store_sees_its_money_as_german_in_the_sequence_and_the_email(merchant, shop_a):  # noqa: F811
    _german(shop_a)
    response = post_add(
        merchant,
        shop_a,
        [
            {**ONSITE, "min_cart_value": "12.99"},
            {"position": "2", "channel": "discount", "delay_minutes": "1d",
             "offer_kind": "fixed_discount", "discount_min": "5", "discount_max": "12.99",
             "body_template": "{% for item in items %}{{ item.unit_price }};{% endfor %} "
             "{{ discount }} {{ cart_value }}"},
        ],
    )  # fmt: skip
    assert response.status_code == 302, tier_errors(response)
    campaign = Campaign.objects.get()

    listing = merchant.get(CHANGELIST).content.decode()
    assert "discount 5,00\xa0€-12,99\xa0€ off after 1 d" in listing
    change = merchant.get(f"{CHANGELIST}{campaign.pk}/change/")
    onsite = change.context["campaign_overview"]["tiers"][0]["details"]
    assert "worth at least 12,99\xa0€" in onsite
    # the form still takes what a merchant types: a point for decimals
    assert input_value(change.content.decode(), "tiers-0-min_cart_value") == "12.99"

    discount = campaign.tiers.get(position=2)
    preview = merchant.get(f"/admin/campaigns/campaign/{campaign.pk}/preview/{discount.pk}/")
    text = preview.context["preview"].text
    assert text.startswith("12,99\xa0€;34,50\xa0€; 12,99\xa0€ 60,48\xa0€"), text


def test_the_decision_is_shown_after_the_list_activates_three_tiers(merchant, shop_a):  # noqa: F811
    # the review's own case, end to end: the form saves a paused campaign next to an active one,
    # and the list puts it live
    make_campaign(shop_a, "Demo", active=True)
    post_add(merchant, shop_a, THREE_TIERS, name="Newcomer", priority="0")
    newcomer = Campaign.objects.get(name="Newcomer")

    response = run_action(merchant, "activate", newcomer)

    assert any(
        "“Demo” acts" in str(m) and m.level == messages.WARNING
        for m in response.context["messages"]
    )


def test_a_superuser_sees_each_stores_money_in_its_own_locale(db):
    german, english = _german(make_store("Laden")), make_store("Shop")
    admin_user = make_user("root")
    admin_user.is_superuser = True
    admin_user.save(update_fields=["is_superuser"])
    now = timezone.now()
    for store in (german, english):
        Coupon.objects.create(
            store=store, cart=f"c-{store.pk}", code=f"FIX-{store.pk}", kind="fixed", amount=1299,
            currency="EUR", issued_at=now, expires_at=now + timedelta(hours=1),
        )  # fmt: skip

    listing = logged_in(admin_user).get("/admin/campaigns/coupon/").content.decode()

    assert ">12,99\xa0€<" in listing and ">€12.99<" in listing
