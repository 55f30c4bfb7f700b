"""Readers that checkpoint the last store position they read never skip an event, and appends
of different stores never wait for each other (docs/adr/0003).

Each store's events take positions 1, 2, 3... from the store's row in carts_loghead, whose lock
is held until the append commits, so a store's events become visible in store-position order.
A rolled-back append rolls its head back too: store positions have no holes.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import psycopg
import pytest
from django.db import connection, transaction

from carts import selectors, services
from carts.models import CartEvent
from carts.sources import Source
from tests.carts.threads import raise_first_error, run_in_threads
from tests.conftest import item, new_event

WRITERS = 8
STORES = 2  # four writers per store: they contend on its head; the stores do not
TRANSACTIONS_PER_WRITER = 30
READERS = 2


class RollBack(Exception):
    pass


@pytest.mark.slow
def test_tailing_readers_see_every_committed_event_in_store_position_order(committed_store):
    # given 8 writers on 2 stores whose transactions stay open a random while after appending
    # (holding their positions), about 10% of which roll back, and 2 readers tailing each store
    # by its checkpoint
    store, _ = committed_store
    stores = [store.pk] + [
        services.store_create(name=f"Tailed shop {uuid.uuid4().hex[:6]}").store_id
        for _ in range(STORES - 1)
    ]
    writers_done = threading.Event()
    committed: list[uuid.UUID] = []
    rolled_back: list[uuid.UUID] = []
    record = threading.Lock()

    def writer(t: int) -> None:
        rng = random.Random(1000 + t)
        store_id = stores[t % STORES]
        for n in range(TRANSACTIONS_PER_WRITER):
            events = [
                new_event("cart.item_added", f"w{t}", item(f"T{t}-{n}-{k}"))
                for k in range(rng.randint(1, 3))
            ]
            time.sleep(rng.uniform(0, 0.004))
            try:
                with transaction.atomic():
                    services.events_append(
                        store_id=store_id, events=events, source=Source.server("test")
                    )
                    time.sleep(rng.uniform(0, 0.008))  # late commit of positions already taken
                    if rng.random() < 0.1:
                        raise RollBack
            except RollBack:
                with record:
                    rolled_back.extend(e.event_id for e in events)
            else:
                with record:
                    committed.extend(e.event_id for e in events)

    def reader() -> dict[int, list[tuple[int, uuid.UUID]]]:
        checkpoints = dict.fromkeys(stores, 0)
        seen: dict[int, list[tuple[int, uuid.UUID]]] = {s: [] for s in stores}
        while True:
            finished = writers_done.is_set()  # read before the queries: the last pass sees all
            read = 0
            for store_id in stores:
                rows = list(
                    selectors.store_events_after(
                        store_id=store_id, position=checkpoints[store_id], limit=7
                    )
                )
                for row in rows:
                    checkpoints[store_id] = row.store_position
                    seen[store_id].append((row.store_position, row.event_id))
                read += len(rows)
            if not read:
                if finished:
                    return seen
                time.sleep(0.001)

    def run(role: str, i: int):
        if role == "reader":
            return reader()
        writer(i)
        return None

    # when they all run at once
    def writers_then_signal() -> None:
        outcomes = run_in_threads(run, [("writer", t) for t in range(WRITERS)], timeout=60)
        writers_done.set()
        raise_first_error(outcomes)

    started = time.monotonic()
    outcomes = run_in_threads(
        lambda role, i: writers_then_signal() if role == "writers" else run(role, i),
        [("writers", 0)] + [("reader", r) for r in range(READERS)],
        timeout=90,
    )
    elapsed = time.monotonic() - started

    # then each reader read exactly each store's committed events, in store-position order
    raise_first_error(outcomes)
    stored: list[uuid.UUID] = []
    for store_id in stores:
        final = list(
            CartEvent.objects.filter(store_id=store_id)
            .order_by("store_position")
            .values_list("store_position", "event_id")
        )
        for seen in outcomes[1:]:
            assert seen[store_id] == final
        # and a store's positions are 1..N: a rollback rolled its head back too
        assert [p for p, _ in final] == list(range(1, len(final) + 1))
        stored += [event_id for _, event_id in final]
    assert set(stored) == set(committed)
    assert len(stored) == len(committed)
    # and no rolled-back event was ever seen or stored
    assert rolled_back, "the run should include rolled-back transactions"
    assert not set(rolled_back) & {
        event_id for seen in outcomes[1:] for rows in seen.values() for _, event_id in rows
    }
    assert not CartEvent.objects.filter(event_id__in=rolled_back).exists()
    # and within each cart, store positions follow versions
    for store_id in stores:
        for t in range(WRITERS):
            versions = list(
                CartEvent.objects.filter(store_id=store_id, cart=f"w{t}")
                .order_by("store_position")
                .values_list("version", flat=True)
            )
            assert versions == list(range(1, len(versions) + 1))
    assert elapsed < 30


def _open_append_then(store_id: int, other_store_id: int) -> tuple[list[float], bool, int, int]:
    """One append whose transaction stays open for 0.5 s while a second append (to
    ``other_store_id``) runs. Returns the second's (start, end) times and the first's commit
    time, whether the second finished while the first was open, and both store positions."""
    appended, release, second_done = threading.Event(), threading.Event(), threading.Event()
    first_event = new_event("cart.item_added", "first", item())
    second_event = new_event("cart.item_added", "second", item())
    times: dict[str, float] = {}
    finished_while_open: list[bool] = []

    def first() -> int:
        with transaction.atomic():
            [result] = services.events_append(
                store_id=store_id, events=[first_event], source=Source.server("test")
            )
            appended.set()
            assert release.wait(30)
        times["first_committed"] = time.monotonic()
        return result.store_position

    def second() -> int:
        assert appended.wait(30)
        times["second_started"] = time.monotonic()
        [result] = services.events_append(
            store_id=other_store_id, events=[second_event], source=Source.server("test")
        )
        times["second_done"] = time.monotonic()
        second_done.set()
        return result.store_position

    def coordinate() -> None:
        assert appended.wait(30)
        try:
            second_done.wait(0.5)
            finished_while_open.append(second_done.is_set())
        finally:
            release.set()

    outcomes = run_in_threads(
        lambda name: {"first": first, "second": second, "coordinate": coordinate}[name](),
        [("first",), ("second",), ("coordinate",)],
    )
    raise_first_error(outcomes)
    first_position, second_position, _ = outcomes
    span = [times["second_started"], times["second_done"], times["first_committed"]]
    return span, finished_while_open[0], first_position, second_position


def test_an_append_waits_for_an_open_append_of_the_same_store(committed_store):
    # given an append whose transaction is still open (its store position taken, not visible)
    store, _ = committed_store

    # when a second append to the same store (another cart) runs meanwhile
    (_, done, first_committed), finished, first, second = _open_append_then(store.pk, store.pk)

    # then it waited for the first to commit, and took the next store position
    assert not finished
    assert done >= first_committed
    assert second == first + 1


def test_appends_of_different_stores_overlap_in_time(committed_store):
    # given an append of one store whose transaction is still open
    store, _ = committed_store
    other = services.store_create(name=f"Other shop {uuid.uuid4().hex[:6]}")

    # when another store appends meanwhile
    (started, done, first_committed), finished, first, second = _open_append_then(
        store.pk, other.store_id
    )

    # then it did not wait: it started and committed while the first was still open
    assert finished
    assert started < done < first_committed
    assert first >= 1 and second == 1  # each store counts its own


def test_without_the_lock_a_reader_by_checkpoint_skips_a_late_commit(committed_db):
    """Negative control: a plain bigserial with concurrent writers lets a reader skip a row."""
    params = connection.get_connection_params()
    table = f"gap_demo_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**params, autocommit=True) as reader:
        reader.execute(f"CREATE TABLE {table} (position bigserial PRIMARY KEY)")
        try:
            with psycopg.connect(**params) as slow, psycopg.connect(**params) as fast:
                # given a writer that takes a position and has not committed yet
                [low] = slow.execute(
                    f"INSERT INTO {table} DEFAULT VALUES RETURNING position"
                ).fetchone()  # type: ignore[misc]
                # and a second writer that takes the next position and commits first
                [high] = fast.execute(
                    f"INSERT INTO {table} DEFAULT VALUES RETURNING position"
                ).fetchone()  # type: ignore[misc]
                fast.commit()

                # when a reader reads by checkpoint, then the first writer commits
                first_read = reader.execute(
                    f"SELECT position FROM {table} WHERE position > 0 ORDER BY position"
                ).fetchall()
                checkpoint = first_read[-1][0]
                slow.commit()
                second_read = reader.execute(
                    f"SELECT position FROM {table} WHERE position > %s ORDER BY position",
                    [checkpoint],
                ).fetchall()

            # then the reader never sees the lower position, though it is in the table
            assert low < high
            assert first_read == [(high,)]
            assert second_read == []
            assert reader.execute(f"SELECT position FROM {table} ORDER BY position").fetchall() == [
                (low,),
                (high,),
            ]
        finally:
            reader.execute(f"DROP TABLE {table}")
