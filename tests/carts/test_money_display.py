"""The one money format (carts.money.display): English without a store locale, CLDR with one."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from carts import money


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "shown"),
    [
        (123801, "EUR", "", "€1,238.01"),
        (-500, "EUR", "", "-€5.00"),
        (1200, "JPY", "", "¥1,200"),
        (1200, "CHF", "", "CHF 12.00"),
        (1234567, "KWD", "", "KWD 1,234.567"),
        (5, "", "", "0.05"),
        (123801, "EUR", "de-DE", "1.238,01\xa0€"),
        (123801, "EUR", "de_DE", "1.238,01\xa0€"),
        (123801, "EUR", "fr-FR", "1\u202f238,01\xa0€"),
        (123801, "GBP", "en-GB", "£1,238.01"),
        # The currency's ISO 4217 decimals, as the store's minor units are counted.
        (1234567, "KWD", "de-DE", "1.234,567\xa0KWD"),
        (1200, "JPY", "de-DE", "1.200\xa0¥"),
        (5, "", "de-DE", "0,05"),
        # An unknown locale (stored before validation, or mistyped in a setting) is English.
        (123801, "EUR", "xx-ZZ", "€1,238.01"),
    ],
)
def test_display(amount: int, currency: str, locale: str, shown: str) -> None:
    assert money.display(amount, currency, locale) == shown


@pytest.mark.parametrize("tag", ["", "en", "en-GB", "de-DE", "fr_FR", "pt-BR"])
def test_locale_known(tag: str) -> None:
    money.locale_validate(tag)


@pytest.mark.parametrize("tag", ["xx-ZZ", "english", "de-DE; DROP", "e" * 36])
def test_locale_unknown_says_what_to_type(tag: str) -> None:
    with pytest.raises(ValidationError, match="such as en-GB, de-DE or fr-FR"):
        money.locale_validate(tag)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [(" de_de ", "de-DE"), ("en_gb", "en-GB"), ("fr", "fr"), ("pt_BR", "pt-BR"), ("", "")],
)
def test_a_stores_locale_is_kept_as_a_bcp_47_tag(typed: str, stored: str) -> None:
    # As browsers take it (the live page's Intl.NumberFormat) and as every page writes it.
    from carts.models import Store

    assert money.locale_tag(typed) == stored
    store = Store(name="s", locale=typed)
    store.clean()
    assert store.locale == stored
    assert money.display(123801, "EUR", stored) == money.display(123801, "EUR", typed.strip())
