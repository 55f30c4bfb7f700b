"""Step emails sent through a real SMTP server on loopback, their preview, cart URLs, templates."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from urllib.parse import urlsplit

import pytest

from campaigns import emails, links
from campaigns.models import CampaignSettings, Coupon, Tier
from carts.models import CartState, Store
from tests.campaigns.conftest import T0

PUBLIC = "https://recover.example"
BODY = (
    "Hi {{ shopper_name }}, still thinking about it?\n"
    "{% for item in items %}{{ item.quantity }} x {{ item.name }} at {{ item.unit_price }}: "
    "{{ item.line_total }}\n{% endfor %}"
    "Total {{ cart_value }}.{% if code %} Code {{ code }}: {{ discount }} off until "
    "{{ code_expires }}.{% endif %}"
)


@pytest.fixture(autouse=True)
def _public_url(settings):
    settings.CAMPAIGNS_PUBLIC_URL = PUBLIC


def _settings(store: Store, **fields) -> CampaignSettings:
    return CampaignSettings.objects.create(
        store=store,
        email_from="Test shop <shop@shop.example>",
        reply_to="help@shop.example",
        timezone="Europe/Lisbon",
        **fields,
    )


def _coupon(store: Store, cart: CartState, step, **fields) -> Coupon:
    defaults = {
        "code": "SAVE10-7K2M9Q",
        "kind": Coupon.Kind.PERCENT,
        "amount": 10,
        "currency": "EUR",
        "issued_at": T0,
        "expires_at": datetime(2026, 3, 12, 14, 0, tzinfo=UTC),
    }
    return Coupon.objects.create(
        store=store, cart=cart.token, shopper=step.shopper, step=step, **{**defaults, **fields}
    )


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def _send(message) -> None:
    assert message.send() == 1


# Sending ------------------------------------------------------------------------------------------


def test_a_discount_step_email_arrives_with_both_parts_headers_and_signed_links(
    store, shop_cart, campaign_step, smtp_sink
):
    # given a discount step for a cart of two items, with a code, opens and clicks tracked
    settings = _settings(store)
    cart = shop_cart(store.pk, "cart-1")
    step = campaign_step(
        cart,
        channel=Tier.Channel.DISCOUNT,
        subject_template="{{ shopper_name }}, {{ discount }} off your cart at {{ store_name }}",
        body_template=BODY,
        cta_label="Finish my order",
    )
    coupon = _coupon(store, cart, step)

    # when its message is built and sent over SMTP
    message = emails.step_email(
        step=step,
        tier=step.tier,
        settings=settings,
        store=store,
        cart=cart,
        coupon=coupon,
        now=T0 + timedelta(hours=2),
    )
    _send(message)

    # then the server received it from the store's sender, for the shopper
    [received] = smtp_sink.wait_for(1)
    assert (received.mail_from, received.rcpt_tos) == (
        "shop@shop.example",
        ("jane.doe@example.com",),
    )
    got = received.message
    assert got["Subject"] == "Jane, 10% off your cart at Test shop"
    assert got["From"] == "Test shop <shop@shop.example>"
    assert got["To"] == "jane.doe@example.com"
    assert got["Reply-To"] == "help@shop.example"
    assert got["Message-ID"] == f"<step-{step.pk}.{store.pk}@recover.example>"
    assert got["X-Campaign-Step"] == str(step.pk)
    unsubscribe = links.unsubscribe_url(step.link_id)
    # a long header is folded onto a continuation line; unfolded, the value keeps the fold's space
    assert got["List-Unsubscribe"].strip() == f"<{unsubscribe}>"
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert got.get_content_type() == "multipart/alternative"

    text, html = _parts(got)
    # the restore link is ours, signed for this step
    [restore] = re.findall(rf"{PUBLIC}/r/[^\s/]+(?=\n)", text)
    restore_token = urlsplit(restore).path.removeprefix("/r/")
    assert links.link_from_token(restore_token, "restore") == step.link_id
    stop = links.stop_url(step.link_id)
    assert text == (
        "Hi Jane, still thinking about it?\n"
        "2 x Mug & saucer <large> at €12.99: €25.98\n"
        "1 x Pour-over kit at €34.50: €34.50\n"
        "Total €60.48. Code SAVE10-7K2M9Q: 10% off until 12 March 2026, 15:00 CET.\n"
        "\n"
        f"Finish my order: {restore}\n"
        "\n"
        "--\n"
        "Test shop\n"
        f"Unsubscribe: {unsubscribe}\n"
        f"Don't remind me about my carts: {stop}\n"
    )
    # HTML: the body escaped, an items table, the button, the footer links and the pixel
    assert "2 x Mug &amp; saucer &lt;large&gt; at €12.99: €25.98<br>" in html
    assert "<large>" not in html
    assert '<a href="https://shop.example/p/mug"' in html
    assert '<img src="https://shop.example/i/mug.jpg"' in html
    assert (
        '<td align="right" style="padding:10px 0;font-weight:bold;white-space:nowrap;">€60.48'
        in html
    )
    assert f'<a href="{restore}" style="display:inline-block;' in html
    assert f'<a href="{unsubscribe}"' in html
    assert f'<a href="{stop}"' in html
    [pixel] = re.findall(rf'<img src="({PUBLIC}/r/[^"/]+/o\.gif)"', html)
    assert links.link_from_token(pixel.split("/")[-2], "open") == step.link_id


def test_without_tracking_there_is_no_pixel_and_the_button_goes_straight_to_the_cart(
    store, shop_cart, campaign_step, smtp_sink
):
    # given a store that tracks neither opens nor clicks and has a cart URL template
    settings = _settings(
        store,
        track_opens=False,
        track_clicks=False,
        cart_url="https://shop.example/cart/{items}?discount={code}&ref={cart}",
    )
    cart = shop_cart(store.pk, "cart 1", email="ana@example.com")
    step = campaign_step(cart, channel=Tier.Channel.DISCOUNT, body_template="Come back.")
    coupon = _coupon(store, cart, step, code="SAVE 5/X")

    # when the message is sent
    _send(
        emails.step_email(
            step=step,
            tier=step.tier,
            settings=settings,
            store=store,
            cart=cart,
            coupon=coupon,
            now=T0,
        )
    )

    # then the restore link is the store's cart with the items and the code, and no pixel
    [received] = smtp_sink.wait_for(1)
    text, html = _parts(received.message)
    direct = "https://shop.example/cart/MUG-01:2,POUR%2F02:1?discount=SAVE%205%2FX&ref=cart%201"
    assert f"Back to my cart: {direct}\n" in text
    assert f'<a href="{direct.replace("&", "&amp;")}" style="display:inline-block;' in html
    assert "o.gif" not in html
    assert f"{PUBLIC}/r/" not in html.replace(links.stop_url(step.link_id), "")
    # the default subject loses its dangling comma when no name can be guessed
    assert received.message["Subject"] == "You left something in your cart"
    # the unsubscribe headers do not depend on tracking
    assert (
        received.message["List-Unsubscribe"].strip() == f"<{links.unsubscribe_url(step.link_id)}>"
    )


def test_the_message_id_is_the_same_every_time_the_step_is_built(store, shop_cart, campaign_step):
    settings = _settings(store)
    cart = shop_cart(store.pk, "cart-1")
    step = campaign_step(cart)

    ids = {
        emails.step_email(
            step=step,
            tier=step.tier,
            settings=settings,
            store=store,
            cart=cart,
            coupon=None,
            now=T0 + timedelta(minutes=m),
        ).extra_headers["Message-ID"]
        for m in (0, 5)
    }

    assert ids == {f"<step-{step.pk}.{store.pk}@recover.example>"}


# Preview and template checks ---------------------------------------------------------------------


def test_the_preview_renders_a_sample_cart_of_two_items_and_a_discount_tier_a_sample_code(store):
    settings = CampaignSettings(store=store, track_opens=False)
    tier = Tier(
        channel=Tier.Channel.DISCOUNT,
        offer_kind=Tier.OfferKind.FIXED_DISCOUNT,
        discount_max=500,
        subject_template="{{ discount }} off at {{ store_name }}",
        body_template=BODY,
    )

    preview = emails.email_preview(tier=tier, settings=settings, store=store)

    assert preview.subject == "€5.00 off at Test shop"
    assert preview.text.startswith(
        "Hi Jane, still thinking about it?\n"
        "2 x Stoneware mug at €12.99: €25.98\n"
        "1 x Pour-over coffee kit at €34.50: €34.50\n"
        "Total €60.48. Code SAMPLE-7K2M9Q: €5.00 off until "
    )
    assert "Stoneware mug" in preview.html
    assert "o.gif" not in preview.html


def test_money_in_an_email_is_written_as_the_stores_locale_writes_it(store):
    # given a store in Germany: CLDR's de-DE writes the amount, a comma and a no-break space
    store.locale = "de-DE"
    store.save(update_fields=["locale"])
    tier = Tier(
        channel=Tier.Channel.DISCOUNT,
        offer_kind=Tier.OfferKind.FIXED_DISCOUNT,
        discount_max=500,
        subject_template="{{ discount }} off at {{ store_name }}",
        body_template=BODY,
    )

    preview = emails.email_preview(tier=tier, settings=CampaignSettings(store=store), store=store)

    assert preview.subject == "5,00\xa0€ off at Test shop"
    assert preview.text.startswith(
        "Hi Jane, still thinking about it?\n"
        "2 x Stoneware mug at 12,99\xa0€: 25,98\xa0€\n"
        "1 x Pour-over coffee kit at 34,50\xa0€: 34,50\xa0€\n"
        "Total 60,48\xa0€. Code SAMPLE-7K2M9Q: 5,00\xa0€ off until "
    )
    assert "60,48\xa0€" in preview.html  # the wrapper's total too
    assert "EUR" not in preview.text and "€60.48" not in preview.html


def test_an_email_tier_preview_has_no_code(store):
    tier = Tier(channel=Tier.Channel.EMAIL, body_template=BODY)

    preview = emails.email_preview(tier=tier, settings=CampaignSettings(store=store), store=store)

    assert preview.subject == "You left something in your cart, Jane"
    assert "Code" not in preview.text
    assert preview.text.startswith("Hi Jane, still thinking about it?\n2 x Stoneware mug")


@pytest.mark.parametrize(
    ("subject", "body", "expected"),
    [
        ("Hi {{ shopper_name }}", BODY, {}),
        (
            "Hi {{ shopper_name|nofilter }}",
            "{% for item in items %}",
            {
                "subject_template": ["This template does not compile: Invalid filter: 'nofilter'"],
                "body_template": [
                    "This template does not compile: Unclosed tag on line 1: 'for'. "
                    "Looking for one of: empty, endfor."
                ],
            },
        ),
        (
            "{% load humanize %}",
            "{% debug %}",
            {
                "subject_template": [
                    "This template does not compile: {% load %} is not available in emails: "
                    "there are no tag libraries to load."
                ],
                "body_template": [
                    "This template does not compile: The {% debug %} tag is not allowed in emails."
                ],
            },
        ),
        (
            "ok",
            '{% include "index.html" %}',
            {
                "body_template": [
                    "This template fails for a sample cart: {% include %} and {% extends %} are "
                    "not available in emails (asked for index.html)."
                ]
            },
        ),
    ],
)
@pytest.mark.parametrize("channel", [Tier.Channel.EMAIL, Tier.Channel.DISCOUNT])
def test_template_errors_name_the_field_and_the_problem(subject, body, expected, channel):
    assert (
        emails.template_errors(subject_template=subject, body_template=body, channel=channel)
        == expected
    )


# Cart URLs and formatting (no database) -----------------------------------------------------------

LINES = [{"sku": "A B", "quantity": 2}, {"sku": "C", "quantity": 1}]


@pytest.mark.parametrize(
    ("domain", "origins", "template", "code", "expected"),
    [
        ("shop.example", [], "", "", "https://shop.example/cart"),
        ("shop.example", [], "", "X 1", "https://shop.example/cart?discount=X%201"),
        ("http://shop.test:8080/", [], "", "", "http://shop.test:8080/cart"),
        ("", ["https://store.example"], "", "", "https://store.example/cart"),
        (
            "shop.example",
            [],
            "https://shop.example/cart/{items}?c={code}&t={cart}",
            "X/1",
            "https://shop.example/cart/A%20B:2,C:1?c=X%2F1&t=tok%3F",
        ),
        (
            "shop.example",
            [],
            "https://shop.example/cart?c={code}",
            "",
            "https://shop.example/cart?c=",
        ),
        ("shop.example", [], "javascript:alert(1)//{items}", "", "https://shop.example/cart"),
    ],
)
def test_cart_url(domain, origins, template, code, expected):
    store = Store(name="S", domain=domain, allowed_origins=origins)
    settings = CampaignSettings(store=store, cart_url=template)
    cart = CartState(store=store, token="tok?")

    assert (
        emails.cart_url(settings=settings, store=store, cart=cart, items=LINES, code=code)
        == expected
    )


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("jane.doe@example.com", "Jane"),
        ("JOHN_SMITH@example.com", "John"),
        ("info.desk@example.com", ""),
        ("jd@example.com", ""),
        ("jane.m.doe@example.com", ""),
        ("j2.doe@example.com", ""),
        ("", ""),
    ],
)
def test_shopper_name_is_a_first_name_only_when_the_address_clearly_has_one(email, expected):
    assert emails.shopper_name(email) == expected


@pytest.mark.parametrize(
    ("kind", "amount", "locale", "expected"),
    [
        (Coupon.Kind.PERCENT, 15, "", "15%"),
        (Coupon.Kind.FIXED, 500, "", "€5.00"),
        (Coupon.Kind.FIXED, 123801, "de-DE", "1.238,01\xa0€"),
        (Coupon.Kind.FREE_SHIPPING, 0, "", "free shipping"),
    ],
)
def test_discount_format(kind, amount, locale, expected):
    coupon = Coupon(kind=kind, amount=amount, currency="EUR")
    assert emails.discount_format(coupon, "EUR", locale) == expected
    assert emails.discount_format(None, "EUR") == ""
