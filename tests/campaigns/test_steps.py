"""Enrolment, enqueueing and execution of campaign steps, on the real database."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from campaigns import enrolment, steps
from campaigns.models import Enrollment, Step, Suppression
from carts.models import CartEvent
from carts.sources import Source
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned, order_placed
from tests.conftest import new_event

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ACTIVATED = T - timedelta(days=1)


def _events(store_id: int, cart: str, prefix: str = "campaign.") -> list[tuple[str, dict]]:
    return [
        (e.type, e.data)
        for e in CartEvent.objects.filter(
            store_id=store_id, cart=cart, type__startswith=prefix
        ).order_by("version")
    ]


def _run_due(store_id: int, now: datetime, django_capture_on_commit_callbacks) -> dict[str, int]:
    published: list[list[int]] = []
    with django_capture_on_commit_callbacks(execute=True):
        steps.due_steps_enqueue(now=now, publish=published.append)
    ids = [i for batch in published for i in batch]
    return steps.steps_execute(step_ids=ids, now=lambda: now)


def test_an_idle_cart_is_enrolled_once_with_a_step_per_tier_due_after_its_delay(store):
    campaign = campaign_with_tiers(
        store.pk,
        activated_at=ACTIVATED,
        tiers=[{"channel": "onsite"}, {"channel": "email", "delay_minutes": 60}],
    )
    idle = cart_abandoned(store.pk, at=T)
    busy = cart_abandoned(store.pk, at=T + timedelta(minutes=10))

    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=31)) == 1
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=31)) == 0

    enrollment = Enrollment.objects.get(store=store)
    assert (enrollment.cart, enrollment.campaign_id, enrollment.holdout) == (
        idle.token,
        campaign.pk,
        False,
    )
    assert enrollment.abandoned_at == T + timedelta(minutes=30)
    assert sorted(
        (s.tier.position, s.channel, s.status, s.due_at) for s in Step.objects.filter(store=store)
    ) == [
        (1, "onsite", "pending", T + timedelta(minutes=31)),  # due at 30 min, enrolled at 31
        (2, "email", "pending", T + timedelta(minutes=90)),
    ]
    [(kind, data)] = _events(store.pk, idle.token)
    assert kind == "campaign.enrolled"
    assert [s["channel"] for s in data["steps"]] == ["onsite", "email"]
    assert not Enrollment.objects.filter(cart=busy.token).exists()


@pytest.mark.parametrize(
    ("fields", "cart", "enrolled"),
    [
        ({"min_cart_value": 5000}, {"value": 4500}, False),
        ({"min_cart_value": 4500}, {"value": 4500}, True),
        ({"only_skus": ["SKU-9"]}, {"sku": "SKU-1"}, False),
        ({"only_skus": ["SKU-9"]}, {"sku": "SKU-9"}, True),
        ({"only_categories": ["bags"]}, {"category": "shoes"}, False),
        ({"only_categories": ["bags", "shoes"]}, {"category": "shoes"}, True),
        ({"min_score": 1.0}, {}, False),
    ],
)
def test_the_abandonment_definition_filters_carts(store, fields, cart, enrolled):
    campaign_with_tiers(store.pk, activated_at=ACTIVATED, **fields)
    cart_abandoned(store.pk, at=T, **cart)
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(hours=1)) == int(enrolled)


def test_carts_abandoned_before_the_campaign_started_and_converted_carts_are_left_alone(store):
    campaign_with_tiers(store.pk, activated_at=T + timedelta(hours=1))
    cart_abandoned(store.pk, at=T)  # abandoned at 12:30, before the 13:00 activation
    converted = cart_abandoned(store.pk, at=T + timedelta(hours=1))
    order_placed(store.pk, converted.token, at=T + timedelta(hours=1, minutes=1))
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(hours=5)) == 0


def test_the_highest_priority_campaign_takes_the_cart(store):
    campaign_with_tiers(store.pk, activated_at=ACTIVATED, name="low", priority=1)
    high = campaign_with_tiers(store.pk, activated_at=ACTIVATED, name="high", priority=5)
    campaign_with_tiers(store.pk, activated_at=ACTIVATED, name="paused", priority=9, active=False)
    cart_abandoned(store.pk, at=T)
    enrolment.abandoned_carts_enroll(now=T + timedelta(hours=1))
    assert Enrollment.objects.get(store=store).campaign_id == high.pk


def test_due_steps_are_handed_out_once_and_again_only_when_left_unfinished(
    store, settings, django_capture_on_commit_callbacks
):
    settings.CAMPAIGNS_REDELIVER_SECONDS = 300
    campaign_with_tiers(
        store.pk,
        activated_at=ACTIVATED,
        tiers=[{"channel": "onsite"}, {"channel": "email", "delay_minutes": 60}],
    )
    cart_abandoned(store.pk, at=T)
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    first = Step.objects.get(store=store, tier__position=1)

    published: list[list[int]] = []
    with django_capture_on_commit_callbacks(execute=True):
        assert steps.due_steps_enqueue(now=T + timedelta(minutes=31), publish=published.append) == 1
        assert steps.due_steps_enqueue(now=T + timedelta(minutes=32), publish=published.append) == 0
        # Five minutes later, still unfinished (its worker died): handed out again.
        assert steps.due_steps_enqueue(now=T + timedelta(minutes=37), publish=published.append) == 1
    assert published == [[first.pk], [first.pk]]
    first.refresh_from_db()
    assert (first.status, first.enqueued_at) == ("enqueued", T + timedelta(minutes=37))


def test_an_onsite_step_is_sent_once_however_often_it_is_delivered(
    store, django_capture_on_commit_callbacks
):
    campaign_with_tiers(store.pk, activated_at=ACTIVATED, tiers=[{"channel": "onsite"}])
    cart = cart_abandoned(store.pk, at=T)
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    now = T + timedelta(minutes=31)

    assert _run_due(store.pk, now, django_capture_on_commit_callbacks) == {"sent": 1}
    step = Step.objects.get(store=store)
    assert steps.steps_execute(step_ids=[step.pk], now=lambda: now) == {}  # a second delivery

    step.refresh_from_db()
    assert (step.status, step.reason, step.finished_at) == ("sent", "eligible", now)
    kinds = [k for k, _ in _events(store.pk, cart.token, "")]
    assert kinds.count("campaign.step_sent") == 1
    assert kinds.count("recovery.offer_decided") == 1  # the nudge, re-sent on reconnect


def test_an_order_cancels_the_carts_open_steps_in_its_own_transaction(store):
    campaign_with_tiers(
        store.pk,
        activated_at=ACTIVATED,
        tiers=[{"channel": "onsite"}, {"channel": "email", "delay_minutes": 60}],
    )
    cart = cart_abandoned(store.pk, at=T)
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))

    order_placed(store.pk, cart.token, at=T + timedelta(minutes=40))

    assert sorted(Step.objects.filter(store=store).values_list("status", "reason")) == [
        ("cancelled", "converted"),
        ("cancelled", "converted"),
    ]
    cancelled = [d for k, d in _events(store.pk, cart.token) if k == "campaign.step_cancelled"]
    assert len(cancelled) == 2


def test_a_step_that_finds_the_cart_converted_is_cancelled_not_sent(
    store, django_capture_on_commit_callbacks
):
    campaign_with_tiers(store.pk, activated_at=ACTIVATED, tiers=[{"channel": "onsite"}])
    cart = cart_abandoned(store.pk, at=T)
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    published: list[list[int]] = []
    with django_capture_on_commit_callbacks(execute=True):
        steps.due_steps_enqueue(now=T + timedelta(minutes=31), publish=published.append)
    order_placed(store.pk, cart.token, at=T + timedelta(minutes=31))
    # The order cancelled the step; a step the order did not see (enrolled by a scan that read the
    # cart just before the order) is left enqueued: the run must still not send it.
    Step.objects.filter(store=store).update(status="enqueued")

    result = steps.steps_execute(step_ids=published[0], now=lambda: T + timedelta(minutes=32))

    assert result == {"cancelled": 1}
    assert "campaign.step_sent" not in [k for k, _ in _events(store.pk, cart.token)]


def test_a_shopper_who_came_back_defers_the_step_to_the_new_abandonment(
    store, django_capture_on_commit_callbacks
):
    campaign_with_tiers(store.pk, activated_at=ACTIVATED, tiers=[{"channel": "onsite"}])
    cart = cart_abandoned(store.pk, at=T)
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    from carts import services

    services.events_append(
        source=Source.server("test"),
        store_id=store.pk,
        events=[
            new_event(
                "page.viewed",
                cart.token,
                {"url": "/", "page_type": "home"},
                at=T + timedelta(minutes=30, seconds=30),
            )
        ],
        now=T + timedelta(minutes=30, seconds=30),  # recorded as it happened
    )
    result = _run_due(store.pk, T + timedelta(minutes=31), django_capture_on_commit_callbacks)
    assert result == {"deferred": 1}
    step = Step.objects.get(store=store)
    assert (step.status, step.reason, step.due_at) == (
        "pending",
        "active_again",
        T + timedelta(minutes=60, seconds=30),
    )


def test_holdout_carts_are_suppressed_where_they_would_have_been_sent(
    store, django_capture_on_commit_callbacks
):
    campaign_with_tiers(
        store.pk, activated_at=ACTIVATED, tiers=[{"channel": "onsite"}], holdout_share="0.50"
    )
    carts = [cart_abandoned(store.pk, at=T, email=f"s{n}@example.com") for n in range(16)]
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    result = _run_due(store.pk, T + timedelta(minutes=31), django_capture_on_commit_callbacks)

    holdout = set(
        Enrollment.objects.filter(store=store, holdout=True).values_list("cart", flat=True)
    )
    assert 0 < len(holdout) < 16
    assert result == {"suppressed": len(holdout), "sent": 16 - len(holdout)}
    for cart in carts:
        kinds = [k for k, _ in _events(store.pk, cart.token, "")]
        if cart.token in holdout:
            assert "campaign.step_suppressed" in kinds
            assert "recovery.offer_decided" not in kinds  # nothing reached the shopper
        else:
            assert "campaign.step_sent" in kinds


def test_an_unsubscribed_shopper_gets_no_email_and_dont_remind_stops_everything(
    store, django_capture_on_commit_callbacks
):
    campaign_with_tiers(store.pk, activated_at=ACTIVATED, tiers=[{"channel": "email"}])
    unsubscribed = cart_abandoned(store.pk, at=T, email="u@example.com")
    declined = cart_abandoned(store.pk, at=T, email="d@example.com")
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    for cart, kind in ((unsubscribed, "unsubscribed"), (declined, "dont_remind")):
        Suppression.objects.create(
            store=store,
            shopper=Step.objects.get(cart=cart.token).shopper,
            kind=kind,
            created_at=T,
        )
    _run_due(store.pk, T + timedelta(minutes=31), django_capture_on_commit_callbacks)
    assert dict(Step.objects.filter(store=store).values_list("cart", "reason")) == {
        unsubscribed.token: "unsubscribed",
        declined.token: "dont_remind",
    }


def test_email_without_consent_is_skipped_under_the_consent_basis(
    store, django_capture_on_commit_callbacks
):
    campaign_with_tiers(store.pk, activated_at=ACTIVATED, tiers=[{"channel": "email"}])
    no = cart_abandoned(store.pk, at=T, consent=False)
    unknown = cart_abandoned(store.pk, at=T, consent=None, email="x@example.com")
    anonymous = cart_abandoned(store.pk, at=T, email=None)
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    _run_due(store.pk, T + timedelta(minutes=31), django_capture_on_commit_callbacks)
    assert dict(Step.objects.filter(store=store).values_list("cart", "reason")) == {
        no.token: "no_consent",
        unknown.token: "no_consent",
        anonymous.token: "no_email",
    }


def test_quiet_hours_defer_an_email_to_their_end_in_the_shoppers_zone(
    store, django_capture_on_commit_callbacks
):
    campaign_with_tiers(
        store.pk,
        activated_at=ACTIVATED,
        tiers=[{"channel": "email"}],
        quiet_start=time(21, 0),
        quiet_end=time(8, 0),
    )
    # 12:30 UTC is 23:30 in Auckland (UTC+13 in March): quiet until 08:00 there, 19:00 UTC.
    cart = cart_abandoned(store.pk, at=T, timezone="Pacific/Auckland")
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    result = _run_due(store.pk, T + timedelta(minutes=31), django_capture_on_commit_callbacks)
    assert result == {"deferred": 1}
    step = Step.objects.get(cart=cart.token)
    assert (step.status, step.reason, step.due_at) == (
        "pending",
        "quiet_hours",
        datetime(2026, 3, 10, 19, 0, tzinfo=UTC),
    )


def test_the_cart_cap_skips_further_messages(store, django_capture_on_commit_callbacks):
    campaign_with_tiers(
        store.pk,
        activated_at=ACTIVATED,
        tiers=[{"channel": "onsite"}, {"channel": "onsite", "delay_minutes": 5}],
        cart_cap=1,
    )
    cart = cart_abandoned(store.pk, at=T)
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    assert _run_due(store.pk, T + timedelta(minutes=40), django_capture_on_commit_callbacks) == {
        "sent": 1,
        "skipped": 1,
    }
    assert sorted(Step.objects.filter(cart=cart.token).values_list("status", "reason")) == [
        ("sent", "eligible"),
        ("skipped", "cart_cap"),
    ]


def test_enrolment_scans_only_since_its_high_water_mark_on_the_servers_clock(store):
    campaign = campaign_with_tiers(store.pk, activated_at=ACTIVATED)
    first = cart_abandoned(store.pk, at=T)
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=31)) == 1
    campaign.refresh_from_db()
    assert campaign.enrolled_through == T + timedelta(minutes=1)  # now - inactivity

    # Events that arrive late, dated hours before the mark by their own clock, are recorded
    # when they arrive: idle 30 minutes after that (server time), they are enrolled.
    late = cart_abandoned(store.pk, at=T - timedelta(hours=3), arrived=T + timedelta(minutes=32))
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=61)) == 0
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=62)) == 1
    campaign.refresh_from_db()
    assert campaign.enrolled_through == T + timedelta(minutes=32)

    # Only a record time behind the mark is out of the scan (an append whose transaction began
    # before a turn and committed after it): a few minutes behind (within the overlap) is still
    # enrolled; one from long before is not looked at again.
    within = cart_abandoned(store.pk, at=T, arrived=T + timedelta(minutes=29))
    behind = cart_abandoned(store.pk, at=T, arrived=T + timedelta(minutes=20))
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=63)) == 1
    assert set(Enrollment.objects.filter(store=store).values_list("cart", flat=True)) == {
        first.token,
        late.token,
        within.token,
    }
    assert not Enrollment.objects.filter(cart=behind.token).exists()


def test_a_refused_recipient_is_recorded_without_the_address(
    store, smtp_sink, django_capture_on_commit_callbacks
):
    campaign_with_tiers(store.pk, activated_at=ACTIVATED)
    cart = cart_abandoned(store.pk, at=T, email="gone@example.com")
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=31))
    smtp_sink.refuse = {"gone@example.com"}

    _run_due(store.pk, T + timedelta(minutes=31), django_capture_on_commit_callbacks)

    [failed] = [
        data for type_, data in _events(store.pk, cart.token) if type_ == "campaign.step_failed"
    ]
    assert "<address>" in failed["error"], failed
    assert "gone@example.com" not in str(failed)
