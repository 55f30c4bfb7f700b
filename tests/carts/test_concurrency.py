"""Concurrent appends, real commits: versions without gaps, duplicates stored once, races won once.

Rows committed here stay in the test database, so every assertion is scoped to this test's store.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid

from carts import services
from carts.errors import EventIdConflict, VersionConflict
from carts.models import CartEvent, CartState
from carts.sources import Source
from tests.carts.threads import raise_first_error, run_in_threads
from tests.conftest import item, new_event

THREADS = 8


def test_parallel_appends_to_one_cart_get_versions_1_to_n(committed_store):
    # given 8 threads, each appending 25 items to the same cart, one append at a time
    store, _ = committed_store
    per_thread = 25
    start = threading.Barrier(THREADS, timeout=30)

    def appender(t: int) -> list[services.Appended]:
        start.wait()
        results = []
        for i in range(per_thread):
            event = new_event("cart.item_added", "shared", item(f"T{t}-{i}", 1, 100 * (t + 1)))
            results.extend(
                services.events_append(
                    store_id=store.pk, events=[event], source=Source.server("test")
                )
            )
        return results

    # when they run at once
    outcomes = run_in_threads(appender, [(t,) for t in range(THREADS)])

    # then versions are exactly 1..N, in position order, and the cart state folded every event
    raise_first_error(outcomes)
    n = THREADS * per_thread
    versions = sorted(r.version for results in outcomes for r in results)
    assert versions == list(range(1, n + 1))
    assert not any(r.duplicate for results in outcomes for r in results)
    for results in outcomes:  # each thread's own appends are ordered
        assert [r.position for r in results] == sorted(r.position for r in results)
    in_log_order = CartEvent.objects.filter(store=store, cart="shared").order_by("position")
    assert list(in_log_order.values_list("version", flat=True)) == list(range(1, n + 1))
    row = CartState.objects.get(store=store, token="shared")
    expected_value = per_thread * sum(100 * (t + 1) for t in range(THREADS))
    assert (row.version, row.value, row.item_count, len(row.items)) == (n, expected_value, n, n)


def test_concurrent_duplicate_deliveries_to_one_cart_are_stored_once(committed_store):
    # given the same event delivered by 8 threads at once, for 5 events in turn
    store, _ = committed_store
    events = [new_event("cart.item_added", "dup", item(f"S{i}", 1, 250)) for i in range(5)]
    start = threading.Barrier(THREADS, timeout=30)

    def deliver() -> list[services.Appended]:
        results = []
        for event in events:
            start.wait()
            results.extend(
                services.events_append(
                    store_id=store.pk, events=[event], source=Source.server("test")
                )
            )
        return results

    # when they race
    outcomes = run_in_threads(deliver, [() for _ in range(THREADS)])

    # then each event is stored once, and every caller got its one version and position
    raise_first_error(outcomes)
    rows = CartEvent.objects.filter(store=store).order_by("position")
    assert [(r.event_id, r.version) for r in rows] == [
        (e.event_id, i + 1) for i, e in enumerate(events)
    ]
    for i, event in enumerate(events):
        answers = [results[i] for results in outcomes]
        assert {(a.event_id, a.cart, a.version, a.position) for a in answers} == {
            (event.event_id, "dup", i + 1, rows[i].position)
        }
        assert sorted(a.duplicate for a in answers) == [False] + [True] * (THREADS - 1)
    row = CartState.objects.get(store=store, token="dup")
    assert (row.version, row.value, row.item_count) == (5, 1250, 5)


def test_concurrent_duplicates_batched_with_other_carts_are_stored_once(committed_store):
    # given 8 threads each posting a batch: one shared event, plus an event for its own cart
    store, _ = committed_store
    shared = new_event("cart.item_added", "shared", item("S", 1, 999))
    start = threading.Barrier(THREADS, timeout=30)

    def deliver(t: int) -> list[services.Appended]:
        own = new_event("cart.item_added", f"own-{t}", item(f"O{t}", 1, 10))
        start.wait()
        return services.events_append(
            store_id=store.pk, events=[shared, own], source=Source.server("test")
        )

    # when they race
    outcomes = run_in_threads(deliver, [(t,) for t in range(THREADS)])

    # then the shared event is stored once and every caller got its version and position,
    # and each thread's own event is stored
    raise_first_error(outcomes)
    [stored_shared] = CartEvent.objects.filter(store=store, event_id=shared.event_id)
    assert {(r[0].version, r[0].position) for r in outcomes} == {(1, stored_shared.position)}
    assert sorted(r[0].duplicate for r in outcomes) == [False] + [True] * (THREADS - 1)
    assert [(r[1].cart, r[1].version, r[1].duplicate) for r in outcomes] == [
        (f"own-{t}", 1, False) for t in range(THREADS)
    ]
    assert CartEvent.objects.filter(store=store).count() == 1 + THREADS
    assert CartState.objects.get(store=store, token="shared").version == 1


def test_concurrent_reuse_of_an_id_for_different_carts_stores_one(committed_store):
    # given 8 threads posting events with one id, each for its own cart (so different bodies),
    # for 5 ids in turn; the threads lock different carts, so only the unique id stops them
    store, _ = committed_store
    rounds = 5
    ids = [uuid.uuid4() for _ in range(rounds)]
    start = threading.Barrier(THREADS, timeout=30)

    def deliver(t: int) -> list[services.Appended | EventIdConflict]:
        answers: list[services.Appended | EventIdConflict] = []
        for r, event_id in enumerate(ids):
            event = dataclasses.replace(
                new_event("cart.item_added", f"r{r}-t{t}", item()), event_id=event_id
            )
            start.wait()
            try:
                answers.extend(
                    services.events_append(
                        store_id=store.pk, events=[event], source=Source.server("test")
                    )
                )
            except EventIdConflict as exc:
                answers.append(exc)
        return answers

    # when they race
    outcomes = run_in_threads(deliver, [(t,) for t in range(THREADS)])

    # then per id exactly one thread appended, every other one got a conflict, one row is stored
    raise_first_error(outcomes)
    for r, event_id in enumerate(ids):
        answers = [per_thread[r] for per_thread in outcomes]
        winners = [a for a in answers if isinstance(a, services.Appended)]
        assert len(winners) == 1, answers
        assert (winners[0].version, winners[0].duplicate) == (1, False)
        assert all(
            isinstance(a, EventIdConflict) and a.detail == {"event_id": str(event_id)}
            for a in answers
            if a is not winners[0]
        )
        [row] = CartEvent.objects.filter(store=store, event_id=event_id)
        assert (row.cart, row.position) == (winners[0].cart, winners[0].position)
    assert CartEvent.objects.filter(store=store).count() == rounds
    assert CartState.objects.filter(store=store, version__gt=0).count() == rounds


def test_expected_version_races_have_one_winner_per_version(committed_store):
    # given 6 threads that, round after round, all append to one cart expecting the same version
    store, _ = committed_store
    threads, rounds = 6, 10
    start = threading.Barrier(threads, timeout=30)

    def contend(t: int) -> list[services.Appended | VersionConflict]:
        answers: list[services.Appended | VersionConflict] = []
        for version in range(rounds):
            event = new_event(
                "cart.item_added", "race", item(f"R{version}-T{t}"), expected_version=version
            )
            start.wait()
            try:
                answers.extend(
                    services.events_append(
                        store_id=store.pk, events=[event], source=Source.server("test")
                    )
                )
            except VersionConflict as exc:
                answers.append(exc)
        return answers

    # when they race
    outcomes = run_in_threads(contend, [(t,) for t in range(threads)])

    # then each version has exactly one winner, whose event is the one stored at that version
    raise_first_error(outcomes)
    stored = dict(
        CartEvent.objects.filter(store=store, cart="race").values_list("version", "event_id")
    )
    assert sorted(stored) == list(range(1, rounds + 1))
    for version in range(rounds):
        answers = [per_thread[version] for per_thread in outcomes]
        winners = [a for a in answers if isinstance(a, services.Appended)]
        losers = [a for a in answers if isinstance(a, VersionConflict)]
        assert len(winners) == 1, answers
        assert winners[0].version == version + 1
        assert stored[version + 1] == winners[0].event_id
        assert len(losers) == threads - 1
        assert {(x.detail["expected_version"], x.detail["actual_version"]) for x in losers} == {
            (version, version + 1)
        }
    row = CartState.objects.get(store=store, token="race")
    assert (row.version, row.item_count, row.value) == (rounds, rounds, rounds * 1000)


def test_an_integrity_error_that_is_no_id_race_is_raised_at_once(committed_db, monkeypatch):
    # Only carts_eventkey's refusal (two requests storing one new id) is worth another attempt;
    # a store that does not exist (its foreign keys, checked at the commit) is not.
    import pytest
    from django.db import IntegrityError

    from carts import append

    attempts = []
    real = append._append

    def counted(*args, **kwargs):
        attempts.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(append, "_append", counted)
    with pytest.raises(IntegrityError):
        services.events_append(
            store_id=2_000_000_000,
            events=[new_event("cart.item_added", "no-store", item("X"))],
            source=Source.server("test"),
        )
    assert len(attempts) == 1
