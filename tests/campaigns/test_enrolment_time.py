"""Time as the server saw it (issue 12): enrolment, abandonment, due times and "active again" run
on the server's record of a cart's activity (``CartState.seen_at``), never on the events' own
``occurred_at``; a campaign's maximum age records older carts as skipped. Real database; the
append's ``now`` (campaign clock, tests/campaigns/builders.py) stamps when the server saw events.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from campaigns import enrolment, steps
from campaigns.models import Enrollment, Step
from carts import services
from carts.models import CartEvent
from carts.sources import Source
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned
from tests.conftest import new_event

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # when the shopper was last active
ACTIVATED = T - timedelta(days=1)
MINUTE = timedelta(minutes=1)


def _campaign(store_id: int, **fields):
    return campaign_with_tiers(
        store_id,
        activated_at=ACTIVATED,
        tiers=[{"channel": "onsite"}, {"channel": "email", "delay_minutes": 60}],
        **fields,
    )


def _turns(start: datetime, end: datetime, every: timedelta = 10 * MINUTE) -> int:
    """The scheduler's turns from ``start`` to ``end``: carts enrolled."""
    enrolled, now = 0, start
    while now <= end:
        enrolled += enrolment.abandoned_carts_enroll(now=now)
        now += every
    return enrolled


def _steps(cart: str) -> list[tuple[str, str, str, datetime]]:
    return sorted(
        Step.objects.filter(cart=cart).values_list("channel", "status", "reason", "due_at")
    )


def _campaign_events(store_id: int, cart: str) -> list[tuple[str, dict]]:
    return [
        (e.type, e.data)
        for e in CartEvent.objects.filter(
            store_id=store_id, cart=cart, type__startswith="campaign."
        ).order_by("version")
    ]


def _run_due(store_id: int, now: datetime, capture) -> dict[str, int]:
    published: list[list[int]] = []
    with capture(execute=True):
        steps.due_steps_enqueue(now=now, publish=published.append)
    return steps.steps_execute(step_ids=[i for b in published for i in b], now=lambda: now)


@pytest.mark.parametrize(
    "delay",
    [timedelta(minutes=40), timedelta(hours=2), timedelta(days=3)],
    ids=["40 minutes", "2 hours", "3 days"],
)
def test_a_cart_whose_events_arrive_late_is_enrolled_once_idle_after_their_arrival(store, delay):
    # given a campaign whose scheduler has been taking turns all along, and a cart whose events
    # (last activity at T) reach the server ``delay`` later
    _campaign(store.pk)
    arrived = T + delay
    assert _turns(T, arrived) == 0
    cart = cart_abandoned(store.pk, at=T, arrived=arrived)

    # when the scheduler goes on: not before 30 minutes of recorded idleness, then once
    assert _turns(arrived, arrived + 29 * MINUTE, every=MINUTE) == 0
    assert enrolment.abandoned_carts_enroll(now=arrived + 30 * MINUTE) == 1
    assert _turns(arrived + 31 * MINUTE, arrived + 3 * 60 * MINUTE) == 0

    # then its abandonment and due times count from the arrival (inside the default 7 days)
    enrollment = Enrollment.objects.get(store=store, cart=cart.token)
    assert enrollment.abandoned_at == arrived + 30 * MINUTE
    assert _steps(cart.token) == [
        ("email", "pending", "", arrived + 90 * MINUTE),
        ("onsite", "pending", "", arrived + 30 * MINUTE),
    ]
    [(kind, data)] = _campaign_events(store.pk, cart.token)
    assert kind == "campaign.enrolled"
    assert "skipped" not in data


@pytest.mark.parametrize(
    ("max_age_days", "delay"),
    [(2, timedelta(days=3)), (7, timedelta(days=10))],
    ids=["3 days late, max age 2", "10 days late, max age 7"],
)
def test_a_cart_older_than_the_maximum_age_is_recorded_skipped_and_never_contacted(
    store, mailoutbox, django_capture_on_commit_callbacks, max_age_days, delay
):
    # given a campaign with a maximum age, and a cart whose events arrive after it
    campaign = _campaign(store.pk, max_age_days=max_age_days)
    arrived = T + delay
    cart = cart_abandoned(store.pk, at=T, arrived=arrived)

    # when it qualifies
    assert enrolment.abandoned_carts_enroll(now=arrived + 30 * MINUTE) == 1

    # then it is recorded, once: enrolled with every step skipped as too old
    assert enrolment.abandoned_carts_enroll(now=arrived + 40 * MINUTE) == 0
    enrollment = Enrollment.objects.get(store=store, cart=cart.token)
    assert (enrollment.campaign_id, enrollment.abandoned_at) == (
        campaign.pk,
        arrived + 30 * MINUTE,
    )
    assert _steps(cart.token) == [
        ("email", "skipped", "too_old", arrived + 30 * MINUTE),
        ("onsite", "skipped", "too_old", arrived + 30 * MINUTE),
    ]
    recorded = _campaign_events(store.pk, cart.token)
    assert [(kind, data.get("skipped"), data.get("reason")) for kind, data in recorded] == [
        ("campaign.enrolled", "too_old", None),
        ("campaign.step_skipped", None, "too_old"),
        ("campaign.step_skipped", None, "too_old"),
    ]
    assert sorted(data["channel"] for _, data in recorded[1:]) == ["email", "onsite"]

    # and never contacted: nothing is handed out, nothing sent
    assert _run_due(store.pk, arrived + 3 * 60 * MINUTE, django_capture_on_commit_callbacks) == {}
    assert mailoutbox == []


def test_a_cart_just_inside_the_maximum_age_is_enrolled(store):
    # 3 days late with a maximum age of 7 is enrolled (above); so is one just short of 2 days
    _campaign(store.pk, max_age_days=2)
    arrived = T + timedelta(days=2) - 31 * MINUTE
    cart = cart_abandoned(store.pk, at=T, arrived=arrived)
    assert enrolment.abandoned_carts_enroll(now=arrived + 30 * MINUTE) == 1
    assert [status for _, status, _, _ in _steps(cart.token)] == ["pending", "pending"]


@pytest.mark.parametrize(
    "skew",
    [timedelta(0), timedelta(hours=-1), timedelta(hours=1)],
    ids=["accurate", "1 hour behind", "1 hour ahead"],
)
def test_a_browser_clock_behind_or_ahead_changes_nothing(
    store, mailoutbox, django_capture_on_commit_callbacks, skew
):
    # given a shopper active at T (server time) whose device clock is ``skew`` off
    _campaign(store.pk)
    cart = cart_abandoned(store.pk, at=T + skew, arrived=T)

    # then it is enrolled once, at the same server time as for an accurate clock
    assert _turns(T, T + 29 * MINUTE, every=MINUTE) == 0
    assert enrolment.abandoned_carts_enroll(now=T + 30 * MINUTE) == 1
    assert _turns(T + 31 * MINUTE, T + 3 * 60 * MINUTE) == 0
    assert Enrollment.objects.get(cart=cart.token).abandoned_at == T + 30 * MINUTE
    assert _steps(cart.token) == [
        ("email", "pending", "", T + 90 * MINUTE),
        ("onsite", "pending", "", T + 30 * MINUTE),
    ]

    # and its steps run when due, neither deferred as "active again" nor sent early
    assert _run_due(store.pk, T + 30 * MINUTE, django_capture_on_commit_callbacks) == {"sent": 1}
    assert _run_due(store.pk, T + 89 * MINUTE, django_capture_on_commit_callbacks) == {}
    assert _run_due(store.pk, T + 90 * MINUTE, django_capture_on_commit_callbacks) == {"sent": 1}
    assert len(mailoutbox) == 1


def test_activity_recorded_after_enrolment_defers_a_step_whatever_its_clock_says(
    store, django_capture_on_commit_callbacks
):
    # given an enrolled cart whose shopper comes back at T + 35 min, from a device whose clock
    # is an hour slow (the page view says T - 25 min, before the enrolment)
    _campaign(store.pk)
    cart = cart_abandoned(store.pk, at=T)
    assert enrolment.abandoned_carts_enroll(now=T + 30 * MINUTE) == 1
    back = T + 35 * MINUTE
    services.events_append(
        source=Source.browser("test"),
        store_id=store.pk,
        events=[
            new_event(
                "page.viewed", cart.token, {"url": "/", "page_type": "home"}, at=back - 60 * MINUTE
            )
        ],
        now=back,
    )

    # when its first step runs, then it waits for the new abandonment, on the server's clock
    assert _run_due(store.pk, T + 36 * MINUTE, django_capture_on_commit_callbacks) == {
        "deferred": 1
    }
    assert Step.objects.get(cart=cart.token, channel="onsite").due_at == back + 30 * MINUTE


def test_the_enrolment_scan_reads_the_idle_index_from_its_mark(store):
    # given a store with a long history of carts recorded before the campaign's mark
    from django.db import connection

    from tests.carts.test_append_plans import nodes

    campaign = _campaign(store.pk)
    services.events_append(
        source=Source.server("test"),
        store_id=store.pk,
        events=[new_event("cart.item_added", f"old-{n}", ADD, at=T) for n in range(300)],
        now=T - timedelta(days=30),
    )
    params = {
        "store": store.pk,
        "idle_since": T,
        "since": T - timedelta(hours=1),
        "min_value": 0,
        "min_score": 0.0,
        "no_filter": True,
        "skus": [],
        "categories": [],
        "limit": 1000,
    }
    assert campaign.pk

    # when the scan's plan is asked for (sequential scans off: the table is small here)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE carts_cartstate")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + enrolment._CANDIDATES, params)
        raw = cursor.fetchone()[0]
    import json

    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]

    # then it reads the idle index, and from the mark on: none of the history's rows
    scans = [n for n in nodes(plan) if n.get("Relation Name") == "carts_cartstate"]
    assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [
        ("Index Scan", "cartstate_idle")
    ]
    assert sum(int(n.get("Rows Removed by Filter", 0)) for n in scans) == 0


ADD = {"sku": "A", "name": "A", "quantity": 1, "unit_price": 100, "currency": "EUR"}


def test_a_campaign_that_cannot_be_enrolled_does_not_stop_the_others(db, caplog):
    first = services.store_create(name="Broken campaign").store_id
    second = services.store_create(name="Fine campaign").store_id
    broken = _campaign(first)
    _campaign(second)
    # A duration past what any time computation can hold (saved around the form's bound, as an
    # older version or a script could have).
    type(broken).objects.filter(pk=broken.pk).update(inactivity_minutes=2**31 - 1)
    cart_abandoned(first, at=T, token="stuck")
    cart_abandoned(second, at=T, token="fine")

    assert enrolment.abandoned_carts_enroll(now=T + 40 * MINUTE) == 1

    assert list(Enrollment.objects.values_list("cart", flat=True)) == ["fine"]
    assert f"enrolling campaign {broken.pk} failed" in caplog.text
