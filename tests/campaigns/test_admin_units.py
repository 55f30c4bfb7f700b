"""The campaign admin in a merchant's units, through the forms with a merchant's session: money in
the store's currency with its decimals (saved in minor units), percentages as percentages (saved as
shares), durations with a unit (saved in minutes), help texts that keep their ``<...>`` parts, and
email templates checked against the documented context."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.utils import timezone

from campaigns import emails
from campaigns.models import Campaign, CampaignSettings, Tier
from carts.models import CartState, Store, StoreMember
from tests.campaigns.test_admin import (
    ADD,
    CHANGELIST,
    SETTINGS_ADD,
    THREE_TIERS,
    campaign_fields,
    form_errors,
    logged_in,
    make_store,
    make_user,
    merchant,  # noqa: F401 - fixture
    post_add,
    settings_fields,
    shop_a,  # noqa: F401 - fixture
    tier_errors,
    tiers_formset,
)

ONSITE = {"position": "1", "channel": "onsite", "delay_minutes": "0"}
EMAIL = {"position": "1", "channel": "email", "delay_minutes": "1h"}


def input_value(html: str, name: str) -> str | None:
    match = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*>', html)
    assert match, f"no input {name}"
    value = re.search(r'value="([^"]*)"', match.group())
    return value.group(1) if value else None


def store_with_cart(name: str, currency: str) -> Store:
    store = make_store(name)
    CartState.objects.create(
        store=store,
        token=f"cart-{currency}",
        currency=currency,
        items=[{"sku": "SKU-1", "quantity": 1, "unit_price": 1000}],
        item_count=1,
        value=1000,
        seen_at=timezone.now(),
    )
    return store


# Money --------------------------------------------------------------------------------------------


def test_money_is_typed_in_the_stores_currency_and_saved_in_minor_units(merchant, shop_a):  # noqa: F811
    page = merchant.get(ADD).content.decode()
    assert "Min cart value (EUR)" in page  # the campaign's, and each tier's
    assert "Discount cap (EUR)" in page
    assert "Smallest discount (% or EUR)" in page

    tiers = [
        {**ONSITE, "min_cart_value": "15.50", "offer_kind": "percent_discount", "percent": "10",
         "discount_cap": "20"},
        {"position": "2", "channel": "discount", "delay_minutes": "1d",
         "offer_kind": "fixed_discount", "discount_min": "5", "discount_max": "12.50",
         "discount_cap": "12.50 EUR"},
    ]  # fmt: skip
    response = post_add(merchant, shop_a, tiers, min_cart_value="20.00")

    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert campaign.min_cart_value == 2000
    assert list(
        campaign.tiers.order_by("position").values_list(
            "min_cart_value", "discount_cap", "discount_min", "discount_max"
        )
    ) == [(1550, 2000, None, None), (0, 1250, 500, 1250)]

    # shown again as amounts, not minor units
    change = merchant.get(f"{CHANGELIST}{campaign.pk}/change/").content.decode()
    assert input_value(change, "min_cart_value") == "20.00"
    assert input_value(change, "tiers-0-min_cart_value") == "15.50"
    assert input_value(change, "tiers-0-discount_cap") == "20.00"
    assert input_value(change, "tiers-1-discount_min") == "5.00"
    assert input_value(change, "tiers-1-discount_max") == "12.50"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("20.005", "EUR has 2 decimals: 20.005."),
        ("20,50", "Use a point for decimals: 20.50 (not 20,50)."),
        ("1,250.00", "Enter an amount in EUR such as 20.50, without thousands separators."),
        ("twenty", "Enter an amount in EUR such as 20.50, without thousands separators."),
        ("-1", "Enter at least 0.00 EUR."),
    ],
    ids=["decimals", "comma", "thousands", "words", "negative"],
)
def test_an_amount_the_currency_cannot_hold_is_refused_with_what_to_type(
    merchant,  # noqa: F811
    shop_a,  # noqa: F811
    value,
    message,
):
    response = post_add(merchant, shop_a, [ONSITE], min_cart_value=value)

    assert response.status_code == 200
    assert form_errors(response) == {"min_cart_value": [message]}
    assert not Campaign.objects.exists()


def test_a_stores_currency_is_the_one_its_carts_use_with_its_decimals(db):
    yen = store_with_cart("Yen shop", "JPY")
    dinar = store_with_cart("Dinar shop", "KWD")
    user = make_user("two-currencies", store=yen)
    StoreMember.objects.create(user=user, store=dinar, role="merchant")
    client = logged_in(user)

    page = client.post(ADD, {**campaign_fields(yen, min_cart_value="20.5"),
                             **tiers_formset([ONSITE])})  # fmt: skip
    assert form_errors(page) == {"min_cart_value": ["JPY has no decimals: 20.5."]}
    assert "Min cart value (JPY)" in page.content.decode()

    saved = client.post(ADD, {**campaign_fields(yen, min_cart_value="2000"),
                              **tiers_formset([{**ONSITE, "min_cart_value": "500"}])})  # fmt: skip
    assert saved.status_code == 302
    campaign = Campaign.objects.get(store=yen)
    assert (campaign.min_cart_value, campaign.tiers.get().min_cart_value) == (2000, 500)

    saved = client.post(ADD, {**campaign_fields(dinar, min_cart_value="1.250"),
                              **tiers_formset([{**ONSITE, "min_cart_value": "0.5"}])})  # fmt: skip
    assert saved.status_code == 302
    campaign = Campaign.objects.get(store=dinar)
    assert (campaign.min_cart_value, campaign.tiers.get().min_cart_value) == (1250, 500)
    change = client.get(f"{CHANGELIST}{campaign.pk}/change/").content.decode()
    assert "Min cart value (KWD)" in change
    assert input_value(change, "min_cart_value") == "1.250"


def test_fixed_discounts_are_amounts_and_percentage_discounts_whole_percents(
    merchant,  # noqa: F811
    shop_a,  # noqa: F811
):
    discount = {"position": "1", "channel": "discount", "delay_minutes": "1h"}
    response = post_add(
        merchant,
        shop_a,
        [
            {**discount, "offer_kind": "fixed_discount", "discount_min": "5.001",
             "discount_max": "10"},
            {**discount, "position": "2", "delay_minutes": "2h", "offer_kind": "percent_discount",
             "discount_min": "7.5", "discount_max": "15%"},
        ],
    )  # fmt: skip

    assert response.status_code == 200
    assert tier_errors(response) == [
        {"discount_min": ["EUR has 2 decimals: 5.001."]},
        {
            "discount_min": [
                "Enter a whole percentage such as 10 (not 7.5); for a fixed amount off, choose "
                "that kind and enter an amount in EUR."
            ]
        },
    ]


def test_the_on_site_budget_is_an_amount_in_the_stores_currency(merchant, shop_a):  # noqa: F811
    page = merchant.get(SETTINGS_ADD).content.decode()
    assert "On-site discount per day (EUR)" in page
    assert input_value(page, "onsite_discount_per_day") == "1000.00"  # the default, 100,000

    refused = merchant.post(
        SETTINGS_ADD, settings_fields(shop_a, onsite_discount_per_day="250.555")
    )
    assert form_errors(refused) == {"onsite_discount_per_day": ["EUR has 2 decimals: 250.555."]}

    response = merchant.post(SETTINGS_ADD, settings_fields(shop_a, onsite_discount_per_day="250"))
    assert response.status_code == 302
    assert CampaignSettings.objects.get().onsite_discount_per_day == 25000


# Percentages --------------------------------------------------------------------------------------


def test_shares_are_typed_as_percentages(merchant, shop_a):  # noqa: F811
    page = merchant.get(ADD).content.decode()
    assert "Holdout (%)" in page
    assert input_value(page, "holdout_share") == "10"  # the model's default, 0.10

    response = post_add(
        merchant, shop_a, [{**ONSITE, "min_score": "45%"}], holdout_share="10", min_score="30"
    )

    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert (campaign.holdout_share, campaign.min_score) == (Decimal("0.10"), 0.3)
    assert campaign.tiers.get().min_score == 0.45
    change = merchant.get(f"{CHANGELIST}{campaign.pk}/change/").content.decode()
    assert input_value(change, "holdout_share") == "10"
    assert input_value(change, "min_score") == "30"
    assert input_value(change, "tiers-0-min_score") == "45"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("holdout_share", "60", "Enter a whole percentage from 0 to 50, e.g. 10 for 10%."),
        ("holdout_share", "ten", "Enter a whole percentage from 0 to 50, e.g. 10 for 10%."),
        ("holdout_share", "12.5", "Enter a whole percentage from 0 to 50, e.g. 10 for 10%."),
        (
            "holdout_share",
            "0.15",
            "Enter a whole percentage from 0 to 50, e.g. 10 for 10%. 0.15 is less than 1%: for "
            "15% enter 15.",
        ),
        (
            "min_score",
            "0.3",
            "Enter a percentage from 0 to 100, e.g. 10 for 10%. 0.3 is less than 1%: for 30% "
            "enter 30.",
        ),
        ("min_score", "150", "Enter a percentage from 0 to 100, e.g. 10 for 10%."),
    ],
    ids=["over-50", "words", "fraction", "share-habit", "score-share-habit", "score-over-100"],
)
def test_a_percentage_out_of_bounds_says_what_to_type(merchant, shop_a, field, value, message):  # noqa: F811
    response = post_add(merchant, shop_a, [ONSITE], **{field: value})

    assert response.status_code == 200
    assert form_errors(response) == {field: [message]}
    assert not Campaign.objects.exists()


# Durations ----------------------------------------------------------------------------------------


def test_durations_are_typed_with_a_unit_and_saved_in_minutes(merchant, shop_a):  # noqa: F811
    tiers = [
        {**ONSITE, "delay_minutes": "45", "offer_ttl_minutes": "1h"},
        {**EMAIL, "position": "2", "delay_minutes": "90m"},
        {**EMAIL, "position": "3", "delay_minutes": "2.5h"},
        {**EMAIL, "position": "4", "delay_minutes": "1d"},
        {**EMAIL, "position": "5", "delay_minutes": "1d 12h"},
        {**EMAIL, "position": "6", "delay_minutes": "3 days"},
    ]

    response = post_add(merchant, shop_a, tiers, inactivity_minutes="2h")

    assert response.status_code == 302, (form_errors(response), tier_errors(response))
    campaign = Campaign.objects.get()
    assert campaign.inactivity_minutes == 120
    assert list(campaign.tiers.order_by("position").values_list("delay_minutes", flat=True)) == [
        45, 90, 150, 1440, 2160, 4320,
    ]  # fmt: skip
    assert campaign.tiers.get(position=1).offer_ttl_minutes == 60
    change = merchant.get(f"{CHANGELIST}{campaign.pk}/change/").content.decode()
    assert input_value(change, "inactivity_minutes") == "2h"
    assert [input_value(change, f"tiers-{i}-delay_minutes") for i in range(6)] == [
        "45m", "1h 30m", "2h 30m", "1d", "1d 12h", "3d",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2 weeks", "Enter a duration such as 90m, 2h, 1d or 1d 12h (a number alone is minutes)."),
        ("0.5m", "Enter a duration such as 90m, 2h, 1d or 1d 12h (a number alone is minutes)."),
        ("0h", "Enter at least 1m (1 minute)."),
        ("367d", "Enter at most 366d (366 days)."),
    ],
    ids=["unit", "fraction-of-a-minute", "zero", "over-a-year"],
)
def test_a_duration_that_is_not_one_says_what_to_type(merchant, shop_a, value, message):  # noqa: F811
    response = post_add(merchant, shop_a, [ONSITE], inactivity_minutes=value)

    assert response.status_code == 200
    assert form_errors(response) == {"inactivity_minutes": [message]}


def test_tier_delays_are_compared_in_words(merchant, shop_a):  # noqa: F811
    tiers = [{**ONSITE, "delay_minutes": "1d"}, {**EMAIL, "position": "2", "delay_minutes": "2h"}]

    response = post_add(merchant, shop_a, tiers)

    assert tier_errors(response)[1] == {
        "delay_minutes": [
            "Tier 2 must come after tier 1: its delay (2 hours) must be more than tier 1's (1 day)."
        ]
    }


# Help texts ---------------------------------------------------------------------------------------


def test_help_texts_keep_their_angle_brackets(merchant):  # noqa: F811
    page = merchant.get(SETTINGS_ADD).content.decode()

    # escaped, so the browser shows "Sender: Name <address>." (raw, <address> would be a tag)
    assert "Sender: Name &lt;address&gt;." in page
    assert "Empty: https://&lt;domain&gt;/cart." in page
    assert "Name <address>" not in page


# Template variables -------------------------------------------------------------------------------

KNOWN = (
    "Known: cart_value, code, code_expires, currency, discount, items, restore_url, "
    "shopper_name, store_name."
)
# An email tier has no code: outside an {% if %} that tests one, its names are not known there.
KNOWN_EMAIL = "Known: cart_value, currency, items, restore_url, shopper_name, store_name."


@pytest.mark.parametrize(
    ("templates", "errors"),
    [
        (
            {"subject_template": "Hi {{ shoper_name }}"},
            {
                "subject_template": [
                    "Unknown variable 'shoper_name' on line 1. Did you mean 'shopper_name'? "
                    + KNOWN_EMAIL
                ]
            },
        ),
        (
            {"body_template": "Total:\n{% if cart_vlaue %}{{ cart_vlaue }}{% endif %}"},
            {
                "body_template": [
                    f"Unknown variable 'cart_vlaue' on line 2. Did you mean 'cart_value'? {KNOWN}"
                ]
            },
        ),
        (
            {"body_template": "Hello {{ shopper_name "},
            {
                "body_template": [
                    "Unclosed {{ on line 1 ('{{ shopper_name'): close it with }} on the same line."
                ]
            },
        ),
        (
            {"body_template": "{% for item in items %}{{ item.name }}{% endfor %}{{ item.sku }}"},
            {
                "body_template": [
                    f"Unknown variable 'item' on line 1. Did you mean 'items'? {KNOWN_EMAIL}"
                ]
            },
        ),
        (
            {"body_template": "{{ shopper_name|default:promo }}"},
            {"body_template": [f"Unknown variable 'promo' on line 1. {KNOWN_EMAIL}"]},
        ),
    ],
    ids=["subject-typo", "body-typo-in-if", "unclosed", "loop-variable-outside", "filter-arg"],
)
def test_unknown_template_variables_are_refused_with_a_suggestion(
    merchant,  # noqa: F811
    shop_a,  # noqa: F811
    templates,
    errors,
):
    response = post_add(merchant, shop_a, [{**EMAIL, **templates}])

    assert response.status_code == 200
    assert tier_errors(response) == [errors]
    page = response.content.decode()
    assert "Unknown variable" in page or "Unclosed {{" in page
    assert not Campaign.objects.exists()


def test_known_variables_loop_variables_and_with_names_are_accepted(merchant, shop_a):  # noqa: F811
    body = (
        "{% for item in items %}{{ forloop.counter }}. {{ item.name }} {{ item.line_total }}\n"
        "{% endfor %}{% with total=cart_value %}{{ total }} {{ currency }}{% endwith %}\n"
        "{{ restore_url }} {{ store_name }}"
    )
    code = " {{ code }} {{ discount }} {{ code_expires }}"
    discount = {
        "position": "2",
        "channel": "discount",
        "delay_minutes": "2h",
        "offer_kind": "percent_discount",
        "discount_min": "5",
        "discount_max": "10",
    }

    response = post_add(
        merchant,
        shop_a,
        [{**EMAIL, "body_template": body}, {**discount, "body_template": body + code}],
    )

    assert response.status_code == 302, tier_errors(response)
    assert list(Tier.objects.order_by("position").values_list("body_template", flat=True)) == [
        body,
        body + code,
    ]


def test_the_checked_names_are_the_context_emails_render_with():
    [context, _] = emails._sample_contexts()

    assert set(emails.TEMPLATE_VARIABLES) == set(context)


def test_three_tiers_in_merchant_units_save_the_same_rows_as_before(merchant, shop_a):  # noqa: F811
    tiers = [
        {**THREE_TIERS[0]},
        {**THREE_TIERS[1], "delay_minutes": "1h"},
        {**THREE_TIERS[2], "delay_minutes": "1d"},
    ]

    response = post_add(merchant, shop_a, tiers)

    assert response.status_code == 302
    assert list(
        Campaign.objects.get()
        .tiers.order_by("position")
        .values_list("delay_minutes", "discount_min", "discount_max", "discount_cap")
    ) == [(0, None, None, None), (60, None, None, None), (1440, 5, 15, 2000)]


def test_a_tier_saved_under_older_rules_does_not_stop_its_campaigns_save(merchant, shop_a):  # noqa: F811
    """A tier saved before today's checks (a discount variable on an email tier, a code expiry
    past a year) does not block its campaign's change page, pausing included, while nobody
    touches it; changing it is checked as usual."""
    post_add(merchant, shop_a, THREE_TIERS)
    campaign = Campaign.objects.get()
    _, email, discount = campaign.tiers.order_by("position")
    legacy = "Hi {{ shopper_name }}, {{ code }}"
    Tier.objects.filter(pk=email.pk).update(body_template=legacy)
    Tier.objects.filter(pk=discount.pk).update(code_expiry_hours=10_000)

    def post(email_changes: dict[str, str], discount_changes: dict[str, str]):
        rows = [{**THREE_TIERS[0], "id": str(t.pk)} for t in campaign.tiers.filter(position=1)] + [
            {**THREE_TIERS[1], "id": str(email.pk), "body_template": legacy, **email_changes},
            {
                **THREE_TIERS[2],
                "id": str(discount.pk),
                "code_expiry_hours": "10000",
                **discount_changes,
            },
        ]
        for row in rows:
            row["campaign"] = str(campaign.pk)
        return merchant.post(
            f"{CHANGELIST}{campaign.pk}/change/",
            {**campaign_fields(shop_a, priority="7"), **tiers_formset(rows, initial=3)},
        )

    response = post({}, {})
    assert response.status_code == 302, tier_errors(response)
    campaign.refresh_from_db()
    assert campaign.priority == 7
    assert Tier.objects.get(pk=email.pk).body_template == legacy
    assert Tier.objects.get(pk=discount.pk).code_expiry_hours == 10_000

    response = post({"body_template": legacy + "!"}, {})
    assert response.status_code == 200
    assert "only on discount tiers" in " ".join(tier_errors(response)[1]["body_template"])

    response = post({}, {"code_expiry_hours": "10001"})
    assert response.status_code == 200
    assert "code_expiry_hours" in tier_errors(response)[2]
