"""The dynamic discount rule, what a code takes off, and the code format (pure: no database)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from campaigns.discounts import (
    CODE_ALPHABET,
    CODE_BITS,
    CODE_PATTERN,
    DiscountChoice,
    code_new,
    code_normalize,
    discount_applied,
    discount_choose,
)

BASE: dict[str, Any] = {
    "offer_kind": "percent_discount",
    "discount_min": 5,
    "discount_max": 20,
    "cap": None,
    "cart_value": 10_000,
    "min_cart_value": 0,
    "score": 0.8,
    "min_score": 0.5,
    "price_sensitivity": 0.5,
    "recent_code": False,
    "recent_code_policy": "smaller",
    "gross_margin_percent": 40,
    "margin_floor_percent": None,
}
FIXED = {"offer_kind": "fixed_discount", "discount_min": 500, "discount_max": 2000}


def choose(**overrides: Any) -> DiscountChoice:
    return discount_choose(**{**BASE, **overrides})


def test_the_default_cart_gets_an_amount_scaled_by_risk_and_sensitivity_with_its_reasons():
    # risk = (0.8 - 0.5) / 0.5 = 0.6; intensity = sqrt(0.6 * 0.5) = 0.5477; 5 + 15 * 0.5477 = 13.2
    choice = choose()

    assert choice == DiscountChoice(
        kind="percent",
        amount=13,
        reasons=(
            {"rule": "at_risk", "score": 0.8, "min_score": 0.5},
            {
                "rule": "dynamic",
                "risk": 0.6,
                "price_sensitivity": 0.5,
                "sensitivity_known": True,
                "intensity": 0.5477,
                "min": 5,
                "max": 20,
                "amount": 13,
            },
        ),
    )


# (overrides, kind, amount, the rule of the last reason)
BRANCHES: dict[str, tuple[dict[str, Any], str, int, str]] = {
    "a message tier gives no discount": ({"offer_kind": "message"}, "none", 0, "not_a_discount"),
    "min above max": ({"discount_min": 20, "discount_max": 5}, "none", 0, "invalid_range"),
    "negative min": ({"discount_min": -1}, "none", 0, "invalid_range"),
    "cart below the minimum cart value": (
        {"cart_value": 4_999, "min_cart_value": 5_000},
        "none",
        0,
        "below_min_cart_value",
    ),
    "cart at the minimum cart value": (
        {"cart_value": 5_000, "min_cart_value": 5_000},
        "percent",
        13,
        "dynamic",
    ),
    "likely to convert anyway: below the minimum score": (
        {"score": 0.49},
        "none",
        0,
        "below_min_score",
    ),
    "just at the minimum score: the minimum": ({"score": 0.5}, "percent", 5, "dynamic"),
    "most at risk, most price-sensitive: the maximum": (
        {"score": 1.0, "price_sensitivity": 1.0},
        "percent",
        20,
        "dynamic",
    ),
    "at risk but not price-sensitive: the minimum": (
        {"score": 1.0, "price_sensitivity": 0.0},
        "percent",
        5,
        "dynamic",
    ),
    "unknown sensitivity counts as 0.5": (
        {"score": 1.0, "price_sensitivity": None},
        "percent",
        16,  # 5 + 15 * sqrt(0.5) = 15.6
        "dynamic",
    ),
    "sensitivity outside 0-1 is clamped": (
        {"score": 1.0, "price_sensitivity": 3.0},
        "percent",
        20,
        "dynamic",
    ),
    "unknown score: the minimum": ({"score": None}, "percent", 5, "dynamic"),
    "minimum score 1 and a certain abandonment": (
        {"score": 1.0, "min_score": 1.0, "price_sensitivity": 1.0},
        "percent",
        20,
        "dynamic",
    ),
    "recent code, policy none": (
        {"recent_code": True, "recent_code_policy": "none"},
        "none",
        0,
        "recent_code",
    ),
    "recent code, policy smaller: the minimum": (
        {"recent_code": True, "score": 1.0, "price_sensitivity": 1.0},
        "percent",
        5,
        "minimum",
    ),
    "free shipping when at risk": (
        {"offer_kind": "free_shipping"},
        "free_shipping",
        0,
        "free_shipping",
    ),
    "no free shipping below the minimum score": (
        {"offer_kind": "free_shipping", "score": 0.3},
        "none",
        0,
        "below_min_score",
    ),
    "free shipping has no smaller size": (
        {"offer_kind": "free_shipping", "recent_code": True},
        "free_shipping",
        0,
        "free_shipping",
    ),
    "free shipping, recent code, policy none": (
        {"offer_kind": "free_shipping", "recent_code": True, "recent_code_policy": "none"},
        "none",
        0,
        "recent_code",
    ),
    "fixed amounts round to 100 minor units": (FIXED, "fixed", 1300, "dynamic"),  # 1321.6
    "fixed maximum": (
        {**FIXED, "score": 1.0, "price_sensitivity": 1.0},
        "fixed",
        2000,
        "dynamic",
    ),
    "fixed maximum that is not a multiple of 100": (
        {**FIXED, "discount_max": 2050, "score": 1.0, "price_sensitivity": 1.0},
        "fixed",
        2050,
        "dynamic",
    ),
    "fixed minimum that is not a multiple of 100 is never undercut": (
        {**FIXED, "discount_min": 230, "score": 0.5},
        "fixed",
        230,
        "dynamic",
    ),
    "margin floor lowers a percentage": (
        {"margin_floor_percent": 30},  # 40% margin, 30% floor: at most 10% off
        "percent",
        10,
        "margin_floor",
    ),
    "margin floor below the minimum: none": (
        {"margin_floor_percent": 38},  # at most 2% < 5%
        "none",
        0,
        "margin_floor",
    ),
    "floor at or above the margin: none": (
        {"margin_floor_percent": 45},
        "none",
        0,
        "margin_floor",
    ),
    "a cap within the floor keeps the percentage": (
        {"margin_floor_percent": 30, "cap": 800},  # 10% of 100.00 = 10.00 >= the 8.00 cap
        "percent",
        13,
        "cap",
    ),
    "margin floor lowers a fixed amount": (
        {**FIXED, "cart_value": 9_000, "margin_floor_percent": 30},  # at most 900
        "fixed",
        900,
        "margin_floor",
    ),
    "a fixed floor limit between the minimum and the next 100": (
        {**FIXED, "discount_min": 450, "cart_value": 4_900, "margin_floor_percent": 30},  # 490
        "fixed",
        450,
        "margin_floor",
    ),
    "margin floor below a fixed minimum: none": (
        {**FIXED, "cart_value": 3_000, "margin_floor_percent": 30},  # at most 300 < 500
        "none",
        0,
        "margin_floor",
    ),
    "a percentage above 100 is 100": (
        {"discount_min": 50, "discount_max": 150, "score": 1.0, "price_sensitivity": 1.0},
        "percent",
        100,
        "percent_limit",
    ),
    "a range from 0 can round to none": (
        {"discount_min": 0, "discount_max": 10, "score": 0.5},
        "none",
        0,
        "zero_amount",
    ),
}


@pytest.mark.parametrize(
    ("overrides", "kind", "amount", "rule"), BRANCHES.values(), ids=list(BRANCHES)
)
def test_each_branch(overrides, kind, amount, rule):
    choice = choose(**overrides)

    assert (choice.kind, choice.amount, choice.reasons[-1]["rule"]) == (kind, amount, rule)


def test_a_cap_is_recorded_with_what_it_takes_off_this_cart():
    capped = choose(cap=800)
    under = choose(cap=5_000)

    assert (capped.kind, capped.amount) == ("percent", 13)
    assert capped.reasons[-1] == {"rule": "cap", "cap": 800, "takes_off": 800, "capped": True}
    assert under.reasons[-1] == {"rule": "cap", "cap": 5_000, "takes_off": 1_300, "capped": False}


def test_reasons_of_a_refusal_and_of_the_anti_gaming_minimum():
    assert choose(score=0.3).reasons == (
        {"rule": "below_min_score", "score": 0.3, "min_score": 0.5},
    )
    assert choose(margin_floor_percent=38).reasons[-1] == {
        "rule": "margin_floor",
        "gross_margin_percent": 40,
        "margin_floor_percent": 38,
        "limit": 2,
        "min": 5,
    }
    assert choose(recent_code=True).reasons == (
        {"rule": "at_risk", "score": 0.8, "min_score": 0.5},
        {"rule": "recent_code", "policy": "smaller"},
        {"rule": "minimum", "amount": 5},
    )
    assert choose(score=None, price_sensitivity=1.0).reasons[0] == {
        "rule": "score_unknown",
        "risk": 0.0,
    }


CONFIGS = {
    "percent": {},
    "percent from 0": {"discount_min": 0, "discount_max": 30},
    "percent with floor and cap": {"margin_floor_percent": 28, "cap": 1_100},
    "fixed": FIXED,
    "fixed with floor": {**FIXED, "margin_floor_percent": 25},
    "free shipping": {"offer_kind": "free_shipping"},
}
GRID = [i / 20 for i in range(21)]


def _rank(choice: DiscountChoice) -> tuple[bool, int]:
    return (choice.kind != "none", choice.amount)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=list(CONFIGS))
def test_more_at_risk_or_more_price_sensitive_never_gets_less(config):
    ranks = {
        (score, sensitivity): _rank(choose(**config, score=score, price_sensitivity=sensitivity))
        for score, sensitivity in itertools.product(GRID, GRID)
    }

    for (score, sensitivity), rank in ranks.items():
        for more in (s for s in GRID if s > score):
            assert ranks[(more, sensitivity)] >= rank, (score, more, sensitivity)
        for more in (s for s in GRID if s > sensitivity):
            assert ranks[(score, more)] >= rank, (score, sensitivity, more)
    assert len({rank for rank in ranks.values()}) > 1  # the grid does reach different amounts


@pytest.mark.parametrize("config", CONFIGS.values(), ids=list(CONFIGS))
def test_the_amount_stays_within_the_range(config):
    low = config.get("discount_min", BASE["discount_min"])
    high = config.get("discount_max", BASE["discount_max"])

    for score, sensitivity in itertools.product(GRID, GRID):
        choice = choose(**config, score=score, price_sensitivity=sensitivity)
        if choice.kind in ("percent", "fixed"):
            assert low <= choice.amount <= high


APPLIED = {
    "percent, rounded half up": ("percent", 15, None, 1_010, 152),  # 151.5
    "percent under its cap": ("percent", 10, 5_000, 10_000, 1_000),
    "percent over its cap": ("percent", 10, 800, 10_000, 800),
    "fixed": ("fixed", 1_500, None, 10_000, 1_500),
    "fixed above the cart value": ("fixed", 1_500, None, 900, 900),
    "free shipping takes nothing off the items": ("free_shipping", 0, None, 10_000, 0),
    "an empty cart": ("percent", 10, None, 0, 0),
}


@pytest.mark.parametrize(
    ("kind", "amount", "cap", "cart_value", "off"), APPLIED.values(), ids=list(APPLIED)
)
def test_discount_applied(kind, amount, cap, cart_value, off):
    assert discount_applied(kind=kind, amount=amount, cap=cap, cart_value=cart_value) == off


def test_ten_thousand_codes_are_distinct_and_well_formed():
    codes = [code_new() for _ in range(10_000)]

    assert len(set(codes)) == 10_000
    assert [c for c in codes if not CODE_PATTERN.match(c)] == []
    assert {len(c) for c in codes} == {19}


def test_codes_use_an_unambiguous_alphabet_with_at_least_60_bits():
    assert len(set(CODE_ALPHABET)) == len(CODE_ALPHABET) == 32
    assert set(CODE_ALPHABET) & set("01IO") == set()
    assert CODE_BITS >= 60


def test_a_code_is_drawn_from_the_given_source_in_groups():
    symbols = iter("23456789ABCD")

    assert code_new(choice=lambda alphabet: next(symbols)) == "SAVE-2345-6789-ABCD"


def test_codes_are_normalised_as_typed():
    assert code_normalize("  save-7kq2-mx9d -h4tp\n") == "SAVE-7KQ2-MX9D-H4TP"
