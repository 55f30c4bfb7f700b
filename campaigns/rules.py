"""Campaign rules as pure functions: holdout draw, quiet hours, due times and the step decision.

No ORM, no clock, no settings: the step runner (campaigns/steps.py) reads the world under the
cart's lock, passes it in with ``now``, and acts on the returned ``Outcome``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CONVERTED = "converted"  # carts.projections.CONVERTED

# Outcome actions; each becomes a step status and a campaign.step_* event.
SEND = "send"
SKIP = "skip"
DEFER = "defer"
SUPPRESS = "suppress"  # holdout: would have been sent, deliberately not
CANCEL = "cancel"  # the cart converted
FAIL = "fail"  # the step cannot be decided: failed for good
BAD_TIME = "bad_time"  # FAIL's reason: a time the arithmetic cannot represent (past year 9999)

EMAIL_CHANNELS = frozenset({"email", "discount"})
UNSUBSCRIBED = "unsubscribed"
DONT_REMIND = "dont_remind"
BOUNCED = "bounced"  # a hard bounce: the address takes no mail (campaigns/bounces.py)
COMPLAINED = "complained"  # the shopper marked an email as spam


def in_holdout(*, campaign_id: int, shopper: str, share: Decimal) -> bool:
    """A stable draw per campaign and shopper: the same shopper is always in or always out."""
    digest = hashlib.sha256(f"{campaign_id}:{shopper}".encode()).digest()
    return Decimal(int.from_bytes(digest[:8], "big")) / Decimal(2**64) < share


def zone(name: str | None, fallback: str) -> ZoneInfo:
    """The shopper's zone when it is a known one, else the store's, else UTC."""
    for candidate in (name, fallback):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                continue
    return ZoneInfo("UTC")


def quiet_until(
    now: datetime, tz: ZoneInfo, start: time | None, end: time | None
) -> datetime | None:
    """When the quiet hours around ``now`` end (UTC), or None when ``now`` is not in them.

    Hours are local wall-clock times in ``tz``; ``start > end`` spans midnight (21:00-08:00).
    Across a DST change the end is the next local ``end`` on the wall clock: a 08:00 end is 08:00
    local whether the night was 23 or 25 hours long.
    """
    if start is None or end is None or start == end:
        return None
    local = now.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    quiet = start <= t < end if start < end else (t >= start or t < end)
    if not quiet:
        return None
    day = local.date() if t < end else local.date() + timedelta(days=1)
    ends = datetime.combine(day, end, tzinfo=tz).astimezone(UTC)
    # A wall-clock end inside a spring-forward gap maps to the instant after the gap.
    return ends if ends > now else now + timedelta(minutes=1)


def due_at(seen_at: datetime, *, inactivity_minutes: int, delay_minutes: int) -> datetime:
    """A tier's due time: the cart's abandonment (the server's time of its last activity plus
    inactivity) plus its delay. Raises OverflowError past the calendar's end (year 9999);
    ``step_decide`` turns it into ``FAIL``/``BAD_TIME``."""
    return seen_at + timedelta(minutes=inactivity_minutes + delay_minutes)


def email_allowed(*, consent: Mapping[str, bool], legal_basis: str) -> bool:
    """Consent: an explicit yes, or (legitimate interest) anything but an explicit no."""
    if legal_basis == "legitimate_interest":
        return consent.get("email") is not False
    return consent.get("email") is True


@dataclass(frozen=True, slots=True)
class StepFacts:
    """What a step's decision depends on, read under the cart's lock when the step runs."""

    channel: str
    tier_min_score: float
    delay_minutes: int
    # The cart.
    status: str
    item_count: int
    # When the server recorded the cart's latest shopper activity (CartState.seen_at, in
    # campaign time): "active again" is judged on the server's clock, never the shopper's.
    seen_at: datetime | None
    score: float | None
    email: str
    consent: Mapping[str, bool]
    timezone: str
    # The campaign and the store.
    inactivity_minutes: int
    holdout: bool
    cart_cap: int
    shopper_cap_hours: int
    quiet_start: time | None
    quiet_end: time | None
    store_timezone: str
    legal_basis: str
    # History.
    suppressions: frozenset[str]
    sent_to_cart: int
    last_email_to_shopper: datetime | None


@dataclass(frozen=True, slots=True)
class Outcome:
    action: str
    reason: str
    until: datetime | None = None  # DEFER: the new due time


def step_decide(facts: StepFacts, now: datetime) -> Outcome:
    """What a due step does now. Checks run in this order (docs/campaigns.md); a holdout cart goes
    through every check and is suppressed only where it would have been sent, so the holdout
    group is comparable to the treated one. A due time or deferral beyond the calendar (an
    absurd cap, a clock that ran to year 9999) fails the step with ``bad_time``."""
    try:
        return _decide(facts, now)
    except OverflowError:
        return Outcome(FAIL, BAD_TIME)


def _decide(f: StepFacts, now: datetime) -> Outcome:
    if f.status == CONVERTED:
        return Outcome(CANCEL, "converted")
    if DONT_REMIND in f.suppressions:
        return Outcome(SKIP, "dont_remind")
    if f.item_count <= 0:
        return Outcome(SKIP, "empty_cart")
    if f.seen_at is not None:
        due = due_at(
            f.seen_at,
            inactivity_minutes=f.inactivity_minutes,
            delay_minutes=f.delay_minutes,
        )
        if due > now:
            return Outcome(DEFER, "active_again", due)
    if f.score is None or f.score < f.tier_min_score:
        return Outcome(SKIP, "below_min_score")
    emails = f.channel in EMAIL_CHANNELS
    if emails:
        if not f.email:
            return Outcome(SKIP, "no_email")
        if UNSUBSCRIBED in f.suppressions:
            return Outcome(SKIP, "unsubscribed")
        for kind in (BOUNCED, COMPLAINED):
            if kind in f.suppressions:
                return Outcome(SKIP, kind)
        if not email_allowed(consent=f.consent, legal_basis=f.legal_basis):
            return Outcome(SKIP, "no_consent")
    if f.cart_cap and f.sent_to_cart >= f.cart_cap:
        return Outcome(SKIP, "cart_cap")
    if emails:
        last = f.last_email_to_shopper
        if f.shopper_cap_hours and last is not None:
            free_at = last + timedelta(hours=f.shopper_cap_hours)
            if free_at > now:
                return Outcome(DEFER, "shopper_cap", free_at)
        ends = quiet_until(now, zone(f.timezone, f.store_timezone), f.quiet_start, f.quiet_end)
        if ends is not None:
            return Outcome(DEFER, "quiet_hours", ends)
    if f.holdout:
        return Outcome(SUPPRESS, "holdout")
    return Outcome(SEND, "eligible")
