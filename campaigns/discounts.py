"""How much discount a cart gets, what its code looks like, and what a redemption takes off (pure).

No ORM, no clock, no settings: campaigns/coupons.py reads the tier, the cart and the shopper's
recent codes, passes them in, and stores the returned choice with the code.

The dynamic rule (``discount_choose``), in order; every branch appends a reason, so each choice
can be explained:

1. Only discount tiers give a discount (``percent_discount``, ``fixed_discount``,
   ``free_shipping``); any other offer kind gets none. A range with ``min > max`` gets none.
2. A cart below the tier's minimum cart value gets none.
3. A cart whose abandonment score (P(abandoned), 0-1) is below the tier's minimum score is likely
   to convert anyway: none. An unknown score counts as just at the threshold: the minimum.
4. A shopper who got a code in the recent-code window: policy ``none`` gives none, policy
   ``smaller`` gives the minimum (free shipping stays free shipping: it has no smaller size).
5. Free shipping: free shipping (it has no amount to scale).
6. Otherwise the amount scales with intensity = sqrt(risk x sensitivity), where risk is the cart's
   share of the at-risk range, ``(score - min_score) / (1 - min_score)``, and sensitivity is the
   price specialist's push towards abandonment (0-1; unknown counts as 0.5). The geometric mean
   needs both: a cart at risk for reasons other than price gets little more than the minimum.
   ``amount = min + (max - min) x intensity``, rounded to whole percentage points, or for a fixed
   amount to a multiple of 100 minor units, kept within [min, max].
7. The margin floor: the discount may take at most ``gross_margin - margin_floor`` percent of the
   cart value (as percentage points, or as minor units for a fixed amount, rounded down to 100
   but not below the minimum). A limit below the minimum gives none. A percentage whose cap
   already keeps it within the limit is not reduced.
8. A percentage above 100 is 100; a percentage with a cap takes off at most the cap (recorded
   with what it takes off this cart). An amount of 0 is none.

More risk or more price sensitivity never gets less (tests/campaigns/test_discounts.py).
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Coupon.Kind values, and "none".
PERCENT = "percent"
FIXED = "fixed"
FREE_SHIPPING = "free_shipping"
NONE = "none"

# Tier.OfferKind values that give a discount, and the coupon kind each gives.
OFFER_KINDS = {
    "percent_discount": PERCENT,
    "fixed_discount": FIXED,
    "free_shipping": FREE_SHIPPING,
}
RECENT_NONE = "none"  # Tier.RecentCodePolicy
RECENT_SMALLER = "smaller"

UNKNOWN_SENSITIVITY = 0.5
FIXED_STEP = 100  # fixed amounts are multiples of this many minor units


@dataclass(frozen=True, slots=True)
class DiscountChoice:
    kind: str  # "percent" | "fixed" | "free_shipping" | "none"
    amount: int  # percentage points, or minor units for fixed; 0 for free_shipping and none
    reasons: tuple[dict[str, Any], ...]  # JSON-ready, in the order the rules applied


def discount_choose(
    *,
    offer_kind: str,
    discount_min: int,
    discount_max: int,
    cap: int | None,
    cart_value: int,
    min_cart_value: int,
    score: float | None,
    min_score: float,
    price_sensitivity: float | None,
    recent_code: bool,
    recent_code_policy: str,
    gross_margin_percent: int,
    margin_floor_percent: int | None,
) -> DiscountChoice:
    """The discount for one cart under one tier, and why (the rule is in the module docstring)."""
    reasons: list[dict[str, Any]] = []

    def none(rule: str, **values: Any) -> DiscountChoice:
        reasons.append({"rule": rule, **values})
        return DiscountChoice(NONE, 0, tuple(reasons))

    kind = OFFER_KINDS.get(offer_kind)
    if kind is None:
        return none("not_a_discount", offer_kind=offer_kind)
    if kind != FREE_SHIPPING and not 0 <= discount_min <= discount_max:
        return none("invalid_range", min=discount_min, max=discount_max)
    if cart_value < min_cart_value:
        return none("below_min_cart_value", cart_value=cart_value, min_cart_value=min_cart_value)

    if score is None:
        risk = 0.0
        reasons.append({"rule": "score_unknown", "risk": 0.0})
    elif score < min_score:
        return none("below_min_score", score=_r(score), min_score=_r(min_score))
    else:
        risk = 1.0 if min_score >= 1 else _unit((score - min_score) / (1 - min_score))
        reasons.append({"rule": "at_risk", "score": _r(score), "min_score": _r(min_score)})

    smaller = False
    if recent_code:
        if recent_code_policy == RECENT_SMALLER:
            smaller = True
            reasons.append({"rule": "recent_code", "policy": RECENT_SMALLER})
        else:
            return none("recent_code", policy=recent_code_policy)

    if kind == FREE_SHIPPING:
        reasons.append({"rule": "free_shipping"})
        return DiscountChoice(FREE_SHIPPING, 0, tuple(reasons))

    if smaller:
        amount = discount_min
        reasons.append({"rule": "minimum", "amount": amount})
    else:
        sensitivity = UNKNOWN_SENSITIVITY if price_sensitivity is None else _unit(price_sensitivity)
        intensity = math.sqrt(risk * sensitivity)
        raw = discount_min + (discount_max - discount_min) * intensity
        if kind == PERCENT:
            amount = math.floor(raw + 0.5)
        else:
            amount = math.floor(raw / FIXED_STEP + 0.5) * FIXED_STEP
        amount = min(max(amount, discount_min), discount_max)
        reasons.append(
            {
                "rule": "dynamic",
                "risk": _r(risk),
                "price_sensitivity": _r(sensitivity),
                "sensitivity_known": price_sensitivity is not None,
                "intensity": _r(intensity),
                "min": discount_min,
                "max": discount_max,
                "amount": amount,
            }
        )

    if margin_floor_percent is not None:
        headroom = max(gross_margin_percent - margin_floor_percent, 0)  # percent of cart value
        limit_value = cart_value * headroom // 100
        if kind == PERCENT and cap is not None and cap <= limit_value:
            limit = amount  # the cap already keeps it within the floor
        elif kind == PERCENT:
            limit = headroom
        else:
            limit = limit_value
        if limit < discount_min:
            return none(
                "margin_floor",
                gross_margin_percent=gross_margin_percent,
                margin_floor_percent=margin_floor_percent,
                limit=limit,
                min=discount_min,
            )
        if amount > limit:
            # Fixed amounts stay multiples of 100 where the minimum allows (min <= limit).
            amount = (
                limit if kind == PERCENT else max(limit // FIXED_STEP * FIXED_STEP, discount_min)
            )
            reasons.append({"rule": "margin_floor", "limit": limit, "amount": amount})

    if kind == PERCENT:
        if amount > 100:
            amount = 100
            reasons.append({"rule": "percent_limit", "amount": amount})
        if cap is not None and amount > 0:
            takes_off = discount_applied(
                kind=PERCENT, amount=amount, cap=cap, cart_value=cart_value
            )
            reasons.append(
                {"rule": "cap", "cap": cap, "takes_off": takes_off, "capped": takes_off == cap}
            )
    if amount <= 0:
        return none("zero_amount")
    return DiscountChoice(kind, amount, tuple(reasons))


def discount_applied(*, kind: str, amount: int, cap: int | None, cart_value: int) -> int:
    """Minor units a code takes off a cart of ``cart_value``: a percentage rounded half up and at
    most the cap, a fixed amount at most the cart value, 0 for free shipping (the shipping is
    the platform's to waive)."""
    if cart_value <= 0:
        return 0
    if kind == PERCENT:
        off = (cart_value * amount + 50) // 100
        return min(off, cap) if cap is not None else off
    if kind == FIXED:
        return min(amount, cart_value)
    return 0


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _r(value: float) -> float:
    return round(value, 4)


# Codes -------------------------------------------------------------------------------------------

# 32 symbols a reader cannot confuse: no I or O, and no 0 or 1 that would pass for them.
# 12 symbols x 5 bits = 60 bits of randomness.
CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
CODE_PREFIX = "SAVE"
CODE_GROUPS = 3
CODE_GROUP_LENGTH = 4
CODE_BITS = CODE_GROUPS * CODE_GROUP_LENGTH * 5
CODE_PATTERN = re.compile(
    rf"\A{CODE_PREFIX}(-[{CODE_ALPHABET}]{{{CODE_GROUP_LENGTH}}}){{{CODE_GROUPS}}}\Z"
)


def code_new(*, choice: Callable[[str], str] = secrets.choice) -> str:
    """A fresh code, e.g. ``SAVE-7KQ2-MX9D-H4TP``: 60 bits from ``secrets`` (unguessable)."""
    groups = (
        "".join(choice(CODE_ALPHABET) for _ in range(CODE_GROUP_LENGTH)) for _ in range(CODE_GROUPS)
    )
    return "-".join((CODE_PREFIX, *groups))


def code_normalize(text: str) -> str:
    """A code as a shopper may type it (lower case, spaces) in its stored form."""
    return "".join(text.split()).upper()
