"""GET /metrics (config/metrics.py): behind its token, every family in the exposition, values that
move through the real code paths, the gauges read at scrape time against the real database and
Redis, a broker out of reach answered with 200 and the error indicator, and several processes
summed through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from campaigns import enrolment, steps
from carts import metrics, ratelimits, redis_client, services
from carts.models import DeadLetter, LogHead, ProjectorCheckpoint
from carts.sources import Source
from config.metrics import broker_redis_url
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned, order_placed
from tests.conftest import BASE_DIR_FOR_TESTS, item, new_event
from tests.recovery.test_shopper_socket import (  # noqa: F401 (fresh_caches: an autouse fixture)
    fresh_caches,
    hello,
    send_event,
    shop,
)

TOKEN = "metrics-test-token"
FAMILIES = {
    "cartrecovery_events_appended",
    "cartrecovery_append_seconds",
    "cartrecovery_offer_decision_seconds",
    "cartrecovery_step_outcomes",
    "cartrecovery_lease_expiries",
    "cartrecovery_rate_limit_hits",
    "cartrecovery_scrape_errors",
    "cartrecovery_scrape_up",
    "cartrecovery_queue_depth",
    "cartrecovery_queue_unacked",
    "cartrecovery_projector_lag_events",
    "cartrecovery_dead_letters",
}
T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _token(settings) -> None:
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_MULTIPROC_DIR = ""  # this process's own registry, whatever the environment


def _get(token: str | None = TOKEN, **headers: Any):
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return Client().get("/metrics", **headers)


def _parse(text: str) -> tuple[set[str], Samples]:
    families: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return families, samples


def scrape() -> tuple[set[str], Samples]:
    response = _get()
    assert response.status_code == 200
    return _parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not there yet (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


# Protection --------------------------------------------------------------------------------------


def test_no_token_configured_turns_the_endpoint_off(settings):
    settings.METRICS_TOKEN = ""
    assert _get().status_code == 404
    assert _get(None).status_code == 404
    assert _get("").status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_AUTHORIZATION": "Bearer wrong-token"},
        {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}x"},
        {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"},
        {"HTTP_AUTHORIZATION": TOKEN},
        {"HTTP_AUTHORIZATION": "Bearer é"},  # not ASCII: refused, not a 500
    ],
)
def test_a_missing_or_wrong_token_is_refused_with_401(headers):
    response = Client().get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"cartrecovery" not in response.content


def test_healthz_needs_no_token(db):
    assert Client().get("/healthz").status_code in (200, 503)  # the liveness check, unchanged


# The exposition ----------------------------------------------------------------------------------


def test_every_family_is_in_the_text_exposition(db):
    response = _get()

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response["Cache-Control"] == "no-store"
    families, samples = _parse(response.content.decode())
    assert families >= FAMILIES
    assert value(samples, "cartrecovery_scrape_up", source="database") == 1
    assert value(samples, "cartrecovery_scrape_up", source="broker") == 1
    # Present from the start at 0, so rate() and absent() alerts have a series.
    assert ("cartrecovery_events_appended_total", frozenset({("source", "browser")})) in samples


def test_openmetrics_is_served_to_who_asks_for_it(db):
    response = _get(HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


# Values that move --------------------------------------------------------------------------------


def test_append_observe_counts_events_and_times_the_append(db):
    _, before = scrape()

    metrics.append_observe(source_kind="server", events=3, seconds=0.004)
    metrics.append_observe(source_kind="server", events=0, seconds=0.02)  # all duplicates

    _, after = scrape()
    events = "cartrecovery_events_appended_total"
    assert value(after, events, source="server") - value(before, events, source="server") == 3
    assert value(after, events, source="browser") == value(before, events, source="browser")
    count = "cartrecovery_append_seconds_count"
    assert value(after, count, source="server") - value(before, count, source="server") == 2
    bucket = "cartrecovery_append_seconds_bucket"
    moved = {
        le: value(after, bucket, source="server", le=le)
        - value(before, bucket, source="server", le=le)
        for le in ("0.0025", "0.005", "0.01", "0.025")
    }
    assert moved == {"0.0025": 0, "0.005": 1, "0.01": 1, "0.025": 2}


def test_lease_expired_counts_by_lease(db):
    _, before = scrape()
    metrics.lease_expired("projector")
    metrics.lease_expired("projector")
    metrics.lease_expired("scheduler")
    _, after = scrape()
    name = "cartrecovery_lease_expiries_total"
    assert value(after, name, lease="projector") - value(before, name, lease="projector") == 2
    assert value(after, name, lease="scheduler") - value(before, name, lease="scheduler") == 1


def test_a_limit_that_bites_counts_a_hit(db, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "restore_ip": "2/minute"}
    key = uuid.uuid4().hex
    _, before = scrape()

    verdicts = [ratelimits.hit("restore_ip", key).allowed for _ in range(4)]
    # A login form asks first (counting nothing) and is refused: that bites too.
    verdicts.append(ratelimits.test("restore_ip", key).allowed)

    _, after = scrape()
    assert verdicts == [True, True, False, False, False]
    name = "cartrecovery_rate_limit_hits_total"
    assert value(after, name, limit="restore_ip") - value(before, name, limit="restore_ip") == 3
    assert value(after, name, limit="login_ip") == value(before, name, limit="login_ip")


def test_the_apis_per_store_limit_that_bites_counts_a_hit_and_logs_once(
    api, store, monkeypatch, caplog
):
    # A minute of its own, far ahead (store ids repeat across test databases; Redis outlives
    # them), 15.5 s into it.
    now = random.randrange(10**9, 2 * 10**9) * 60 + 15.5
    monkeypatch.setattr("carts.auth.time", types.SimpleNamespace(time=lambda: now))
    counter = f"ratelimit:store:{store.pk}:{int(now // 60)}"
    redis_client.client().delete(counter)
    store.rate_limit_per_minute = 2
    store.save(update_fields=["rate_limit_per_minute"])
    _, before = scrape()

    try:
        with caplog.at_level(logging.WARNING, logger="carts.auth"):
            answers = [api.get("/api/v1/carts/cart-1").status_code for _ in range(5)]
    finally:
        redis_client.client().delete(counter)

    _, after = scrape()
    assert answers == [404, 404, 429, 429, 429]
    name = "cartrecovery_rate_limit_hits_total"
    assert value(after, name, limit="api_store") - value(before, name, limit="api_store") == 3
    # one line for the store's three refusals in the minute, naming the store, not its key
    logged = [r.getMessage() for r in caplog.records if "api_store" in r.getMessage()]
    assert logged == [f"rate limit api_store hit (store {store.pk}, 2/minute); retry after 45 s"]
    assert "sk_" not in caplog.text


def test_step_outcomes_are_counted_where_they_are_recorded(
    store, django_capture_on_commit_callbacks
):
    campaign_with_tiers(
        store.pk,
        activated_at=T - timedelta(days=1),
        tiers=[{"channel": "onsite"}, {"channel": "email", "delay_minutes": 60}],
    )
    cart_abandoned(store.pk, at=T)
    cancelled = cart_abandoned(store.pk, at=T)
    enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30))
    _, before = scrape()

    # Both carts' on-site steps run through the worker's path; then one cart's order cancels
    # its email step, still pending (due at 90 minutes).
    published: list[list[int]] = []
    now = T + timedelta(minutes=31)
    with django_capture_on_commit_callbacks(execute=True):
        steps.due_steps_enqueue(now=now, publish=published.append)
    ran = steps.steps_execute(step_ids=[i for b in published for i in b], now=lambda: now)
    with django_capture_on_commit_callbacks(execute=True):
        order_placed(store.pk, cancelled.token, at=T + timedelta(minutes=40))

    _, after = scrape()
    assert ran == {"sent": 2}
    name = "cartrecovery_step_outcomes_total"

    def moved(channel: str, outcome: str) -> float:
        labels = {"channel": channel, "outcome": outcome}
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("onsite", "sent") == 2
    assert moved("email", "cancelled") == 1
    assert moved("email", "sent") == 0 and moved("onsite", "cancelled") == 0


@pytest.mark.asyncio
async def test_an_exit_intents_decision_is_timed(committed_db):
    from channels.db import database_sync_to_async

    s = await shop()
    socket = await hello(s["store"].pk, "cart-metrics")
    await send_event(socket, "cart.item_added", item(unit_price=5000))
    _, before = await database_sync_to_async(scrape)()

    frames = await send_event(socket, "shopper.exit_intent", {"trigger": "mouse_leave"})

    _, after = await database_sync_to_async(scrape)()
    await socket.disconnect()
    assert [f["type"] for f in frames] == ["offer", "appended"]
    name = "cartrecovery_offer_decision_seconds_count"
    assert value(after, name, decision="offer") - value(before, name, decision="offer") == 1
    assert value(after, name, decision="none") == value(before, name, decision="none")


# Gauges read at scrape time ----------------------------------------------------------------------


def test_dead_letter_gauge_is_the_open_rows_per_projector(db):
    name = f"test_metrics_{uuid.uuid4().hex[:8]}"
    for position in (11, 12, 13):
        DeadLetter.objects.create(projector=name, position=position, error="boom")
    DeadLetter.objects.create(projector=name, position=14, error="fixed", resolved_at=T)

    _, samples = scrape()

    assert value(samples, "cartrecovery_dead_letters", projector=name) == 3
    for projector in DeadLetter.objects.values_list("projector", flat=True).distinct():
        open_rows = DeadLetter.objects.filter(projector=projector, resolved_at__isnull=True)
        assert value(samples, "cartrecovery_dead_letters", projector=projector) == (
            open_rows.count()
        )
    assert value(samples, "cartrecovery_dead_letters", projector="daily_event_counts") == (
        DeadLetter.objects.filter(projector="daily_event_counts", resolved_at=None).count()
    )


def test_projector_lag_is_the_head_minus_its_checkpoint(store):
    appended = services.events_append(
        store_id=store.pk,
        events=[new_event("cart.item_added", f"lag-{i}", item()) for i in range(3)],
        source=Source.server("test"),
    )
    assert [a.store_position for a in appended] == [1, 2, 3]
    # Lag is per store (docs/adr/0003): every other store (committed by earlier tests) read to
    # its head, this one to its first event.
    heads = dict(LogHead.objects.values_list("store_id", "position"))
    for store_id, position in heads.items():
        ProjectorCheckpoint.objects.update_or_create(
            name="daily_event_counts",
            store_id=store_id,
            defaults={"position": 1 if store_id == store.pk else position},
        )
    ProjectorCheckpoint.objects.filter(name="offer_push").delete()

    _, samples = scrape()

    lag = "cartrecovery_projector_lag_events"
    assert value(samples, lag, projector="daily_event_counts") == 3 - 1
    # never ran: it has read nothing of any store
    assert value(samples, lag, projector="offer_push") == sum(heads.values())


def test_queue_depth_sums_a_queues_priorities_in_the_broker(db, settings):
    queue = f"test-metrics-{uuid.uuid4().hex[:8]}"
    settings.METRICS_QUEUES = [queue, f"{queue}-empty"]
    client = redis.Redis.from_url(broker_redis_url(settings.CELERY_BROKER_URL))
    keys = [queue, f"{queue}\x06\x163", f"{queue}\x06\x169"]
    try:
        client.rpush(keys[0], "a", "b", "c")
        client.rpush(keys[1], "d")
        client.rpush(keys[2], "e")

        _, samples = scrape()
    finally:
        client.delete(*keys)
        client.close()

    assert value(samples, "cartrecovery_queue_depth", queue=queue) == 5
    assert ("cartrecovery_queue_depth", frozenset({("queue", f"{queue}-empty")})) in samples


def test_a_broker_out_of_reach_leaves_its_gauges_out_and_says_so(db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    _, before = scrape()

    response = _get()

    assert response.status_code == 200
    families, samples = _parse(response.content.decode())
    assert value(samples, "cartrecovery_scrape_up", source="broker") == 0
    assert value(samples, "cartrecovery_scrape_up", source="database") == 1
    errors = "cartrecovery_scrape_errors_total"
    assert value(samples, errors, source="broker") - value(before, errors, source="broker") == 1
    assert value(samples, errors, source="database") == value(before, errors, source="database")
    assert not {"cartrecovery_queue_depth", "cartrecovery_queue_unacked"} & families
    assert "cartrecovery_projector_lag_events" in families  # the database's still there


def test_a_database_out_of_reach_leaves_its_gauges_out_and_says_so():
    # No database access for this test (pytest-django refuses it): the database source fails.
    response = _get()

    assert response.status_code == 200
    families, samples = _parse(response.content.decode())
    assert value(samples, "cartrecovery_scrape_up", source="database") == 0
    assert value(samples, "cartrecovery_scrape_up", source="broker") == 1
    assert not {"cartrecovery_projector_lag_events", "cartrecovery_dead_letters"} & families
    assert "cartrecovery_queue_depth" in families


@pytest.mark.parametrize(
    ("broker", "url"),
    [
        ("redis://127.0.0.1:6379/2", "redis://127.0.0.1:6379/2"),
        ("redis+socket:///tmp/r.sock", "unix:///tmp/r.sock"),
        ("redis+socket:///tmp/r.sock?virtual_host=3", "unix:///tmp/r.sock?db=3"),
    ],
)
def test_the_brokers_url_in_redis_pys_spelling(broker, url):
    assert broker_redis_url(broker) == url


# Several processes -------------------------------------------------------------------------------


@pytest.fixture
def multiprocess_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "prometheus"
    path.mkdir()
    yield path


def test_several_processes_are_summed_through_the_multiprocess_directory(
    db, settings, multiprocess_dir
):
    record = (
        "from carts import metrics; "
        "metrics.append_observe(source_kind='platform', events=2, seconds=0.01); "
        "metrics.step_outcome(channel='email', outcome='sent')"
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(multiprocess_dir), "PATH": "/usr/bin:/bin"}
    children = [
        subprocess.Popen([sys.executable, "-c", record], cwd=BASE_DIR_FOR_TESTS, env=env)
        for _ in range(2)
    ]
    assert [child.wait(timeout=30) for child in children] == [0, 0]
    metrics.append_observe(source_kind="platform", events=100, seconds=0.01)  # this process: not
    settings.METRICS_MULTIPROC_DIR = str(multiprocess_dir)

    _, samples = scrape()

    assert value(samples, "cartrecovery_events_appended_total", source="platform") == 4
    assert value(samples, "cartrecovery_append_seconds_count", source="platform") == 2
    assert value(samples, "cartrecovery_step_outcomes_total", channel="email", outcome="sent") == 2
    assert value(samples, "cartrecovery_scrape_up", source="database") == 1
