"""ISO 4217 currencies and their minor units (pure)."""

from __future__ import annotations

from decimal import Decimal
from functools import cache

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
