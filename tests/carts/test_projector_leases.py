"""Projectors run as several processes: each partition of a projector's stores is leased to one
runner at a time, a dead runner's partitions are taken over once its leases expire, and a read
model rebuilt while runners and writers are busy equals one rebuilt alone (carts/projectors.py)."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid

import pytest
from django.db import connection

from carts import projectors, services
from carts.models import DailyEventCount, ProjectorLease
from carts.sources import Source
from tests.carts.threads import raise_first_error, run_in_threads
from tests.conftest import item, new_event
from tests.log_sql import checkpoint

NAME = "daily_event_counts"


@pytest.fixture
def four_partitions(settings):
    settings.PROJECTOR_PARTITIONS = 4
    return 4


def _holders() -> dict[int, str]:
    return dict(
        ProjectorLease.objects.filter(name=NAME, expires_at__gt=time_now()).values_list(
            "part", "owner"
        )
    )


def time_now():
    from django.utils import timezone

    return timezone.now()


def _runner(owner: str, lease_seconds: float = 30.0) -> projectors.ProjectorRunner:
    return projectors.ProjectorRunner(owner=owner, names=[NAME], lease_seconds=lease_seconds)


def test_runners_share_the_partitions_fairly_and_each_is_held_once(db, four_partitions):
    a, b = _runner("runner-a"), _runner("runner-b")

    # a runner alone holds every partition
    assert a.leases_hold() == {(NAME, p) for p in range(4)}

    # a second runner joins: the first gives half back on its next turn, the second takes it
    assert b.leases_hold() == set()  # it is counted from now on, but everything is held
    assert len(a.leases_hold()) == 2
    assert len(b.leases_hold()) == 2
    holders = _holders()
    assert sorted(holders) == [0, 1, 2, 3]
    assert sorted(holders.values()) == ["runner-a", "runner-a", "runner-b", "runner-b"]

    # a clean stop gives the leases up at once: the other takes them on its next turn
    a.release()
    assert len(b.leases_hold()) == 4


def test_a_runner_catches_up_only_the_stores_of_its_partitions(db, four_partitions):
    stores = [services.store_create(name=f"Shop {n}").store_id for n in range(8)]
    for store_id in stores:
        services.events_append(
            store_id=store_id,
            events=[new_event("cart.item_added", "c", item())],
            source=Source.server("test"),
        )
    a, b = _runner("runner-a"), _runner("runner-b")
    a.leases_hold()
    b.leases_hold()
    a.leases_hold()  # gives half back

    a.step()

    mine = {part for _, part in a.held}
    assert len(mine) == 2
    for store_id in stores:
        expected = 1 if store_id % 4 in mine else 0
        assert checkpoint(NAME, store_id) == expected, store_id


def test_a_dead_runners_partitions_are_taken_over_once_its_leases_expire(
    db, four_partitions, caplog
):
    # given a runner that holds every partition, then dies (it stops renewing)
    dead = _runner("runner-dead", lease_seconds=1.0)
    dead.leases_hold()
    survivor = _runner("runner-survivor", lease_seconds=1.0)

    # while its leases live, nothing can be taken from it
    assert survivor.leases_hold() == set()

    # once they expire (within the lease time), the survivor takes every partition over
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="carts.projectors"):
        while len(survivor.leases_hold()) < 4:
            assert time.monotonic() - started < 5, "not taken over in time"
            time.sleep(0.1)
    assert time.monotonic() - started < 2.5
    assert set(_holders().values()) == {"runner-survivor"}
    taken_over = [r for r in caplog.records if "expired" in r.getMessage()]
    assert len(taken_over) == 4
    assert "runner-dead" in taken_over[0].getMessage()


def _counts(stores: list[int]) -> list[tuple]:
    return list(
        DailyEventCount.objects.filter(store_id__in=stores)
        .order_by("store_id", "day", "type")
        .values_list("store_id", "day", "type", "count", "carts")
    )


@pytest.mark.slow
def test_a_rebuild_while_runners_and_writers_are_busy_equals_a_rebuild_alone(
    committed_db, settings
):
    settings.PROJECTOR_PARTITIONS = 4
    stores = [
        services.store_create(name=f"Busy shop {uuid.uuid4().hex[:6]}").store_id for _ in range(6)
    ]
    stop = threading.Event()
    rebuilt = threading.Event()

    def writer(n: int) -> None:
        rng = random.Random(n)
        for k in range(60):
            services.events_append(
                store_id=stores[rng.randrange(len(stores))],
                events=[new_event("cart.item_added", f"w{n}-{k % 5}", item(f"S{k}"))],
                source=Source.server("test"),
            )
            if k == 20:
                rebuilt.wait(30)  # the rest of the writes come after the rebuild
        connection.close()

    def runner(n: int) -> None:
        one = _runner(f"busy-runner-{n}-{uuid.uuid4().hex[:4]}", lease_seconds=5.0)
        try:
            while not stop.is_set():
                one.step()
                time.sleep(0.01)
        finally:
            one.release()
            connection.close()

    def rebuild() -> None:
        time.sleep(0.3)
        try:
            projectors.projector_rebuild(name=NAME)
        finally:
            rebuilt.set()
            connection.close()

    def run(role: str, n: int) -> None:
        {"writer": writer, "runner": runner, "rebuild": lambda _: rebuild()}[role](n)

    def writers_then_stop() -> None:
        outcomes = run_in_threads(run, [("writer", n) for n in range(3)] + [("rebuild", 0)])
        # the runners catch up with the last writes, then stop
        deadline = time.monotonic() + 30
        while any(checkpoint(NAME, s) < _head(s) for s in stores):
            assert time.monotonic() < deadline, "the runners did not catch up"
            time.sleep(0.05)
        stop.set()
        raise_first_error(outcomes)

    outcomes = run_in_threads(
        lambda role, n: writers_then_stop() if role == "all" else run(role, n),
        [("all", 0)] + [("runner", n) for n in range(2)],
        timeout=120,
    )
    raise_first_error(outcomes)
    during = _counts(stores)

    projectors.projector_rebuild(name=NAME)

    assert _counts(stores) == during
    assert sum(row[3] for row in during) == 180


def _head(store_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT position FROM carts_loghead WHERE store_id = %s", [store_id])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def test_a_turn_that_cannot_serve_every_store_serves_the_rest_next(db, settings):
    # given 25 stores behind in one partition, and turns that serve one store each while the
    # first 20 stores keep getting new events between turns
    settings.PROJECTOR_PARTITIONS = 1
    stores = [services.store_create(name=f"Shop {n}").store_id for n in range(25)]

    def append(store_id: int) -> None:
        services.events_append(
            store_id=store_id,
            events=[new_event("cart.item_added", f"c{uuid.uuid4().hex[:6]}", item())],
            source=Source.server("test"),
        )

    for store_id in stores:
        append(store_id)

    # when 25 turns run, each past its deadline after one store
    for _ in range(25):
        projectors.projector_catch_up(name=NAME, parts=[0], deadline=time.monotonic())
        for store_id in stores[:20]:
            append(store_id)

    # then every store was served: none starved behind the busy ones
    assert all(checkpoint(NAME, s) >= 1 for s in stores), [checkpoint(NAME, s) for s in stores]


def test_a_rebuild_holds_off_only_its_own_projector(db, four_partitions, monkeypatch):
    import psycopg

    from carts.models import ProjectorCheckpoint

    # given a second projector beside the one being rebuilt (held by another session)
    other = "test_other_projector"
    monkeypatch.setitem(
        projectors.REGISTRY, other, projectors.Projector(other, lambda events: None, lambda: None)
    )
    store = services.store_create(name="Shop").store_id
    services.events_append(
        store_id=store,
        events=[new_event("cart.item_added", "c", item())],
        source=Source.server("test"),
    )
    params = connection.get_connection_params()
    with psycopg.connect(**params) as rebuilding:
        rebuilding.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            [projectors._REBUILD_LOCK, projectors._lock_key(NAME)],
        )
        runner = projectors.ProjectorRunner(owner="runner-a", names=[NAME, other])

        # when a runner takes a turn
        started = time.monotonic()
        runner.step()

        # then it did not wait: the other projector caught up, the rebuilt one was left alone
        assert time.monotonic() - started < 5
        assert checkpoint(other, store) == 1
        assert not ProjectorCheckpoint.objects.filter(name=NAME, store_id=store).exists()
        rebuilding.rollback()
