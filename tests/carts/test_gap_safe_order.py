"""Readers that checkpoint the last position they read never skip an event (docs/adr/0001).

Positions come from a bigserial, but are taken under a transaction-level advisory lock that is
held until commit, so events become visible in position order. Rolled-back appends leave holes
that readers pass without waiting.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import psycopg
import pytest
from django.db import connection, transaction
from django.db.models import Max

from carts import selectors, services
from carts.models import CartEvent
from carts.sources import Source
from tests.carts.threads import raise_first_error, run_in_threads
from tests.conftest import item, new_event

WRITERS = 8
TRANSACTIONS_PER_WRITER = 30
READERS = 2


class RollBack(Exception):
    pass


def _last_position() -> int:
    return CartEvent.objects.aggregate(last=Max("position"))["last"] or 0


@pytest.mark.slow
def test_tailing_readers_see_every_committed_event_in_position_order(committed_store):
    # given 8 writers whose transactions stay open a random while after appending (holding their
    # positions), about 10% of which roll back, and 2 readers tailing the log by checkpoint
    store, _ = committed_store
    start_after = _last_position()
    writers_done = threading.Event()
    committed: list[uuid.UUID] = []
    rolled_back: list[uuid.UUID] = []
    record = threading.Lock()

    def writer(t: int) -> None:
        rng = random.Random(1000 + t)
        for n in range(TRANSACTIONS_PER_WRITER):
            events = [
                new_event("cart.item_added", f"w{t}", item(f"T{t}-{n}-{k}"))
                for k in range(rng.randint(1, 3))
            ]
            time.sleep(rng.uniform(0, 0.004))
            try:
                with transaction.atomic():
                    services.events_append(
                        store_id=store.pk, events=events, source=Source.server("test")
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

    def reader() -> list[tuple[int, uuid.UUID]]:
        checkpoint = start_after
        seen: list[tuple[int, uuid.UUID]] = []
        while True:
            finished = writers_done.is_set()  # read before the query: the last pass sees all
            rows = list(selectors.events_after(position=checkpoint, limit=7))
            for row in rows:
                checkpoint = row.position  # other stores' events move the checkpoint too
                if row.store_id == store.pk:
                    seen.append((row.position, row.event_id))
            if not rows:
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

    # then each reader read exactly the store's committed events, in position order
    raise_first_error(outcomes)
    final = list(
        CartEvent.objects.filter(store=store)
        .order_by("position")
        .values_list("position", "event_id")
    )
    for seen in outcomes[1:]:
        assert seen == final
    assert {event_id for _, event_id in final} == set(committed)
    assert len(final) == len(committed)
    # and no rolled-back event was ever seen or stored
    assert rolled_back, "the run should include rolled-back transactions"
    assert not set(rolled_back) & {event_id for seen in outcomes[1:] for _, event_id in seen}
    assert not CartEvent.objects.filter(event_id__in=rolled_back).exists()
    # and the rollbacks left holes in the positions, which the readers passed
    first, last = final[0][0], final[-1][0]
    visible = CartEvent.objects.filter(position__gte=first, position__lte=last).count()
    assert visible < last - first + 1
    assert elapsed < 30


def test_an_append_cannot_commit_a_later_position_while_an_earlier_one_is_open(committed_store):
    # given an append whose transaction is still open (its position taken, not yet visible)
    store, _ = committed_store
    other = services.store_create(name=f"Other shop {uuid.uuid4().hex[:6]}")
    appended, release, second_done = threading.Event(), threading.Event(), threading.Event()
    first_event = new_event("cart.item_added", "first", item())
    second_event = new_event("cart.item_added", "second", item())

    def first() -> int:
        with transaction.atomic():
            [result] = services.events_append(
                store_id=store.pk, events=[first_event], source=Source.server("test")
            )
            appended.set()
            assert release.wait(30)
        return result.position

    def second() -> int:
        assert appended.wait(30)
        # another store, another cart: nothing is shared but the log's order
        [result] = services.events_append(
            store_id=other.store_id, events=[second_event], source=Source.server("test")
        )
        second_done.set()
        return result.position

    def coordinate() -> None:
        assert appended.wait(30)
        try:
            # when a second append runs meanwhile
            time.sleep(0.5)
            # then it waits: it has neither committed nor made anything visible
            assert not second_done.is_set()
            assert not CartEvent.objects.filter(
                event_id__in=[first_event.event_id, second_event.event_id]
            ).exists()
        finally:
            release.set()

    outcomes = run_in_threads(
        lambda name: {"first": first, "second": second, "coordinate": coordinate}[name](),
        [("first",), ("second",), ("coordinate",)],
    )

    # and once the first commits, the second commits after it, at a later position
    raise_first_error(outcomes)
    first_position, second_position, _ = outcomes
    assert second_done.is_set()
    assert second_position > first_position


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
