"""Discount codes: issued once per cart with a dynamic amount, redeemed at most once.

The amount is chosen by campaigns/discounts.py (pure); here it is stored with its reasons, and
every issue and redemption is also a ``campaign.coupon_*`` event on the cart's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q, Sum

from campaigns import discounts, errors, events
from campaigns.discounts import DiscountChoice
from campaigns.models import YEAR_DAYS, YEAR_HOURS, Coupon, Tier
from carts.services import NewEvent, events_append
from carts.sources import Source

_CODE_ATTEMPTS = 5
# pg_advisory_xact_lock(_BUDGET_LOCK, store id) serialises the issue of a store's budgeted codes
# (two int4 keys: apart from carts.services' one-bigint locks).
_BUDGET_LOCK = 0x636F7570  # "coup"
BUDGET_CODES = "budget_codes"
BUDGET_VALUE = "budget_value"


@dataclass(frozen=True, slots=True)
class CodeTerms:
    """What a code is made from: a tier's discount settings, as plain values (an on-site tier is
    cached per process by recovery; a discount step passes its Tier row)."""

    tier_id: int
    offer_kind: str
    percent: int | None
    discount_min: int | None
    discount_max: int | None
    discount_cap: int | None
    min_cart_value: int
    min_score: float
    recent_code_days: int
    recent_code_policy: str
    margin_floor_percent: int | None
    code_expiry_hours: int

    @classmethod
    def of(cls, tier: Tier) -> CodeTerms:
        return cls(
            tier_id=tier.pk,
            offer_kind=tier.offer_kind,
            percent=tier.percent,
            discount_min=tier.discount_min,
            discount_max=tier.discount_max,
            discount_cap=tier.discount_cap,
            min_cart_value=tier.min_cart_value,
            min_score=tier.min_score,
            # Held to a year where codes are made, as the admin holds what it saves: a tier
            # saved earlier with more (the columns allow 2^31) cannot overflow a date here.
            recent_code_days=min(tier.recent_code_days, YEAR_DAYS),
            recent_code_policy=tier.recent_code_policy,
            margin_floor_percent=tier.margin_floor_percent,
            code_expiry_hours=min(tier.code_expiry_hours, YEAR_HOURS),
        )


@dataclass(frozen=True, slots=True)
class Budget:
    """A store's on-site budget (CampaignSettings): new codes in any 60 minutes, and their value
    (minor units, what each takes off its cart) in any 24 hours."""

    codes_per_hour: int
    value_per_day: int


@dataclass(frozen=True, slots=True)
class Issued:
    coupon: Coupon | None  # None: no discount for this cart
    choice: DiscountChoice
    # campaign.coupon_issued, for the caller to append in its own events_append call. Issuing
    # again for the same cart returns the same code and the very same event (a duplicate there).
    # With no discount it records the decision: kind "none", code null, and the reasons.
    event: NewEvent


@dataclass(frozen=True, slots=True)
class Redeemed:
    coupon: Coupon
    replayed: bool  # the same order redeemed it before: nothing changed


@dataclass(frozen=True, slots=True)
class Validated:
    coupon: Coupon
    discount_applied: int | None  # what it would take off ``cart_value``; None without one


def coupon_issue(
    *,
    store_id: int,
    cart: str,
    shopper: str,
    step_id: int | None,
    tier: Tier | CodeTerms,
    cart_value: int,
    currency: str,
    score: float | None,
    price_sensitivity: float | None,
    gross_margin_percent: int,
    now: datetime,
    channel: str = Tier.Channel.DISCOUNT,
    budget: Budget | None = None,
) -> Issued:
    """The cart's code: its existing one, else a new unique code with an amount chosen for it
    (or none). Runs in the caller's transaction, which holds the cart's lock.

    With a ``budget`` (on-site offers), a new code is made only within the store's budget of
    codes of its ``channel``; past it there is none, with the reason (``budget_codes`` or
    ``budget_value``) among the event's reasons. Within it, the store's budget lock is held to
    the end of the caller's transaction, so parallel issues cannot overshoot."""
    terms = tier if isinstance(tier, CodeTerms) else CodeTerms.of(tier)
    with transaction.atomic():
        existing = Coupon.objects.filter(store_id=store_id, cart=cart).first()
        if existing is not None:
            return _existing(existing)
        recent_code = (
            bool(shopper)
            and terms.recent_code_days > 0
            and (
                Coupon.objects.filter(
                    store_id=store_id,
                    shopper=shopper,
                    issued_at__gt=now - timedelta(days=terms.recent_code_days),
                    issued_at__lte=now,
                )
                .exclude(cart=cart)
                .exists()
            )
        )
        low, high = _range(terms)
        cap = terms.discount_cap if terms.offer_kind == Tier.OfferKind.PERCENT_DISCOUNT else None
        choice = discounts.discount_choose(
            offer_kind=terms.offer_kind,
            discount_min=low,
            discount_max=high,
            cap=cap,
            cart_value=cart_value,
            min_cart_value=terms.min_cart_value,
            score=score,
            min_score=terms.min_score,
            price_sensitivity=price_sensitivity,
            recent_code=recent_code,
            recent_code_policy=terms.recent_code_policy,
            gross_margin_percent=gross_margin_percent,
            margin_floor_percent=terms.margin_floor_percent,
        )
        inputs = {
            "rule": "inputs",
            "score": score,
            "price_sensitivity": price_sensitivity,
            "cart_value": cart_value,
            "currency": currency,
            "recent_code": recent_code,
            "gross_margin_percent": gross_margin_percent,
            "tier": terms.tier_id,
        }
        reasons = [inputs, *choice.reasons]
        value = 0
        if choice.kind != discounts.NONE:
            value = discounts.discount_applied(
                kind=choice.kind, amount=choice.amount, cap=cap, cart_value=cart_value
            )
            over = None
            if budget is not None:
                over = _budget_over(
                    store_id=store_id, channel=channel, budget=budget, value=value, now=now
                )
            if over is not None:
                reasons.append(over)
                choice = DiscountChoice(discounts.NONE, 0, (*choice.reasons, over))
        if choice.kind == discounts.NONE:
            event = events.campaign_event(
                cart=cart,
                type=events.COUPON_ISSUED,
                data={
                    "code": None,
                    "kind": discounts.NONE,
                    "amount": 0,
                    "step_id": step_id,
                    "reasons": reasons,
                },
                now=now,
            )
            return Issued(coupon=None, choice=choice, event=event)
        for attempt in range(_CODE_ATTEMPTS):
            try:
                with transaction.atomic():
                    coupon = Coupon.objects.create(
                        store_id=store_id,
                        cart=cart,
                        shopper=shopper,
                        code=discounts.code_new(),
                        step_id=step_id,
                        kind=choice.kind,
                        amount=choice.amount,
                        cap=cap if choice.kind == discounts.PERCENT else None,
                        currency=currency,
                        min_cart_value=terms.min_cart_value,
                        reasons=reasons,
                        issued_at=now,
                        expires_at=now + timedelta(hours=terms.code_expiry_hours),
                        channel=channel,
                        value=value,
                    )
            except IntegrityError:
                # Another issue for this cart won (one code per cart), or, once in 2^60, the
                # code was taken: draw another.
                raced = Coupon.objects.filter(store_id=store_id, cart=cart).first()
                if raced is not None:
                    return _existing(raced)
                if attempt == _CODE_ATTEMPTS - 1:
                    raise
                continue
            return Issued(coupon=coupon, choice=choice, event=_issued_event(coupon))
    raise AssertionError("unreachable")


def _budget_over(
    *, store_id: int, channel: str, budget: Budget, value: int, now: datetime
) -> dict[str, Any] | None:
    """Why a new code of ``value`` is over the store's budget (a reason), or None: then the
    store's budget lock is held to commit, so the count stays true until the code is written.
    Counted once without the lock, so a store over its budget does not queue on it."""

    def over() -> dict[str, Any] | None:
        recent = Coupon.objects.filter(
            store_id=store_id, channel=channel, issued_at__gt=now - timedelta(days=1)
        ).aggregate(
            codes=Count("pk", filter=Q(issued_at__gt=now - timedelta(hours=1))),
            value=Sum("value"),
        )
        if recent["codes"] >= budget.codes_per_hour:
            return {
                "rule": BUDGET_CODES,
                "codes_last_hour": recent["codes"],
                "codes_per_hour": budget.codes_per_hour,
            }
        spent = recent["value"] or 0
        if spent + value > budget.value_per_day:
            return {
                "rule": BUDGET_VALUE,
                "value": value,
                "value_last_day": spent,
                "value_per_day": budget.value_per_day,
            }
        return None

    refused = over()
    if refused is not None:
        return refused
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_BUDGET_LOCK, store_id])
    return over()


def coupon_for_cart(*, store_id: int, cart: str) -> Coupon | None:
    """The cart's code, if it has one (one per cart, whoever made it)."""
    return Coupon.objects.filter(store_id=store_id, cart=cart).first()


def coupon_usable(coupon: Coupon, *, now: datetime) -> str | None:
    """Why the code cannot be used now (``code_redeemed``, ``code_expired``), or None."""
    if coupon.redeemed_at is not None:
        return "code_redeemed"
    if coupon.expires_at <= now:
        return "code_expired"
    return None


def _range(tier: CodeTerms) -> tuple[int, int]:
    """The tier's [min, max]; a percentage tier without a range uses its fixed percentage."""
    if tier.discount_min is None and tier.discount_max is None:
        if tier.offer_kind == Tier.OfferKind.PERCENT_DISCOUNT and tier.percent:
            return tier.percent, tier.percent
        return 0, 0
    low = tier.discount_min or 0
    high = tier.discount_max if tier.discount_max is not None else low
    return low, high


def _existing(coupon: Coupon) -> Issued:
    choice = DiscountChoice(
        kind=coupon.kind,
        amount=coupon.amount,
        reasons=(
            {"rule": "one_code_per_cart", "code": coupon.code},
            *(r for r in coupon.reasons if r.get("rule") != "inputs"),
        ),
    )
    return Issued(coupon=coupon, choice=choice, event=_issued_event(coupon))


def _issued_event(coupon: Coupon) -> NewEvent:
    """Built from the stored row alone, so issuing again yields the same event (a duplicate)."""
    data: dict[str, Any] = {
        "code": coupon.code,
        "kind": coupon.kind,
        "amount": coupon.amount,
        "cap": coupon.cap,
        "currency": coupon.currency,
        "min_cart_value": coupon.min_cart_value,
        "expires_at": _iso(coupon.expires_at),
        "step_id": coupon.step_id,
        "reasons": coupon.reasons,
    }
    return events.campaign_event(
        cart=coupon.cart,
        type=events.COUPON_ISSUED,
        data=data,
        now=coupon.issued_at,
        key=f"issued:{coupon.code}",
    )


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


# Redemption --------------------------------------------------------------------------------------


def coupon_redeem(
    *,
    store_id: int,
    code: str,
    order_id: str,
    cart_value: int | None,
    currency: str | None,
    now: datetime,
) -> Redeemed:
    """Redeem a code for an order, at most once: one conditional UPDATE decides, so of any number
    of concurrent requests exactly one wins. The same order again is a replay (nothing changes);
    another order gets CouponAlreadyRedeemed. Appends campaign.coupon_redeemed in the same commit.
    """
    code = discounts.code_normalize(code)
    with transaction.atomic():
        coupon = _coupon_get(store_id=store_id, code=code)
        if coupon.redeemed_at is not None:
            return _replay(coupon, order_id)
        applied = _check(coupon, cart_value=cart_value, currency=currency, now=now)
        won = Coupon.objects.filter(
            store_id=store_id, code=code, redeemed_at__isnull=True, expires_at__gt=now
        ).update(redeemed_at=now, order_id=order_id, discount_applied=applied)
        if not won:
            # Redeemed since we read it (a racing request committed first).
            coupon = _coupon_get(store_id=store_id, code=code)
            if coupon.redeemed_at is not None:
                return _replay(coupon, order_id)
            raise errors.CouponExpired("This code has expired.", expires_at=_iso(coupon.expires_at))
        coupon.redeemed_at, coupon.order_id, coupon.discount_applied = now, order_id, applied
        events_append(
            source=Source.system("campaigns"),
            store_id=store_id,
            events=[
                events.campaign_event(
                    cart=coupon.cart,
                    type=events.COUPON_REDEEMED,
                    data={
                        "code": coupon.code,
                        "order_id": order_id,
                        "kind": coupon.kind,
                        "amount": coupon.amount,
                        "currency": coupon.currency,
                        "cart_value": cart_value,
                        "discount_applied": applied,
                    },
                    now=now,
                    key=f"redeemed:{coupon.code}",
                )
            ],
        )
    return Redeemed(coupon=coupon, replayed=False)


def coupon_validate(
    *, store_id: int, code: str, cart_value: int | None, currency: str | None, now: datetime
) -> Validated:
    """Whether a code would redeem now for this cart, and what it would take off; changes
    nothing (a later redeem can still fail: another order may redeem it first)."""
    coupon = _coupon_get(store_id=store_id, code=discounts.code_normalize(code))
    if coupon.redeemed_at is not None:
        raise errors.CouponAlreadyRedeemed("This code has already been redeemed.")
    applied = _check(coupon, cart_value=cart_value, currency=currency, now=now)
    return Validated(coupon=coupon, discount_applied=applied)


def _coupon_get(*, store_id: int, code: str) -> Coupon:
    coupon = Coupon.objects.filter(store_id=store_id, code=code).first()
    if coupon is None:
        raise errors.CouponNotFound("This store has no such code.")
    return coupon


def _replay(coupon: Coupon, order_id: str) -> Redeemed:
    if coupon.order_id == order_id:
        return Redeemed(coupon=coupon, replayed=True)
    raise errors.CouponAlreadyRedeemed("This code has already been redeemed, for another order.")


def _check(
    coupon: Coupon, *, cart_value: int | None, currency: str | None, now: datetime
) -> int | None:
    """What the unredeemed ``coupon`` takes off ``cart_value`` now, if it applies at all."""
    if coupon.expires_at <= now:
        raise errors.CouponExpired("This code has expired.", expires_at=_iso(coupon.expires_at))
    if currency is not None and coupon.currency and currency != coupon.currency:
        raise errors.CouponNotApplicable(
            f"This code is for carts in {coupon.currency}.", field="currency"
        )
    if cart_value is None:
        return None
    if cart_value < coupon.min_cart_value:
        raise errors.CouponNotApplicable(
            f"This code needs a cart value of at least {coupon.min_cart_value} (minor units).",
            field="cart_value",
        )
    return discounts.discount_applied(
        kind=coupon.kind, amount=coupon.amount, cap=coupon.cap, cart_value=cart_value
    )
