"""ISO 4217 currencies and their minor units (pure)."""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from functools import cache, lru_cache

from django.core.exceptions import ValidationError

# ISO 4217 exponents other than 2. Everything else in pycountry's list has two decimals.
_EXPONENTS = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}
# Precious metals, testing and "no currency" codes are not money a shop charges in.
_NOT_MONEY = {
    "XAG",
    "XAU",
    "XBA",
    "XBB",
    "XBC",
    "XBD",
    "XDR",
    "XPD",
    "XPT",
    "XSU",
    "XTS",
    "XUA",
    "XXX",
}


@cache
def currency_codes() -> frozenset[str]:
    import pycountry

    return frozenset(c.alpha_3 for c in pycountry.currencies) - _NOT_MONEY


def is_currency(code: str) -> bool:
    return code in currency_codes()


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


def to_minor_units(amount: Decimal | str | float, currency: str) -> int:
    """Convert a major-unit amount (``"12.99"``) to integer minor units (``1299``), half up."""
    scaled = Decimal(str(amount)).scaleb(exponent(currency))
    return int(scaled.quantize(Decimal(1), rounding="ROUND_HALF_UP"))


# -- writing money for people -------------------------------------------------------------------

# Without a store locale: the symbols English readers know (as Intl.NumberFormat("en") writes
# them); other currencies are written with their code: "CHF 12.00".
SYMBOLS = {
    "EUR": "€",
    "USD": "$",
    "GBP": "£",
    "JPY": "¥",
    "INR": "₹",
    "KRW": "₩",
    "ILS": "₪",
    "VND": "₫",
    "PHP": "₱",
    "NGN": "₦",
    "CAD": "CA$",
    "AUD": "A$",
    "NZD": "NZ$",
    "HKD": "HK$",
    "MXN": "MX$",
    "BRL": "R$",
    "CNY": "CN¥",
    "TWD": "NT$",
}


_LOCALE_TAG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}")


@lru_cache(maxsize=256)
def _locale(tag: str) -> object | None:
    """The babel Locale of a BCP 47 / POSIX tag (``de-DE``, ``de_DE``), None if unknown."""
    from babel import Locale, UnknownLocaleError

    if not _LOCALE_TAG.fullmatch(tag.strip()):
        return None
    try:
        return Locale.parse(tag.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def locale_validate(tag: str) -> None:
    """Model validator: an empty tag or one CLDR knows (``en-GB``, ``de-DE``, ``fr``)."""
    if tag and (len(tag) > 35 or _locale(tag) is None):
        raise ValidationError(
            f"{tag!r} is not a locale we know: type a language and region such as en-GB, "
            "de-DE or fr-FR, or leave it empty for English."
        )


def locale_tag(tag: str) -> str:
    """A locale as stored and as browsers take it: BCP 47 with CLDR's case (``" de_de "`` ->
    ``"de-DE"``); empty for none, the tag as typed (stripped) when CLDR does not know it."""
    found = _locale(tag) if tag and tag.strip() else None
    if found is None:
        return tag.strip()
    from babel import Locale

    assert isinstance(found, Locale)
    return str(found).replace("_", "-")


def display(amount: int | float, currency: str, locale: str = "") -> str:
    """The one money format: minor units in the currency's decimals, grouped, with its symbol.

    Without a locale (English): ``123801, "EUR"`` -> ``"€1,238.01"``; ``-500, "EUR"`` ->
    ``"-€5.00"``; ``1200, "JPY"`` -> ``"¥1,200"``; ``1200, "CHF"`` -> ``"CHF 12.00"``. With a
    store's locale, as CLDR writes it there: ``123801, "EUR", "de-DE"`` -> ``"1.238,01 €"``.
    Without a currency, the number alone. An unknown locale is written as English."""
    places = exponent(currency) if currency else 2
    value = Decimal(round(amount)).scaleb(-places)
    found = _locale(locale) if locale else None
    if found is not None:
        return _display_cldr(value, currency, places, found)
    number = f"{abs(value):,.{places}f}"
    sign = "-" if value < 0 else ""
    if not currency:
        return f"{sign}{number}"
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{currency} {number}"


def _display_cldr(value: Decimal, currency: str, places: int, found: object) -> str:
    from babel import Locale

    assert isinstance(found, Locale)
    source = found.currency_formats["standard"] if currency else found.decimal_formats[None]
    pattern = copy.copy(source)
    # The currency's ISO 4217 decimals, as its minor units are counted here (CLDR's own
    # precision differs for a few currencies).
    pattern.frac_prec = (places, places)
    return str(pattern.apply(value, found, currency=currency or None, currency_digits=False))
