"""Payload schemas and their field types: what is accepted, what is stored, the exact errors.

Pure: no database (pytest-django refuses DB access here).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from carts import event_types, validation
from carts.errors import EventInvalid
from tests.conftest import item


def payload_errors(type_name: str, data: Any, schema_version: int | None = None) -> Any:
    with pytest.raises(EventInvalid) as caught:
        event_types.validate(type_name, schema_version, data)
    return caught.value.detail


def stored(type_name: str, data: Any, schema_version: int | None = None) -> tuple[int, Any]:
    return event_types.validate(type_name, schema_version, data)


# Integers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "kept"), [(2, 2), ("2", 2), (" 2 ", 2), (2.0, 2), ("2.0", 2)])
def test_integers_may_come_as_integral_numbers_or_numeric_text(sent, kept):
    assert stored("cart.item_added", item(quantity=sent)) == (2, item(quantity=kept))


@pytest.mark.parametrize(
    ("sent", "error"),
    [
        (True, "Input should be a valid integer."),
        (False, "Input should be a valid integer."),
        (1.5, "Input should be a valid integer, got a number with a fractional part."),
        ("two", "Input should be a valid integer, unable to parse string as an integer."),
        ("1.5", "Input should be a valid integer, unable to parse string as an integer."),
        ([1], "Input should be a valid integer."),
        (None, "This field may not be null."),
        (0, "Input should be greater than or equal to 1."),
        (100_001, "Input should be less than or equal to 100000."),
    ],
)
def test_quantity_refuses_booleans_fractions_text_and_out_of_range(sent, error):
    assert payload_errors("cart.item_added", item(quantity=sent)) == {"data": {"quantity": [error]}}


def test_money_is_integer_minor_units_from_0_to_10_to_the_12():
    assert stored("order.placed", {"order_id": "o", "total": 0, "currency": "EUR"})[1]["total"] == 0
    top = {"order_id": "o", "total": 10**12, "currency": "EUR"}
    assert stored("order.placed", top) == (1, top)

    assert payload_errors("order.placed", {**top, "total": 10**12 + 1}) == {
        "data": {"total": ["Input should be less than or equal to 1000000000000."]}
    }
    assert payload_errors("order.placed", {**top, "total": "12.99"}) == {
        "data": {
            "total": ["Input should be a valid integer, unable to parse string as an integer."]
        }
    }


def test_quantity_changed_to_zero_is_valid_and_dwell_time_is_at_most_a_day():
    assert stored("cart.item_quantity_changed", {"sku": "A", "quantity": 0}) == (
        1,
        {"sku": "A", "quantity": 0},
    )
    view = {"url": "/", "page_type": "home", "dwell_ms": 86_400_000}
    assert stored("page.viewed", view) == (1, view)
    # Issue 11: a bound every later computation can represent (10**312 was a 500).
    assert payload_errors("page.viewed", {**view, "dwell_ms": 86_400_001}) == {
        "data": {"dwell_ms": ["Input should be less than or equal to 86400000."]}
    }
    assert payload_errors("page.viewed", {**view, "dwell_ms": -1}) == {
        "data": {"dwell_ms": ["Input should be greater than or equal to 0."]}
    }


# Text ---------------------------------------------------------------------------------------------


def test_text_is_stored_stripped_and_numbers_as_text():
    sent = {**item(name="  Enamel mug \n", category=" ", currency=" EUR "), "sku": 12345}

    assert stored("cart.item_added", sent) == (
        2,
        {
            "sku": "12345",
            "name": "Enamel mug",
            "quantity": 1,
            "unit_price": 1000,
            "currency": "EUR",
            "category": "",  # category may be blank
        },
    )


@pytest.mark.parametrize(
    ("sku", "error"),
    [
        ("", "String should have at least 1 character."),
        ("   ", "String should have at least 1 character."),
        ("x" * 129, "String should have at most 128 characters."),
        ("A\x00B", "Null characters are not allowed."),
        ("A\ud800", "Surrogate characters are not allowed."),
        (True, "Input should be a valid string."),
        ({"a": 1}, "Input should be a valid string."),
    ],
)
def test_text_refuses_blank_too_long_nul_surrogates_and_non_text(sku, error):
    assert payload_errors("cart.item_added", item(sku=sku, name="Mug")) == {
        "data": {"sku": [error]}
    }


def test_length_is_counted_after_stripping():
    assert stored("cart.item_added", item(sku=f" {'x' * 128} "))[1]["sku"] == "x" * 128


def test_choices_are_exact():
    assert payload_errors("page.viewed", {"url": "/", "page_type": "HOME"}) == {
        "data": {
            "page_type": [
                "Input should be 'home', 'category', 'product', 'search', 'cart', 'checkout', "
                "'account' or 'other'."
            ]
        }
    }
    assert payload_errors("shopper.exit_intent", {"trigger": "blur"}) == {
        "data": {
            "trigger": [
                "Input should be 'mouse_leave', 'tab_hidden', 'back_button', 'scroll_up' or 'idle'."
            ]
        }
    }


@pytest.mark.parametrize("currency", ["eur", "EURO", "XAU", "", 978])
def test_currency_must_be_an_iso_4217_code_a_shop_charges_in(currency):
    assert payload_errors("cart.item_added", item(currency=currency)) == {
        "data": {"currency": [f"'{currency}' is not an ISO 4217 currency code."]}
    }


# URLs, contact details ----------------------------------------------------------------------------


def test_urls_are_stored_as_sent():
    url = " HTTPS://Shop.Example:8443/p/Mug?ref=mail#top "
    image = "https://xn--bcher-kva.example/i/1.png"

    _, payload = stored("cart.item_added", item(url=url, image_url=image))

    assert (payload["url"], payload["image_url"]) == (url.strip(), image)


@pytest.mark.parametrize(
    "url", ["shop.example/p/1", "mailto:a@b.example", "https://-shop.example/", "https://a b.c/"]
)
def test_an_invalid_url_is_refused(url):
    assert payload_errors("cart.item_added", item(url=url)) == {
        "data": {"url": ["Enter a valid URL."]}
    }


# The fast path in validation._url must accept nothing that Django's URLValidator refuses.
URLS = [
    "https://shop.example/p/sku-1", "http://shop.example", "https://a.b.example:8000/x?y#z",
    "HTTPS://SHOP.EXAMPLE/", "https://shop.example?x", "https://shop.example#x",
    "https://shop.example:", "https://shop.example:123456/", "https://shop.example./",
    "https://localhost/", "https://1.2.3.4/", "https://[::1]/", "https://[::zz]/",
    "https://user:pw@shop.example/", "https://shop.example/a b", "https://shop.example/\n",
    "https://shop.example\n", "https://-a.example/", "https://a-.example/", "https://a..example/",
    "https://a.example-/", "https://a.e/", "https://a.123/", "https://bücher.example/",
    "ftp://shop.example/", "//shop.example/", "https://shop_x.example/",
    f"https://{'a' * 63}.example/", f"https://{'a' * 64}.example/",
    f"https://{'a.' * 124}example/", f"https://{'a.' * 125}example/",
]  # fmt: skip


def _django_accepts(url: str) -> bool:
    try:
        URLValidator()(url)
    except DjangoValidationError:
        return False
    return True


def test_the_url_fast_path_accepts_only_what_django_accepts():
    rng = random.Random(7)
    labels = [
        "shop",
        "a",
        "A1",
        "-a",
        "a-",
        "a_b",
        "",
        "xn--bcher-kva",
        "ü",
        "1",
        "a" * 63,
        "a" * 64,
    ]
    tlds = ["example", "COM", "e", "123", "x-y", "example.", "xn--p1ai", "-com"]
    ports = ["", "", ":", ":8000", ":123456", ":x"]
    tails = ["", "/", "/p/1", "?q=1", "#f", "/a b", "/\n", "\n", "/ü", "/x@y", "@x", " "]
    fuzz = [
        rng.choice(["http://", "https://", "HTTPS://", "ftp://", "https:/"])
        + ".".join(rng.choice(labels) for _ in range(rng.randint(1, 3)))
        + "."
        + rng.choice(tlds)
        + rng.choice(ports)
        + rng.choice(tails)
        for _ in range(5000)
    ]
    fast = [url for url in URLS + fuzz if validation._PLAIN_URL.match(url)]

    assert [url for url in fast if not _django_accepts(url)] == []
    # and it does take the common case
    assert "https://shop.example/p/sku-1" in fast
    assert len(fast) > 50


def test_contact_details_are_checked_and_cleaned():
    sent = {
        "email": " shopper@example.com ",
        "phone": "+44 (20) 7946-0000",
        "consent": {"email": "yes", "sms": 0},
        "timezone": "Europe/London",
        "locale": "en_GB",
    }

    assert stored("checkout.contact_captured", sent) == (
        1,
        {**sent, "email": "shopper@example.com", "consent": {"email": True, "sms": False}},
    )


def test_contact_details_errors_name_each_field():
    sent = {
        "email": "shopper@",
        "phone": "call me",
        "consent": {"email": "maybe", "post": True},
        "timezone": "Mars/Olympus_Mons",
        "locale": "English",
    }

    assert payload_errors("checkout.contact_captured", sent) == {
        "data": {
            "email": ["Enter a valid email address."],
            "phone": [
                "Expected a phone number: 4-32 digits, spaces, brackets or dashes, optionally "
                "after a '+'."
            ],
            "consent": {
                "email": ["Input should be a valid boolean, unable to interpret input."],
                "post": ["Unknown field."],
            },
            "timezone": ["'Mars/Olympus_Mons' is not an IANA time zone."],
            "locale": ["Expected a locale such as 'en' or 'pt-BR'."],
        }
    }


@pytest.mark.parametrize("consent", [None, "yes", ["email"]])
def test_a_nested_object_that_is_not_one_is_an_error_on_the_object(consent):
    errors = payload_errors(
        "checkout.contact_captured", {"email": "a@b.example", "consent": consent}
    )

    expected = (
        ["This field may not be null."]
        if consent is None
        else {"non_field_errors": ["Expected a JSON object."]}
    )
    assert errors == {"data": {"consent": expected}}


# Payloads as a whole, versions -------------------------------------------------------------------


def test_unknown_and_missing_fields_are_all_reported():
    assert payload_errors("cart.item_added", {"sku": "A", "colour": "red"}) == {
        "data": {
            "name": ["Field required."],
            "quantity": ["Field required."],
            "unit_price": ["Field required."],
            "currency": ["Field required."],
            "colour": ["Unknown field."],
        }
    }


@pytest.mark.parametrize("data", [["SKU-1"], "SKU-1", None, 1])
def test_a_payload_must_be_an_object(data):
    assert payload_errors("cart.item_added", data) == {"data": ["Expected a JSON object."]}


def test_a_payload_without_fields_is_an_empty_object():
    assert stored("checkout.started", {}) == (1, {})
    assert payload_errors("checkout.started", {"at": 1}) == {"data": {"at": ["Unknown field."]}}


@pytest.mark.parametrize(
    ("version", "error"),
    [
        (0, "cart.item_added has schema versions 1 to 2."),
        (3, "cart.item_added has schema versions 1 to 2."),
    ],
)
def test_schema_versions_outside_the_types_range_are_refused(version, error):
    assert payload_errors("cart.item_added", item(), version) == {"schema_version": [error]}


def test_an_old_version_is_stored_as_posted_and_its_errors_name_its_own_fields():
    v1 = {"sku": " A ", "name": "A", "quantity": "1", "price": "12.99", "currency": "EUR"}

    assert stored("cart.item_added", v1, 1) == (1, v1)
    assert payload_errors("cart.item_added", {**v1, "price": "-1"}, 1) == {
        "data": {"price": ["Input should be greater than or equal to 0."]}
    }
    assert payload_errors("cart.item_added", {**v1, "unit_price": 1299}, 1) == {
        "data": {"unit_price": ["Unknown field."]}
    }


def test_the_error_is_a_carts_error_with_the_field_errors_as_detail():
    with pytest.raises(EventInvalid) as caught:
        event_types.validate("order.refunded", None, {"order_id": "o"})

    assert (caught.value.code, caught.value.message) == (
        "event_invalid",
        "Invalid order.refunded event.",
    )
    assert caught.value.detail == {"data": {"amount": ["Field required."]}}


# Error shape --------------------------------------------------------------------------------------


class _Line(TypedDict):
    sku: str


class _Order(TypedDict):
    lines: list[_Line]


def test_field_errors_key_list_items_by_index_and_put_whole_object_errors_aside():
    adapter = TypeAdapter(_Order)
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python({"lines": [{"sku": "A"}, {"sku": 1.5}, "B", {}]})

    assert validation.field_errors(caught.value) == {
        "lines": {
            "1": {"sku": ["Input should be a valid string."]},
            "2": {"non_field_errors": ["Expected a JSON object."]},
            "3": {"sku": ["Field required."]},
        }
    }


def test_field_errors_of_a_list_itself_go_under_non_field_errors():
    adapter = TypeAdapter(_Order)
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python({"lines": "A"})

    assert validation.field_errors(caught.value) == {
        "lines": {"non_field_errors": ["Expected a JSON array."]}
    }
