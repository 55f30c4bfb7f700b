"""The campaign admin's workflow, as a merchant (staff, a merchant member of one store): each tier
shows its channel's field groups (a script; without it, all), the sequence at a glance on the
change page, a preview and a test email of a tier as typed (unsaved), the warning when two active
campaigns compete for the same carts (and the rule that decides), and links to the dashboard."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support.wait import WebDriverWait

from campaigns.models import Campaign, Coupon, Enrollment, Step, Tier
from carts.models import CartEvent, Store, StoreMember
from tests.campaigns.test_admin import (
    CHANGELIST,
    THREE_TIERS,
    campaign_fields,
    logged_in,
    make_store,
    make_user,
    messages_of,
    post_add,
    tiers_formset,
)
from tests.conftest import subprocess_env
from tests.e2e import procs
from tests.e2e.conftest import Screenshots, screenshots  # noqa: F401 - a fixture
from tests.e2e.test_browser_exit_intent import _chromium

PREVIEW = "/admin/campaigns/campaign/tier-preview/"
TEST_SEND = "/admin/campaigns/campaign/tier-test-send/"


@pytest.fixture
def shop_a(db) -> Store:
    return make_store("Shop A")


@pytest.fixture
def shop_b(db) -> Store:
    return make_store("Shop B")


@pytest.fixture
def merchant(shop_a) -> Client:
    """A merchant of Shop A (staff, no model permissions), address merchant-a@example.com."""
    return logged_in(make_user("merchant-a", store=shop_a))


def three_tier_campaign(store: Store, name: str = "Three tiers", **fields: Any) -> Campaign:
    campaign = Campaign.objects.create(store=store, name=name, **fields)
    Tier.objects.create(
        campaign=campaign,
        position=1,
        channel="onsite",
        offer_kind="percent_discount",
        percent=10,
        discount_cap=2000,
    )
    Tier.objects.create(
        campaign=campaign,
        position=2,
        channel="email",
        delay_minutes=60,
        subject_template="Still thinking, {{ shopper_name }}?",
    )
    Tier.objects.create(
        campaign=campaign,
        position=3,
        channel="discount",
        delay_minutes=1440,
        offer_kind="percent_discount",
        discount_min=5,
        discount_max=15,
    )
    return campaign


def change_url(campaign: Campaign) -> str:
    return f"/admin/campaigns/campaign/{campaign.pk}/change/"


def draft(store: Store, tier: dict[str, Any], *, button: str = "preview", index: int = 0):
    """The change form as posted by a tier's button: the campaign's fields, its tiers (the one
    tried at ``index``), and the button's name and value."""
    tiers = [{"position": str(i + 1), "channel": "onsite"} for i in range(index)] + [tier]
    return {
        **campaign_fields(store),
        **tiers_formset(tiers),
        f"tiers-{index}-email_tools": button,
    }


# Channel-dependent tier forms ---------------------------------------------------------------------


def test_each_tier_group_names_its_channels_and_the_script_is_on_the_page(merchant, shop_a):
    campaign = three_tier_campaign(shop_a)

    page = merchant.get(change_url(campaign)).content.decode()

    assert "campaigns/tier_channels.js" in page
    groups = re.findall(r'<fieldset class="([^"]*tier-for[^"]*)"', page)
    # Four channel groups per tier (offer, on-site, email, discount), three tiers and the empty
    # form the "Add another" button copies; each shown (no script: every group shows).
    assert len(groups) == 4 * 4
    assert {g.split("tier-for ")[1] for g in groups} == {
        "tier-for-onsite tier-for-discount",
        "tier-for-onsite",
        "tier-for-email tier-for-discount",
        "tier-for-discount",
    }
    assert 'style="display' not in page.split('id="tiers-group"')[1]


# The sequence at a glance, and the dashboard ------------------------------------------------------


def test_the_change_page_shows_the_sequence_with_each_tiers_key_settings(merchant, shop_a):
    campaign = three_tier_campaign(shop_a)

    page = merchant.get(change_url(campaign))
    overview = page.context["campaign_overview"]
    text = page.content.decode()

    assert [t["headline"] for t in overview["tiers"]] == [
        "on-site nudge at 0 min",
        "email after 1 h",
        "discount 5-15% after 1 d",
    ]
    onsite, email, discount = (t["details"] for t in overview["tiers"])
    assert onsite[0] == "carts scoring at least 50%"
    assert "once per 24 h" in onsite and "“Before you go”" in onsite
    assert "10% off (cap €20.00)" in onsite, onsite  # the store's money format
    assert "subject “Still thinking, {{ shopper_name }}?”" in email
    assert "code valid 48 h" in discount
    # Above the form: before the first tier's inline.
    assert text.index("discount 5-15% after 1 d") < text.index('id="tiers-0"')


def test_the_list_shows_the_sequence_in_hours_and_days(merchant, shop_a):
    three_tier_campaign(shop_a)

    page = merchant.get(CHANGELIST).content.decode()

    assert "on-site nudge at 0 min → email after 1 h → discount 5-15% after 1 d" in page


def test_the_list_and_the_change_page_link_the_campaigns_dashboard(merchant, shop_a):
    campaign = three_tier_campaign(shop_a)
    overview = f"/dashboard/{shop_a.pk}/?campaign={campaign.pk}"

    listing = merchant.get(CHANGELIST).content.decode()
    change = merchant.get(change_url(campaign)).content.decode()

    assert f'href="{overview}"' in listing
    assert f'href="{overview}"' in change
    assert f'href="/dashboard/{shop_a.pk}/funnel/?campaign={campaign.pk}"' in change
    # The merchant may open it, filtered to the campaign.
    dashboard = merchant.get(overview)
    assert dashboard.status_code == 200
    assert dashboard.context["shown"]["campaign"] == str(campaign.pk)


# Preview of a tier as typed -----------------------------------------------------------------------


def test_preview_renders_the_tier_as_typed_without_saving_anything(merchant, shop_a):
    data = draft(
        shop_a,
        {
            "channel": "email",
            "subject_template": "Hello {{ shopper_name }} from {{ store_name }}",
            "body_template": "{% for item in items %}{{ item.name }};{% endfor %} {{ cart_value }}",
        },
        index=1,
    )

    response = merchant.post(PREVIEW, data)

    assert response.status_code == 200
    preview = response.context["preview"]
    assert preview.subject == "Hello Jane from Shop A"
    assert "Stoneware mug;Pour-over coffee kit;" in preview.text
    assert "Stoneware mug" in preview.html
    assert response.context["problems"] == {}
    assert not Campaign.objects.exists() and not Tier.objects.exists()


def test_preview_renders_as_the_saved_tiers_preview_does(merchant, shop_a):
    campaign = three_tier_campaign(shop_a)
    email = campaign.tiers.get(channel="discount")
    saved = merchant.get(f"/admin/campaigns/campaign/{campaign.pk}/preview/{email.pk}/")

    typed = merchant.post(
        PREVIEW,
        draft(
            shop_a,
            {
                "channel": "discount",
                "offer_kind": "percent_discount",
                "discount_min": "5",
                "discount_max": "15",
                "subject_template": email.subject_template,
                "body_template": email.body_template,
            },
        ),
    )

    assert typed.status_code == 200
    assert typed.context["preview"].subject == saved.context["preview"].subject
    # The sample links are signed with the time of the render (a second apart, they differ).
    assert _unsigned(typed.context["preview"].text) == _unsigned(saved.context["preview"].text)
    assert "SAMPLE-7K2M9Q" in typed.context["preview"].text


def _unsigned(text: str) -> str:
    """``text`` with its signed links' time and signature (``.<time>.<signature>``) left out."""
    return re.sub(r"\.[0-9A-Za-z]{4,8}\.[A-Za-z0-9_-]{40,}", ".<signed>", text)


def test_a_template_error_is_a_message_on_a_400_not_a_500(merchant, shop_a):
    response = merchant.post(
        PREVIEW, draft(shop_a, {"channel": "email", "body_template": "{% if %}oops"})
    )

    assert response.status_code == 400
    assert response.context["preview"] is None
    [message] = response.context["problems"]["body_template"]
    assert "does not compile" in message
    assert "body_template" in response.content.decode()


def test_other_fields_errors_are_noted_and_the_email_still_renders(merchant, shop_a):
    response = merchant.post(
        PREVIEW, draft(shop_a, {"channel": "email", "delay_minutes": "soon", "headline": ""})
    )

    assert response.status_code == 200
    assert response.context["preview"] is not None
    notes = response.context["notes"]
    assert len(notes) == 2 and any(n.startswith("Delay") for n in notes), notes


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        ({"channel": "onsite"}, "channel", "sends no email"),
        ({"store": "999999"}, "store", "Choose a store of yours"),
        ({"tiers-0-email_tools": None}, "tier", "which tier"),
    ],
)
def test_preview_refuses_what_it_cannot_render(merchant, shop_a, change, key, expected):
    data = draft(shop_a, {"channel": "email"})
    for name, value in change.items():
        target = name if name.startswith(("tiers-", "store")) else f"tiers-0-{name}"
        if value is None:
            data.pop(target)
        else:
            data[target] = value

    response = merchant.post(PREVIEW, data)

    assert response.status_code == 400
    assert expected in response.context["problems"][key][0]


def test_preview_refuses_another_merchants_store_and_a_get(merchant, shop_a, shop_b):
    other = merchant.post(PREVIEW, draft(shop_b, {"channel": "email"}))
    assert other.status_code == 400
    assert "store" in other.context["problems"]
    assert merchant.get(PREVIEW).status_code == 405


# Test email ---------------------------------------------------------------------------------------


def test_a_test_email_goes_to_the_staff_users_address_through_smtp(smtp_sink, merchant, shop_a):
    events_before = CartEvent.objects.filter(store_id=shop_a.pk).count()
    data = draft(
        shop_a,
        {"channel": "email", "subject_template": "Your cart at {{ store_name }}"},
        button="test",
    )

    response = merchant.post(TEST_SEND, data)

    assert response.status_code == 200, response.context["problems"]
    assert response.context["sent_to"] == "merchant-a@example.com"
    [received] = smtp_sink.wait_for(1)
    assert received.rcpt_tos == ("merchant-a@example.com",)
    assert received.message["Subject"] == "[Test] Your cart at Shop A"
    assert received.message["X-Campaign-Test"] == "1"
    text = received.message.get_body(("plain",)).get_content()
    assert "Stoneware mug" in text
    html = received.message.get_body(("html",)).get_content()
    assert "Stoneware mug" in html
    # Nothing saved, nothing recorded.
    assert CartEvent.objects.filter(store_id=shop_a.pk).count() == events_before
    assert not Campaign.objects.exists()
    assert not (Enrollment.objects.exists() or Step.objects.exists() or Coupon.objects.exists())


def test_a_staff_user_without_an_email_address_is_told_and_nothing_is_sent(shop_a):
    user = make_user("no-address", store=shop_a)
    user.email = ""
    user.save(update_fields=["email"])

    response = logged_in(user).post(TEST_SEND, draft(shop_a, {"channel": "email"}, button="test"))

    assert response.status_code == 400
    [message] = response.context["problems"]["email"]
    assert "has no email address" in message
    assert mail.outbox == []


def test_a_test_email_of_a_broken_template_is_refused(merchant, shop_a):
    response = merchant.post(
        TEST_SEND,
        draft(shop_a, {"channel": "email", "subject_template": "{{ a|nosuch }}"}, button="test"),
    )

    assert response.status_code == 400
    assert "subject_template" in response.context["problems"]
    assert mail.outbox == []


# Competing campaigns ------------------------------------------------------------------------------


def test_saving_a_second_active_campaign_warns_which_one_acts_and_why(merchant, shop_a):
    first = three_tier_campaign(shop_a, "Demo", active=True)

    response = post_add(merchant, shop_a, THREE_TIERS, name="Newcomer", active="on", priority="0")

    assert response.status_code == 302
    newcomer = Campaign.objects.get(name="Newcomer")
    warnings = [m for m in messages_of(merchant.get(CHANGELIST)) if "would take the same" in m]
    [warning] = warnings
    assert f"“Newcomer” and “Demo” (#{first.pk}) are both active on Shop A" in warning
    assert (
        f"“Demo” acts, because at equal priority (0) it is the older campaign "
        f"(#{first.pk} before #{newcomer.pk})." in warning
    )
    assert "Only “Demo”'s on-site nudge is shown." in warning


def test_a_higher_priority_acts_and_a_shorter_inactivity_is_named(merchant, shop_a):
    three_tier_campaign(shop_a, "Demo", active=True, inactivity_minutes=10)

    post_add(merchant, shop_a, THREE_TIERS, name="Big", active="on", priority="5")

    [warning] = [m for m in messages_of(merchant.get(CHANGELIST)) if "would take" in m]
    assert "“Big” acts, because its priority is higher (5 > 0)." in warning
    assert "“Demo” still takes the carts it reaches first: its inactivity (10 min)" in warning


def test_a_paused_campaign_or_another_store_is_no_competition(merchant, shop_a, shop_b):
    three_tier_campaign(shop_a, "Paused", active=False)
    three_tier_campaign(shop_b, "Elsewhere", active=True)

    post_add(merchant, shop_a, THREE_TIERS, name="Alone", active="on")

    assert not [m for m in messages_of(merchant.get(CHANGELIST)) if "would take" in m]


def test_the_list_and_the_change_page_show_the_competition(merchant, shop_a):
    first = three_tier_campaign(shop_a, "Demo", active=True)
    second = three_tier_campaign(shop_a, "Second", active=True)
    three_tier_campaign(shop_a, "Paused", active=False)

    listing = merchant.get(CHANGELIST).content.decode()
    change = merchant.get(change_url(second))

    assert "⚠ acts before “Second”: at equal priority (0) it is the older campaign" in listing
    assert "⚠ “Demo” acts first: at equal priority (0) it is the older campaign" in listing
    assert listing.count("⚠") == 2
    [warning] = change.context["campaign_overview"]["warnings"]
    assert f"“Demo” acts, because at equal priority (0) it is the older campaign (#{first.pk}" in (
        warning
    )


def test_the_decision_rule_is_shown_with_the_priority(merchant, shop_a):
    page = merchant.get("/admin/campaigns/campaign/add/").content.decode()

    assert "the one with the highest priority acts; at equal priority, the older one" in page


# In the browser -----------------------------------------------------------------------------------

PASSWORD = "a-long-enough-password"


@pytest.fixture
def admin_server(committed_store, tmp_path):
    """uvicorn on a free port against the test database; a merchant of the store with a
    password (hashed as the server's settings expect) and a three-tier campaign."""
    store, _ = committed_store
    hasher = PBKDF2PasswordHasher()
    user = User.objects.create(
        username=f"merchant-{uuid.uuid4().hex[:6]}",
        email="merchant@example.com",
        is_staff=True,
        password=hasher.encode(PASSWORD, hasher.salt()),
    )
    StoreMember.objects.create(store=store, user=user, role=StoreMember.Role.MERCHANT)
    campaign = three_tier_campaign(store)
    port = procs.free_port()
    with procs.web_server(port, env=subprocess_env(DJANGO_DEBUG="0"), log=tmp_path / "web.log"):
        yield {"origin": f"http://127.0.0.1:{port}", "user": user, "campaign": campaign}


def _visible(driver: Any, tier: int, field: str) -> bool:
    return bool(driver.find_element(By.NAME, f"tiers-{tier}-{field}").is_displayed())


def test_an_on_site_tier_shows_only_its_fields_and_switching_the_channel_shows_the_email(
    admin_server,
    tmp_path: Path,
    screenshots: Screenshots,  # noqa: F811 - the fixture imported above
) -> None:
    origin, user, campaign = (admin_server[k] for k in ("origin", "user", "campaign"))
    driver = _chromium(tmp_path)
    try:
        driver.get(f"{origin}/admin/login/?next=/admin/campaigns/campaign/{campaign.pk}/change/")
        driver.find_element(By.ID, "id_username").send_keys(user.username)
        driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "tiers-group")))
        WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.ID, "tiers-0").get_attribute("data-channel") == "onsite"
        )
        height = driver.execute_script("return document.body.scrollHeight")
        tiers = driver.execute_script("return document.getElementById('tiers-group').offsetHeight")
        screenshots.save(driver, "three-tiers.png")

        # Tier 1, on-site: its nudge and offer, no email, no discount code.
        assert _visible(driver, 0, "headline") and _visible(driver, 0, "percent")
        assert _visible(driver, 0, "offer_kind")
        assert not _visible(driver, 0, "subject_template")
        assert not _visible(driver, 0, "body_template")
        assert not _visible(driver, 0, "discount_min")
        # Tier 2, email: only the email; tier 3, discount: email, offer and code.
        assert _visible(driver, 1, "subject_template") and not _visible(driver, 1, "headline")
        assert not _visible(driver, 1, "offer_kind") and not _visible(driver, 1, "discount_min")
        assert _visible(driver, 2, "subject_template") and _visible(driver, 2, "discount_min")
        assert _visible(driver, 2, "offer_kind") and not _visible(driver, 2, "headline")

        Select(driver.find_element(By.NAME, "tiers-0-channel")).select_by_value("email")
        assert _visible(driver, 0, "subject_template") and _visible(driver, 0, "body_template")
        assert not _visible(driver, 0, "headline") and not _visible(driver, 0, "offer_kind")

        # Without the script (the same page, every group shown): the height it saves.
        driver.execute_script(
            "document.querySelectorAll('fieldset.tier-for').forEach(f => f.style.display = '')"
        )
        all_shown = driver.execute_script("return document.body.scrollHeight")
        all_tiers = driver.execute_script(
            "return document.getElementById('tiers-group').offsetHeight"
        )
        print(
            f"3-tier change form: {height} px by channel ({tiers} px of tiers), {all_shown} px "
            f"with every group ({all_tiers} px of tiers)"
        )
        assert height < all_shown * 0.75
    finally:
        driver.quit()
