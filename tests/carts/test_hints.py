"""Hints never hold the append up: ``publish`` hands them to a sender thread, which publishes the
latest of each channel; a Redis that is down costs a warning, not an error (carts/hints.py)."""

from __future__ import annotations

import logging
import time
import uuid

import redis

from carts import hints, redis_client


def _subscriber(channel: str):
    pubsub = redis_client.client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=1) is None  # the subscription is confirmed
    return pubsub


def test_a_burst_of_hints_wakes_a_reader_with_the_latest(settings):
    channel = f"test:hints:{uuid.uuid4().hex[:8]}"
    pubsub = _subscriber(channel)
    try:
        for n in range(1, 6):
            hints.publish(channel, f"7:{n}")
        assert hints.flush(5)
        received: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.2)
            if message is None and received:
                break
            if message is not None:
                received.append(message["data"].decode())
        assert received and received[-1] == "7:5"
        assert len(received) <= 5
    finally:
        pubsub.close()


def test_publish_does_not_wait_for_a_redis_that_is_down(monkeypatch, caplog):
    def unreachable() -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)

    monkeypatch.setattr(redis_client, "client", unreachable)
    with caplog.at_level(logging.WARNING, logger="carts.hints"):
        started = time.monotonic()
        hints.publish("test:hints:down", "1:1")
        handed_over = time.monotonic() - started
        assert hints.flush(5)
    assert handed_over < 0.05
    assert "could not publish hints" in caplog.text
