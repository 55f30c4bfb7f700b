"""A shopper erased while a campaign email waits for its turn gets no email (issue 13): the step
runs through the real due-step path against the SMTP sink and ends skipped, ``no_email``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from campaigns import enrolment, steps
from campaigns.models import Step
from carts import privacy
from carts.models import CartEvent
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _run_due(now: datetime, django_capture_on_commit_callbacks) -> dict[str, int]:
    published: list[list[int]] = []
    with django_capture_on_commit_callbacks(execute=True):
        steps.due_steps_enqueue(now=now, publish=published.append)
    return steps.steps_execute(step_ids=[i for b in published for i in b], now=lambda: now)


@pytest.mark.parametrize("erased", [True, False], ids=["erased", "not-erased"])
def test_an_email_step_due_after_the_shoppers_erasure_sends_nothing_and_is_skipped(
    store, smtp_sink, django_capture_on_commit_callbacks, erased
):
    tag = uuid.uuid4().hex[:10]
    ada, bob = f"ada.{tag}@example.com", f"bob.{tag}@example.com"
    campaign_with_tiers(
        store.pk,
        activated_at=T - timedelta(days=1),
        tiers=[{"channel": "email", "delay_minutes": 60}],
    )
    hers = cart_abandoned(store.pk, at=T, email=ada)
    his = cart_abandoned(store.pk, at=T, email=bob)  # not erased: the path does send
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=31)) == 2
    her_step = Step.objects.get(store=store, cart=hers.token)
    due = her_step.due_at
    assert due > T + timedelta(minutes=45)  # nothing due before the erasure
    assert _run_due(T + timedelta(minutes=31), django_capture_on_commit_callbacks) == {}

    if erased:
        erasure = privacy.shopper_erase(
            store_id=store.pk, shopper=privacy.Shopper(email=ada), now=T + timedelta(minutes=45)
        )
        assert erasure.carts == [hers.token] and erasure.keys == 1

    _run_due(due, django_capture_on_commit_callbacks)

    her_step.refresh_from_db()
    his_step = Step.objects.get(store=store, cart=his.token)
    received = smtp_sink.received
    recipients = [r.lower() for m in received for r in m.rcpt_tos]  # the envelope's
    assert his_step.status == Step.Status.SENT and bob in recipients
    skipped = [
        e.data
        for e in CartEvent.objects.filter(
            store=store, cart=hers.token, type="campaign.step_skipped"
        )
    ]
    if erased:
        # nothing went to her address, nor named it anywhere in a message
        assert recipients == [bob]
        assert [str(m.message["To"]).lower() for m in received] == [bob]
        assert not [m for m in received if ada.encode() in m.raw.lower()]
        assert (her_step.status, her_step.reason) == (Step.Status.SKIPPED, "no_email")
        assert [d["reason"] for d in skipped] == ["no_email"]
        assert skipped[0]["step"] == her_step.pk
    else:  # the same flow without the erasure: she gets the email
        assert sorted(recipients) == sorted([ada, bob])
        assert her_step.status == Step.Status.SENT and skipped == []
