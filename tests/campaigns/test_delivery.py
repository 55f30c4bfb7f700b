"""Concurrent delivery (campaigns/delivery.py) against a real SMTP server on loopback that answers
like a slow relay, and rendering apart from sending (campaigns/senders.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.db import connection, connections, transaction

from campaigns import delivery, emails, senders
from campaigns.delivery import Delivered, Outcome, Outgoing
from campaigns.models import CampaignSettings, Step
from carts import services
from carts.models import Store
from tests.campaigns.conftest import T0
from tests.smtp_sink import SmtpSink


def _outgoing(n: int, *, store_id: int = 1, to: str | None = None) -> Outgoing:
    message = EmailMessage(
        subject=f"message {n}",
        body="hello",
        from_email=f"shop-{store_id}@shop.example",
        to=[to or f"r{n}@example.com"],
        headers={"Message-ID": f"<m{n}.{store_id}@test>"},
    )
    return Outgoing(key=n, store_id=store_id, message=message)


@pytest.fixture
def relay(smtp_sink: SmtpSink) -> SmtpSink:
    """The campaigns' SMTP sink (tests/campaigns/conftest.py), answering each message after
    150 ms as a relay does."""
    smtp_sink.delay = 0.15
    return smtp_sink


def test_forty_messages_through_a_slow_relay_go_out_concurrently_and_each_once(relay):
    items = [_outgoing(n) for n in range(40)]

    started = time.monotonic()
    results = delivery.deliver(items, concurrency=16, per_store=16)
    took = time.monotonic() - started

    serial = 40 * relay.delay  # one connection, one message after another: at least this
    assert took < 0.4 * serial, f"{took:.2f}s for 40 messages, serial would be {serial:.1f}s"
    assert [r.outcome for r in results] == [Outcome.SENT] * 40
    assert [r.item.key for r in results] == list(range(40))  # in the order given
    received = relay.wait_for(40)
    assert sorted(r.message["Message-ID"] for r in received) == sorted(
        f"<m{n}.1@test>" for n in range(40)
    )
    assert 2 <= relay.max_in_flight <= 16
    assert relay.max_connections <= 16


def test_at_most_concurrency_messages_are_in_flight(relay):
    relay.delay = 0.05
    delivery.deliver([_outgoing(n) for n in range(12)], concurrency=4, per_store=10)

    assert len(relay.wait_for(12)) == 12
    assert relay.max_in_flight == 4
    assert relay.max_connections <= 4


def test_one_store_gets_at_most_its_share_of_the_connections(relay):
    relay.delay = 0.1
    # The first store has most of the messages, and comes first.
    items = [_outgoing(n, store_id=1) for n in range(20)]
    items += [_outgoing(100 + n, store_id=2) for n in range(6)]
    items += [_outgoing(200 + n, store_id=3) for n in range(6)]

    results = delivery.deliver(items, concurrency=12, per_store=3)

    assert all(r.outcome is Outcome.SENT for r in results)
    assert len(relay.wait_for(32)) == 32
    assert relay.max_in_flight_by_sender == {
        "shop-1@shop.example": 3,
        "shop-2@shop.example": 3,
        "shop-3@shop.example": 3,
    }
    # The other stores were not kept waiting behind the first one's queue.
    assert relay.max_in_flight == 9


def test_a_refused_recipient_is_reported_permanent_and_the_others_are_sent(relay):
    relay.delay = 0.02
    relay.refuse = {"gone@example.com"}
    items = [_outgoing(n) for n in range(5)]
    items[2] = _outgoing(2, to="gone@example.com")

    results = delivery.deliver(items, concurrency=2, per_store=2)

    refused = results[2]
    assert refused.outcome is Outcome.REFUSED
    assert refused.permanent is True
    assert "550" in refused.error and "gone@example.com" in refused.error
    assert [r.outcome for i, r in enumerate(results) if i != 2] == [Outcome.SENT] * 4
    received = relay.wait_for(4)
    assert sorted(r.rcpt_tos[0] for r in received) == [f"r{n}@example.com" for n in (0, 1, 3, 4)]


def test_a_relay_that_cannot_be_reached_is_a_transient_refusal(settings):
    with SmtpSink() as sink:
        port = sink.port
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2

    results = delivery.deliver([_outgoing(n) for n in range(3)], concurrency=2, per_store=2)

    assert [(r.outcome, r.permanent) for r in results] == [(Outcome.REFUSED, False)] * 3
    assert all("ConnectionRefusedError" in r.error for r in results)


def test_the_check_runs_once_per_message_right_before_it_leaves(relay):
    relay.delay = 0.05
    items = [_outgoing(n) for n in range(10)]
    checked: list[tuple[int, int]] = []
    asked: list[int] = []

    def check(batch: Sequence[Outgoing]) -> list[bool]:
        asked.append(len(batch))
        for item in batch:
            # Nothing of this message has reached the relay yet.
            mid = item.message.extra_headers["Message-ID"]
            assert all(r.message["Message-ID"] != mid for r in relay.received)
            checked.append((item.key, threading.get_ident()))
        return [item.key % 3 != 0 for item in batch]  # 0, 3, 6, 9: the order won

    results = delivery.deliver(items, check=check, concurrency=4, per_store=4)

    assert sorted(key for key, _ in checked) == list(range(10))
    assert {thread for _, thread in checked} == {threading.get_ident()}  # the caller's thread
    # The first round trip asks about as many messages as there are free connections.
    assert asked[0] == 4 and max(asked) <= 4
    assert [r.outcome for r in results] == [
        Outcome.NOT_SENT if n % 3 == 0 else Outcome.SENT for n in range(10)
    ]
    received = relay.wait_for(6)
    time.sleep(0.1)
    assert sorted(r.rcpt_tos[0] for r in relay.received) == sorted(
        f"r{n}@example.com" for n in range(10) if n % 3
    )
    assert len(received) == 6


def test_a_check_that_fails_sends_nothing_it_was_asked_about(relay):
    def check(batch: Sequence[Outgoing]) -> list[bool]:
        if any(item.key == 1 for item in batch):
            raise RuntimeError("database gone")
        return [True] * len(batch)

    results = delivery.deliver(
        [_outgoing(n) for n in range(3)], check=check, concurrency=1, per_store=1
    )

    assert results[1] == Delivered(
        results[1].item, Outcome.NOT_SENT, error="RuntimeError: database gone"
    )
    assert sorted(r.rcpt_tos[0] for r in relay.wait_for(2)) == ["r0@example.com", "r2@example.com"]


def test_a_check_that_answers_for_too_few_messages_sends_none_of_them(relay):
    results = delivery.deliver(
        [_outgoing(n) for n in range(3)], check=lambda batch: [True], concurrency=3, per_store=3
    )

    assert [r.outcome for r in results] == [Outcome.NOT_SENT] * 3
    assert "answered 1 of 3" in results[0].error
    time.sleep(0.1)
    assert relay.received == []


def test_messages_are_prepared_while_the_first_ones_are_sent(relay):
    relay.delay = 0.1
    pulled_after_first_answer: list[int] = []

    def prepared():
        for n in range(12):
            if relay.received:  # the relay already has one
                pulled_after_first_answer.append(n)
            time.sleep(0.02)  # rendering
            yield _outgoing(n)

    results = delivery.deliver(prepared(), concurrency=4, per_store=4)

    assert [r.item.key for r in results] == list(range(12))
    assert all(r.outcome is Outcome.SENT for r in results)
    # The first message left before the last ones were prepared (not all rendered first).
    assert pulled_after_first_answer


def test_a_source_that_raises_still_returns_nothing_before_what_left_is_done(relay):
    relay.delay = 0.1

    def prepared():
        yield _outgoing(1)
        raise RuntimeError("a bug in preparing")

    with pytest.raises(RuntimeError, match="a bug in preparing"):
        delivery.deliver(prepared(), concurrency=4, per_store=4)
    # What had left had its answer before deliver raised: nothing still in flight.
    assert relay.in_flight == 0
    assert len(relay.received) == 1


def test_a_sending_rate_bounds_the_messages_a_second(relay, settings):
    settings.CAMPAIGNS_SEND_RATE = 20  # a provider's quota: 20 a second

    started = time.monotonic()
    results = delivery.deliver([_outgoing(n) for n in range(30)], concurrency=16, per_store=16)
    took = time.monotonic() - started

    assert all(r.outcome is Outcome.SENT for r in results)
    arrived = sorted(r.arrived_at for r in relay.wait_for(30))
    # A tenth of a second's worth at once (2), then one every 50 ms: 1.4 s for 30.
    assert took >= 1.3
    in_any_second = max(sum(1 for t in arrived if start <= t < start + 1.0) for start in arrived)
    assert in_any_second <= 22


def test_results_are_reported_as_they_come_each_once(relay):
    relay.delay = 0.05
    reports: list[tuple[list[int], int]] = []

    def done(batch: list[Delivered]) -> None:
        reports.append(([r.item.key for r in batch], threading.get_ident()))

    results = delivery.deliver(
        [_outgoing(n) for n in range(12)], done=done, done_every=3, concurrency=2, per_store=2
    )

    reported = [key for keys, _ in reports for key in keys]
    assert sorted(reported) == list(range(12))  # each exactly once
    assert len(reports) >= 3  # as they came, not all at the end
    assert all(len(keys) >= 3 for keys, _ in reports[:-1])
    assert {thread for _, thread in reports} == {threading.get_ident()}  # the caller's thread
    assert [r.outcome for r in results] == [Outcome.SENT] * 12


def test_results_are_reported_within_done_within_of_their_answer_when_few_come(relay):
    """A slow relay answers far fewer than done_every in a while: each result still reaches
    ``done`` about done_within after the relay answered it (the step runner records it then, so a
    killed worker does not send it again), not at the batch's end."""
    relay.delay = 0.1
    reported_at: dict[str, float] = {}

    def done(batch: list[Delivered]) -> None:
        now = time.monotonic()
        for r in batch:
            reported_at[r.item.message.extra_headers["Message-ID"]] = now

    results = delivery.deliver(
        [_outgoing(n) for n in range(6)],
        done=done,
        done_every=32,
        done_within=0.1,
        concurrency=1,
        per_store=1,
    )

    assert [r.outcome for r in results] == [Outcome.SENT] * 6
    answered = {r.message["Message-ID"]: r.answered_at for r in relay.wait_for(6)}
    assert sorted(reported_at) == sorted(answered)  # each once
    lags = {key: reported_at[key] - answered[key] for key in answered}
    # done_within and the calling thread's wake-up; without it the first waits ~0.5 s (the batch).
    assert all(0 <= lag < 0.1 + 0.12 for lag in lags.values()), lags
    # The first ones before the last left: reported while the batch was still sending.
    assert reported_at["<m0.1@test>"] < answered["<m4.1@test>"], lags


# Connections kept across batches ------------------------------------------------------------------


def test_connections_are_kept_for_the_next_batches(relay):
    relay.delay = 0.02
    opened = relay.connections_opened  # aiosmtpd's own probe when it started
    for batch in range(3):
        results = delivery.deliver(
            [_outgoing(10 * batch + n) for n in range(4)], concurrency=4, per_store=4
        )
        assert all(r.outcome is Outcome.SENT for r in results)

    assert len(relay.wait_for(12)) == 12
    # One connection (and its set-up, a TLS handshake at a provider) per sender, not per batch.
    assert relay.connections_opened - opened == 4


def test_a_connection_idle_too_long_is_opened_again(relay, settings):
    settings.CAMPAIGNS_SEND_IDLE_SECONDS = 0.05
    opened = relay.connections_opened
    delivery.deliver([_outgoing(1)], concurrency=1, per_store=1)
    time.sleep(0.1)  # a server may have dropped it meanwhile

    [result] = delivery.deliver([_outgoing(2)], concurrency=1, per_store=1)

    assert result.outcome is Outcome.SENT
    assert len(relay.wait_for(2)) == 2
    assert relay.connections_opened - opened == 2


def test_a_kept_connection_the_server_dropped_is_replaced_and_the_message_sent(relay):
    opened = relay.connections_opened
    [first] = delivery.deliver([_outgoing(1)], concurrency=1, per_store=1)
    relay.drop_connections()  # as a server closes idle connections
    time.sleep(0.05)

    [second] = delivery.deliver([_outgoing(2)], concurrency=1, per_store=1)

    assert (first.outcome, second.outcome) == (Outcome.SENT, Outcome.SENT)
    assert sorted(r.rcpt_tos[0] for r in relay.wait_for(2)) == ["r1@example.com", "r2@example.com"]
    assert relay.connections_opened - opened == 2


# No transaction while talking to the network ------------------------------------------------------

_CALLER: dict[str, Any] = {}
_SEEN: list[bool] = []


class _CallerWatchingBackend(LocmemBackend):
    """locmem, noting whether the thread that called deliver() is inside a transaction."""

    def send_messages(self, messages: Any) -> int:
        time.sleep(0.02)
        _SEEN.append(_CALLER["connection"].in_atomic_block)
        return super().send_messages(messages)


def test_no_transaction_is_open_while_messages_are_sent(committed_db, settings):
    settings.EMAIL_BACKEND = f"{__name__}._CallerWatchingBackend"
    _CALLER["connection"] = connections["default"]
    _SEEN.clear()
    mail.outbox = []
    store_id = services.store_create(name="Delivery shop").store_id

    def check(batch: Sequence[Outgoing]) -> list[bool]:  # a plain read, as the step runner's
        return [Store.objects.filter(pk=item.store_id).exists() for item in batch]

    results = delivery.deliver([_outgoing(n, store_id=store_id) for n in range(8)], check=check)

    assert [r.outcome for r in results] == [Outcome.SENT] * 8
    assert _SEEN == [False] * 8
    assert len(mail.outbox) == 8


def test_deliver_refuses_to_run_inside_a_transaction(committed_db):
    mail.outbox = []
    with transaction.atomic(), pytest.raises(delivery.InTransaction):
        delivery.deliver([_outgoing(1)])
    assert mail.outbox == []


def test_a_test_case_transaction_is_not_the_callers(db):
    # pytest-django wraps a ``db`` test in a transaction of its own: not one deliver refuses.
    assert connection.in_atomic_block
    assert [r.outcome for r in delivery.deliver([_outgoing(1)])] == [Outcome.SENT]


# Rendering apart from sending; any Django backend ----------------------------------------------


def test_a_step_is_rendered_without_sending_then_delivered(db, store, shop_cart, campaign_step):
    mail.outbox = []
    cart = shop_cart(store.pk, "cart-d1")
    step = campaign_step(cart)
    cfg = CampaignSettings.objects.create(store=store, email_from="shop@shop.example")

    prepared = senders.step_render(store=store, settings=cfg, step=step, cart=cart, now=T0)

    assert mail.outbox == []
    assert prepared.message is not None and prepared.skipped is None
    assert prepared.message_id == emails.message_id(step_id=step.pk, store_id=store.pk)
    [result] = delivery.deliver([prepared.outgoing(step)])
    assert (result.outcome, result.item.key, result.item.store_id) == (
        Outcome.SENT,
        step.pk,
        store.pk,
    )
    [message] = mail.outbox
    assert message.to == ["jane.doe@example.com"]
    assert message.extra_headers["Message-ID"] == prepared.message_id


def test_a_provider_backend_gets_the_steps_link_as_metadata(
    db, settings, store, shop_cart, campaign_step
):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    mail.outbox = []
    cart = shop_cart(store.pk, "cart-d3")
    step: Step = campaign_step(cart)
    cfg = CampaignSettings.objects.create(store=store)
    prepared = senders.step_render(store=store, settings=cfg, step=step, cart=cart, now=T0)

    [result] = delivery.deliver([prepared.outgoing(step)])

    assert result.outcome is Outcome.SENT
    assert result.provider_id == "0"  # anymail's id of the message (its test backend's)
    [message] = mail.outbox
    params: dict[str, Any] = message.anymail_test_params  # type: ignore[union-attr]
    assert params["metadata"] == {"campaign_link": str(step.link_id)}


def test_one_store_starts_no_more_senders_than_its_share(relay):
    # 20 messages of one store, room for 16 in flight, 3 of them the store's: 3 sending threads
    # (each a connection), not 16 started to wait for a turn.
    opened = relay.connections_opened
    results = delivery.deliver([_outgoing(n) for n in range(20)], concurrency=16, per_store=3)

    assert all(r.outcome is Outcome.SENT for r in results)
    assert len(relay.wait_for(20)) == 20
    assert relay.connections_opened - opened == 3
    assert delivery._current is not None and len(delivery._current.senders) == 3
