"""Step execution with leases (docs/campaigns.md, "Leases"): what happens when an order, another
worker or the lease's end comes while a batch is sending.

The batch sends through ``HookedBackend``, Django's locmem backend that first runs what a test
put in ``DURING_SEND`` for the message's recipient, on the sending thread and its own database
connection: an order committing, or another worker taking the step over, while the message is
in flight. One message at a time (CAMPAIGNS_SEND_CONCURRENCY = 1), so the order of events is
the test's."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.core.mail.backends import locmem
from django.db import connection

from campaigns import attribution, enrolment, steps
from campaigns.models import Step, Suppression
from carts.models import CartEvent
from dashboards import projection
from dashboards.models import CartFact
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned, order_placed

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
RUN_AT = T + timedelta(minutes=31)

DURING_SEND: dict[str, Callable[[], None]] = {}


class HookedBackend(locmem.EmailBackend):
    def send_messages(self, messages):  # type: ignore[no-untyped-def]
        for message in messages:
            hook = DURING_SEND.pop(message.to[0], None)
            if hook is not None:
                try:
                    hook()
                finally:
                    connection.close()  # this thread's own connection
        return super().send_messages(messages)


@pytest.fixture
def hooked(settings):
    settings.EMAIL_BACKEND = f"{__name__}.HookedBackend"
    settings.CAMPAIGNS_SEND_CONCURRENCY = 1
    DURING_SEND.clear()
    mail.outbox = []
    yield DURING_SEND
    DURING_SEND.clear()


def _enrolled(store_id: int, *emails: str) -> dict[str, Step]:
    campaign_with_tiers(
        store_id,
        activated_at=T - timedelta(days=1),
        tiers=[{"channel": "email", "subject_template": "Come back"}],
    )
    for n, email in enumerate(emails):
        cart_abandoned(store_id, at=T, token=f"cart-{n}", email=email)
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30)) == len(emails)
    Step.objects.filter(store_id=store_id).update(status="enqueued", enqueued_at=RUN_AT)
    return {
        email: Step.objects.get(store_id=store_id, cart=f"cart-{n}")
        for n, email in enumerate(emails)
    }


def _events(store_id: int, cart: str) -> list[tuple[str, dict]]:
    return [
        (e.type, e.data)
        for e in CartEvent.objects.filter(store_id=store_id, cart=cart).order_by("version")
    ]


def test_a_message_in_flight_when_the_order_commits_is_recorded_so_and_never_credited(
    committed_store, hooked
):
    store, _ = committed_store
    step = _enrolled(store.pk, "ana@example.com")["ana@example.com"]
    order_at = RUN_AT + timedelta(seconds=30)  # the shop's clock: after the batch's own time
    hooked["ana@example.com"] = lambda: order_placed(store.pk, step.cart, at=order_at)

    assert steps.steps_execute(step_ids=[step.pk], now=lambda: RUN_AT) == {"sent": 1}

    # The message left (the order was not committed at the last check)...
    assert [m.to for m in mail.outbox] == [["ana@example.com"]]
    step.refresh_from_db()
    assert (step.status, step.reason, step.leased_until) == ("sent", "in_flight_at_order", None)
    kinds = [(k, d.get("reason")) for k, d in _events(store.pk, step.cart)]
    # ...and is recorded after the order, as in flight: the order did not cancel a step that was
    # sending.
    assert kinds[-2:] == [("order.placed", None), ("campaign.step_sent", "in_flight_at_order")]
    assert ("campaign.step_cancelled", "converted") not in kinds
    # Its time (the batch's) is before the order's, yet nothing credits it with the order.
    summary = attribution.attribution_summary(store_id=store.pk, start=T, end=T + timedelta(days=1))
    assert (summary.recovered_carts, summary.touches, summary.treated.conversions) == (0, 0, 1)
    projection.apply(list(CartEvent.objects.filter(store_id=store.pk).order_by("position")))
    fact = CartFact.objects.get(store_id=store.pk, cart=step.cart)
    assert fact.converted_at is not None
    assert fact.recovered is False


def test_an_order_committed_before_the_last_check_cancels_the_step_unsent(committed_store, hooked):
    store, _ = committed_store
    batch = _enrolled(store.pk, "first@example.com", "second@example.com")
    second = batch["second@example.com"]
    # While the first message is being sent, the second cart's order commits: the batch decided
    # to send both before it, and must not send the second.
    hooked["first@example.com"] = lambda: order_placed(
        store.pk, second.cart, at=RUN_AT + timedelta(seconds=1)
    )

    result = steps.steps_execute(step_ids=[s.pk for s in batch.values()], now=lambda: RUN_AT)

    assert result == {"sent": 1, "cancelled": 1}
    assert [m.to for m in mail.outbox] == [["first@example.com"]]
    second.refresh_from_db()
    assert (second.status, second.reason) == ("cancelled", "converted")
    assert "campaign.step_sent" not in [k for k, _ in _events(store.pk, second.cart)]


def test_a_step_taken_over_after_its_lease_is_recorded_by_the_new_worker_only(
    committed_store, hooked, settings
):
    store, _ = committed_store
    step = _enrolled(store.pk, "ana@example.com")["ana@example.com"]
    handed: list[list[int]] = []

    def taken_over() -> None:
        # The first worker stalls past its lease (as if dead); the scheduler hands the step out.
        Step.objects.filter(pk=step.pk).update(leased_until=T)
        assert steps.due_steps_enqueue(now=RUN_AT, publish=handed.append) == 1

    hooked["ana@example.com"] = taken_over
    first = steps.steps_execute(step_ids=[step.pk], now=lambda: RUN_AT)
    # The first worker's message left, but its record is refused: the lease is not its own.
    assert first == {"lease_lost": 1}
    step.refresh_from_db()
    assert (step.status, step.message_id) == ("enqueued", "")
    old_owner = step.lease_owner

    assert steps.steps_execute(step_ids=handed[0], now=lambda: RUN_AT) == {"sent": 1}
    step.refresh_from_db()
    assert step.status == "sent"
    assert step.lease_owner != old_owner
    # Sent twice, with the same Message-ID (a provider can deduplicate), recorded once.
    assert len(mail.outbox) == 2
    assert len({m.extra_headers["Message-ID"] for m in mail.outbox}) == 1
    assert step.message_id == mail.outbox[0].extra_headers["Message-ID"]
    sent = [k for k, _ in _events(store.pk, step.cart) if k == "campaign.step_sent"]
    assert sent == ["campaign.step_sent"]


def test_a_step_under_a_live_lease_is_left_alone_and_an_expired_one_is_handed_out_again(
    committed_store, hooked
):
    store, _ = committed_store
    step = _enrolled(store.pk, "ana@example.com")["ana@example.com"]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE campaigns_step SET status = 'sending', lease_owner = 'other:1:x',"
            " leased_until = clock_timestamp() + interval '1 minute' WHERE id = %s",
            [step.pk],
        )
    handed: list[list[int]] = []
    assert steps.steps_execute(step_ids=[step.pk], now=lambda: RUN_AT) == {}
    assert steps.due_steps_enqueue(now=RUN_AT, publish=handed.append) == 0
    assert mail.outbox == []

    Step.objects.filter(pk=step.pk).update(leased_until=T)  # the other worker died
    # A duplicate delivery of the batch may claim it at once too.
    assert steps.steps_execute(step_ids=[step.pk], now=lambda: RUN_AT) == {"sent": 1}
    assert len(mail.outbox) == 1


def test_steps_a_batch_cannot_start_within_its_lease_go_back_to_pending(
    committed_store, hooked, settings
):
    store, _ = committed_store
    # A 2 s lease keeps 1 s unused (half of it: EMAIL_TIMEOUT is longer): the first message takes
    # 1.2 s, so the second would start too late.
    settings.CAMPAIGNS_LEASE_SECONDS = 2
    settings.EMAIL_TIMEOUT = 10
    batch = _enrolled(store.pk, "first@example.com", "second@example.com")
    hooked["first@example.com"] = lambda: time.sleep(1.2)

    result = steps.steps_execute(step_ids=[s.pk for s in batch.values()], now=lambda: RUN_AT)

    assert result == {"sent": 1, "released": 1}
    assert [m.to for m in mail.outbox] == [["first@example.com"]]
    second = Step.objects.get(pk=batch["second@example.com"].pk)
    assert (second.status, second.leased_until, second.attempts) == ("pending", None, 0)
    handed: list[list[int]] = []
    assert steps.due_steps_enqueue(now=RUN_AT, publish=handed.append) == 1  # due at once
    assert steps.steps_execute(step_ids=handed[0], now=lambda: RUN_AT) == {"sent": 1}
    assert sorted(m.to[0] for m in mail.outbox) == ["first@example.com", "second@example.com"]


@pytest.mark.parametrize("kind", ["unsubscribed", "bounced"])
def test_a_suppression_committed_before_the_last_check_stops_the_message(
    committed_store, hooked, kind
):
    store, _ = committed_store
    batch = _enrolled(store.pk, "first@example.com", "second@example.com")
    second = batch["second@example.com"]
    # While the first message is being sent, the second shopper unsubscribes (or their address
    # bounces): the batch decided to send both before it, and must not send the second.
    hooked["first@example.com"] = lambda: Suppression.objects.create(
        store_id=store.pk, shopper=second.shopper, kind=kind, created_at=RUN_AT
    )

    result = steps.steps_execute(step_ids=[s.pk for s in batch.values()], now=lambda: RUN_AT)

    assert result == {"sent": 1, "skipped": 1}
    assert [m.to for m in mail.outbox] == [["first@example.com"]]
    second.refresh_from_db()
    assert (second.status, second.reason) == ("skipped", kind)


def test_outcomes_are_recorded_while_the_batch_is_still_sending(
    committed_store, hooked, monkeypatch
):
    # A worker killed mid-batch must not leave everything it sent unrecorded (to be sent again
    # after the lease): outcomes are recorded as they come (here one at a time).
    monkeypatch.setattr(steps, "_RECORD_EVERY", 1)
    store, _ = committed_store
    batch = _enrolled(store.pk, "a@example.com", "b@example.com", "c@example.com")
    seen: dict[str, str] = {}

    def look() -> None:  # while the third message is being sent
        first = Step.objects.get(pk=batch["a@example.com"].pk)
        seen["first"] = first.status

    hooked["c@example.com"] = look

    result = steps.steps_execute(step_ids=[s.pk for s in batch.values()], now=lambda: RUN_AT)

    assert result == {"sent": 3}
    assert seen == {"first": "sent"}  # recorded (committed) before the batch ended
    assert len(mail.outbox) == 3
