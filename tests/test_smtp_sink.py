"""The test SMTP sink's relay options: a reply delay, a stall, and its in-flight counters."""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

import pytest

from tests.smtp_sink import SmtpSink


def _message(sender: str, n: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = f"r{n}@example.com"
    message["Subject"] = f"message {n}"
    message["Message-ID"] = f"<m{n}@example.com>"
    message.set_content("hello")
    return message


def _send(sink: SmtpSink, sender: str, n: int, timeout: float = 10.0) -> float:
    """Send one message on its own connection; the seconds it took."""
    started = time.monotonic()
    with smtplib.SMTP(sink.host, sink.port, timeout=timeout) as client:
        client.send_message(_message(sender, n))
    return time.monotonic() - started


def test_a_plain_sink_answers_at_once() -> None:
    with SmtpSink() as sink:
        took = _send(sink, "a@shop.example", 1)
        [received] = sink.wait_for(1)
    assert took < 0.1
    assert received.answered_at - received.arrived_at < 0.05
    assert sink.max_in_flight == 1 and sink.in_flight == 0


def test_delay_is_applied_before_answering_each_data() -> None:
    with SmtpSink(delay=0.2) as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
            started = time.monotonic()
            client.send_message(_message("a@shop.example", 1))
            client.send_message(_message("a@shop.example", 2))
            took = time.monotonic() - started
        received = sink.wait_for(2)
    assert took >= 0.4
    for r in received:
        assert r.answered_at - r.arrived_at >= 0.2
    # One connection, one message at a time.
    assert sink.max_in_flight == 1 and sink.max_connections == 1


def test_delay_can_change_while_running() -> None:
    with SmtpSink(delay=0.3) as sink:
        sink.delay = 0.0
        assert _send(sink, "a@shop.example", 1) < 0.2


def test_counters_of_concurrent_messages_overall_and_per_sender() -> None:
    senders = ["a@shop.example"] * 6 + ["b@shop.example"] * 3
    with SmtpSink(delay=0.5) as sink:
        with ThreadPoolExecutor(max_workers=len(senders)) as pool:
            took = list(pool.map(lambda a: _send(sink, a[1], a[0]), enumerate(senders)))
        assert len(sink.wait_for(len(senders))) == len(senders)
        assert sink.in_flight == 0 and sink.connections == 0
        assert sink.max_in_flight == 9
        assert sink.max_connections == 9
        assert sink.max_in_flight_by_sender == {"a@shop.example": 6, "b@shop.example": 3}
        # All in parallel: about one delay each, not nine.
        assert max(took) < 2.0
        sink.reset_counters()
        assert sink.max_in_flight == 0 and sink.max_in_flight_by_sender == {}
        _send(sink, "c@shop.example", 99)
        assert sink.max_in_flight == 1
        assert sink.max_in_flight_by_sender == {"c@shop.example": 1}


def test_rset_and_an_aborted_connection_end_a_message_in_flight() -> None:
    with SmtpSink() as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
            client.ehlo()
            client.mail("a@shop.example")
            assert sink.in_flight == 1
            client.rset()
            assert sink.in_flight == 0
            client.mail("a@shop.example")
            assert sink.in_flight == 1
        deadline = time.monotonic() + 5
        while sink.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.in_flight == 0 and sink.max_in_flight == 1


def test_a_stalled_sink_never_answers_data_and_the_client_times_out() -> None:
    with SmtpSink(stall=True) as sink:
        started = time.monotonic()
        with pytest.raises((socket.timeout, smtplib.SMTPServerDisconnected)):
            _send(sink, "a@shop.example", 1, timeout=0.5)
        assert 0.4 < time.monotonic() - started < 3
        assert sink.received == []
        deadline = time.monotonic() + 5
        while sink.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.in_flight == 0  # the client gave up: nothing in flight any more


def test_stopping_a_stalled_sink_closes_its_connections() -> None:
    sink = SmtpSink(stall=True)
    sink.start()
    outcome: list[BaseException | None] = []

    def send() -> None:
        try:
            _send(sink, "a@shop.example", 1, timeout=30)
            outcome.append(None)
        except BaseException as error:  # what the client saw
            outcome.append(error)

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 5
    while sink.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.in_flight == 1
    time.sleep(0.3)
    assert thread.is_alive()  # still waiting for the answer to DATA
    started = time.monotonic()
    sink.stop()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 5
    [error] = outcome
    assert isinstance(error, smtplib.SMTPException | OSError)
    assert sink.received == []


def test_release_ends_a_stall_and_the_stalled_messages_are_accepted() -> None:
    with SmtpSink(stall=True) as sink:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(_send, sink, "a@shop.example", n) for n in (1, 2)]
            deadline = time.monotonic() + 5
            while sink.in_flight < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)
            assert sink.received == [] and not any(f.done() for f in futures)
            sink.release()
            for future in futures:
                future.result(timeout=5)
        assert len(sink.received) == 2
        assert _send(sink, "a@shop.example", 3) < 0.5  # no stall any more
