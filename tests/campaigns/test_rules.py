"""The pure campaign rules: quiet hours across zones and DST, due times, consent, the decision."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from campaigns import rules

NIGHT = (time(21, 0), time(8, 0))


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "zone", "hours", "until"),
    [
        # Daytime anywhere: not quiet.
        (utc(2026, 6, 1, 12, 0), "Europe/Berlin", NIGHT, None),
        # 23:30 in Berlin (CEST, UTC+2): quiet until 08:00 local = 06:00 UTC the next day.
        (utc(2026, 6, 1, 21, 30), "Europe/Berlin", NIGHT, utc(2026, 6, 2, 6, 0)),
        # 05:00 in Berlin, after midnight: until 08:00 the same day.
        (utc(2026, 6, 2, 3, 0), "Europe/Berlin", NIGHT, utc(2026, 6, 2, 6, 0)),
        # Exactly at the end: no longer quiet; exactly at the start: quiet.
        (utc(2026, 6, 2, 6, 0), "Europe/Berlin", NIGHT, None),
        (utc(2026, 6, 1, 19, 0), "Europe/Berlin", NIGHT, utc(2026, 6, 2, 6, 0)),
        # The same instant is daytime in Tokyo (20:00 is before 21:00)...
        (utc(2026, 6, 1, 11, 0), "Asia/Tokyo", NIGHT, None),
        # ...and night in Los Angeles (04:00 PDT): until 08:00 PDT = 15:00 UTC.
        (utc(2026, 6, 1, 11, 0), "America/Los_Angeles", NIGHT, utc(2026, 6, 1, 15, 0)),
        # Spring forward in New York (8 March 2026, 02:00 -> 03:00): 01:00 EST is quiet until
        # 08:00 EDT, which is 12:00 UTC (a 6-hour wait on the wall clock, 6 real hours too).
        (utc(2026, 3, 8, 6, 0), "America/New_York", NIGHT, utc(2026, 3, 8, 12, 0)),
        # Fall back in New York (1 November 2026, 02:00 -> 01:00): 01:30 EDT (the first one) is
        # quiet until 08:00 EST = 13:00 UTC, 7.5 real hours later.
        (utc(2026, 11, 1, 5, 30), "America/New_York", NIGHT, utc(2026, 11, 1, 13, 0)),
        # Europe's change night (29 March 2026): 01:30 CET is quiet until 08:00 CEST = 06:00 UTC.
        (utc(2026, 3, 29, 0, 30), "Europe/Berlin", NIGHT, utc(2026, 3, 29, 6, 0)),
        # A daytime window (12:00-14:00) does not span midnight.
        (utc(2026, 6, 1, 12, 30), "UTC", (time(12, 0), time(14, 0)), utc(2026, 6, 1, 14, 0)),
        (utc(2026, 6, 1, 14, 30), "UTC", (time(12, 0), time(14, 0)), None),
        # No quiet hours configured.
        (utc(2026, 6, 1, 23, 0), "UTC", (None, None), None),
    ],
)
def test_quiet_hours_end_at_the_next_local_end_time(now, zone, hours, until):
    assert rules.quiet_until(now, ZoneInfo(zone), *hours) == until


def test_an_end_inside_a_spring_forward_gap_is_after_now():
    # Quiet 21:00-02:30 in New York: 02:30 does not exist on 8 March 2026.
    now = utc(2026, 3, 8, 6, 30)  # 01:30 EST
    ends = rules.quiet_until(now, ZoneInfo("America/New_York"), time(21, 0), time(2, 30))
    assert ends is not None and ends > now
    assert ends <= utc(2026, 3, 8, 8, 0)


@pytest.mark.parametrize(
    ("shopper", "store", "expected"),
    [
        ("Asia/Tokyo", "Europe/Berlin", "Asia/Tokyo"),
        ("", "Europe/Berlin", "Europe/Berlin"),
        ("Mars/Olympus", "Europe/Berlin", "Europe/Berlin"),
        ("Mars/Olympus", "Nowhere/Else", "UTC"),
    ],
)
def test_the_shoppers_zone_falls_back_to_the_stores_then_utc(shopper, store, expected):
    assert rules.zone(shopper, store) == ZoneInfo(expected)


@pytest.mark.parametrize(
    ("consent", "basis", "allowed"),
    [
        ({"email": True}, "consent", True),
        ({}, "consent", False),
        ({"email": False}, "consent", False),
        ({}, "legitimate_interest", True),
        ({"email": False}, "legitimate_interest", False),
    ],
)
def test_email_consent(consent, basis, allowed):
    assert rules.email_allowed(consent=consent, legal_basis=basis) is allowed


def test_the_holdout_draw_is_stable_and_near_its_share():
    from decimal import Decimal

    draws = [
        rules.in_holdout(campaign_id=3, shopper=f"s{n}", share=Decimal("0.2")) for n in range(5000)
    ]
    assert draws == [
        rules.in_holdout(campaign_id=3, shopper=f"s{n}", share=Decimal("0.2")) for n in range(5000)
    ]
    assert 900 < sum(draws) < 1100


NOW = utc(2026, 6, 1, 12, 0)
FACTS = rules.StepFacts(
    channel="email",
    tier_min_score=0.3,
    delay_minutes=60,
    status="active",
    item_count=2,
    seen_at=NOW - timedelta(minutes=120),
    score=0.8,
    email="ana@example.com",
    consent={"email": True},
    timezone="Europe/Berlin",
    inactivity_minutes=30,
    holdout=False,
    cart_cap=3,
    shopper_cap_hours=24,
    quiet_start=time(21, 0),
    quiet_end=time(8, 0),
    store_timezone="UTC",
    legal_basis="consent",
    suppressions=frozenset(),
    sent_to_cart=0,
    last_email_to_shopper=None,
)


@pytest.mark.parametrize(
    ("changes", "outcome"),
    [
        ({}, rules.Outcome("send", "eligible")),
        ({"status": "converted", "holdout": True}, rules.Outcome("cancel", "converted")),
        ({"suppressions": frozenset({"dont_remind"})}, rules.Outcome("skip", "dont_remind")),
        ({"item_count": 0}, rules.Outcome("skip", "empty_cart")),
        (
            {"seen_at": NOW - timedelta(minutes=60)},
            rules.Outcome("defer", "active_again", NOW + timedelta(minutes=30)),
        ),
        ({"score": 0.2}, rules.Outcome("skip", "below_min_score")),
        ({"score": None}, rules.Outcome("skip", "below_min_score")),
        ({"email": ""}, rules.Outcome("skip", "no_email")),
        ({"suppressions": frozenset({"unsubscribed"})}, rules.Outcome("skip", "unsubscribed")),
        ({"consent": {}}, rules.Outcome("skip", "no_consent")),
        ({"sent_to_cart": 3}, rules.Outcome("skip", "cart_cap")),
        ({"sent_to_cart": 3, "cart_cap": 0}, rules.Outcome("send", "eligible")),
        (
            {"last_email_to_shopper": NOW - timedelta(hours=20)},
            rules.Outcome("defer", "shopper_cap", NOW + timedelta(hours=4)),
        ),
        ({"last_email_to_shopper": NOW - timedelta(hours=25)}, rules.Outcome("send", "eligible")),
        (
            {"timezone": "Asia/Tokyo"},  # 21:00 in Tokyo
            rules.Outcome("defer", "quiet_hours", utc(2026, 6, 1, 23, 0)),
        ),
        ({"holdout": True}, rules.Outcome("suppress", "holdout")),
        # On-site nudges need no email, consent, shopper cap or quiet hours.
        (
            {"channel": "onsite", "email": "", "consent": {}, "timezone": "Asia/Tokyo"},
            rules.Outcome("send", "eligible"),
        ),
        # A holdout cart that would not have been sent is skipped like any other.
        ({"holdout": True, "consent": {}}, rules.Outcome("skip", "no_consent")),
        # Times past the calendar's end (year 9999) fail the step instead of raising.
        (
            {"seen_at": datetime.max.replace(tzinfo=UTC) - timedelta(minutes=10)},
            rules.Outcome("fail", "bad_time"),
        ),
        (
            {"last_email_to_shopper": NOW, "shopper_cap_hours": 2**31 - 1},
            rules.Outcome("fail", "bad_time"),
        ),
        # A converted cart is cancelled before any arithmetic on its times.
        (
            {"status": "converted", "seen_at": datetime.max.replace(tzinfo=UTC)},
            rules.Outcome("cancel", "converted"),
        ),
    ],
)
def test_the_step_decision(changes, outcome):
    assert rules.step_decide(replace(FACTS, **changes), NOW) == outcome


def test_due_times_add_inactivity_and_delay():
    assert rules.due_at(NOW, inactivity_minutes=30, delay_minutes=90) == NOW + timedelta(hours=2)
