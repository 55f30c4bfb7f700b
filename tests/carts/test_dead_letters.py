"""Readers of the log are total: an event a projector cannot apply is dead-lettered and skipped,
the rest of its batch is applied, and a rebuild resolves it once the code is fixed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test import Client

from carts import projectors, services
from carts.models import CartEvent, CartState, DeadLetter
from carts.sources import Source
from tests.conftest import BASE_DIR_FOR_TESTS, item, new_event, subprocess_env
from tests.log_sql import checkpoint, checkpoint_set, store_position
from tests.log_sql import event_inject as inject

FLAKY = "test_flaky"


def _append(store_id: int, *carts: str) -> list[int]:
    appended = services.events_append(
        store_id=store_id,
        events=[new_event("cart.item_added", cart, item()) for cart in carts],
        source=Source.server("test"),
    )
    return [a.position for a in appended]


@pytest.fixture
def applied(db) -> Callable[[], list[int]]:
    """A read model of positions in a temporary table: rolled back with its savepoint."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE test_applied (position bigint NOT NULL)")

    def positions() -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT position FROM test_applied ORDER BY position")
            return [row[0] for row in cursor.fetchall()]

    return positions


def _flaky(poison: set[int], *, error: Callable[[], None] | None = None) -> projectors.Projector:
    """A projector that writes each event's position, then fails (in the database, so the
    transaction itself is in error) when the batch holds a poison position."""

    def apply(events: Sequence[CartEvent]) -> None:
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO test_applied (position) VALUES (%s)", [[e.position] for e in events]
            )
            if poison & {e.position for e in events}:
                if error is not None:
                    error()
                cursor.execute("SELECT 1 / 0")

    def reset() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM test_applied")

    return projectors.Projector(FLAKY, apply, reset)


def _open_letters(name: str = FLAKY) -> list[tuple[int, str, str]]:
    return list(
        DeadLetter.objects.filter(projector=name, resolved_at__isnull=True)
        .order_by("position")
        .values_list("position", "cart", "event_type")
    )


def test_a_failing_event_is_dead_lettered_and_the_rest_of_its_batch_applied(
    store, applied, monkeypatch
):
    positions = _append(store.pk, "a", "b", "poison", "c", "d")
    poison = positions[2]
    monkeypatch.setitem(projectors.REGISTRY, FLAKY, _flaky({poison}))

    projectors.projector_catch_up(name=FLAKY)

    # the poison is recorded with its position and cart, its error named and cut to length
    assert _open_letters() == [(poison, "poison", "cart.item_added")]
    letter = DeadLetter.objects.get(projector=FLAKY)
    assert letter.store_id == store.pk
    assert letter.error.startswith("DataError: division by zero")
    assert len(letter.error) <= projectors.ERROR_CHARS
    # the others are applied once each: the failed batch attempt left nothing behind
    mine = [p for p in applied() if p >= positions[0]]
    assert mine == [p for p in positions if p != poison]
    assert checkpoint(FLAKY, store.pk) == store_position(positions[-1])
    # caught up: nothing is applied or recorded again
    assert projectors.projector_catch_up(name=FLAKY) == 0
    assert DeadLetter.objects.filter(projector=FLAKY).count() == 1


def test_a_dead_letter_is_logged_at_error_with_its_position(store, applied, monkeypatch, caplog):
    [poison] = _append(store.pk, "poison")
    monkeypatch.setitem(projectors.REGISTRY, FLAKY, _flaky({poison}))

    with caplog.at_level("ERROR", logger="carts.projectors"):
        projectors.projector_catch_up(name=FLAKY)

    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert f"event at position {poison} (cart.item_added" in record.getMessage()
    assert "dead-lettered: DataError: division by zero" in record.getMessage()


def test_a_rebuild_resolves_a_dead_letter_whose_cause_was_fixed(store, applied, monkeypatch):
    positions = _append(store.pk, "a", "fixed", "b", "still-broken", "c")
    fixed, broken = positions[1], positions[3]
    monkeypatch.setitem(projectors.REGISTRY, FLAKY, _flaky({fixed, broken}))
    projectors.projector_catch_up(name=FLAKY)
    assert [p for p, _, _ in _open_letters()] == [fixed, broken]
    first = DeadLetter.objects.get(projector=FLAKY, position=broken)

    # when the code is fixed for one of them and the projector rebuilt
    monkeypatch.setitem(projectors.REGISTRY, FLAKY, _flaky({broken}))
    call_command("rebuild_projections", FLAKY)

    # then it is applied and resolved; the other is recorded again, still open
    assert _open_letters() == [(broken, "still-broken", "cart.item_added")]
    resolved = DeadLetter.objects.get(projector=FLAKY, position=fixed)
    assert resolved.resolved_at is not None
    again = DeadLetter.objects.get(projector=FLAKY, position=broken)
    assert (again.pk, again.created_at) == (first.pk, first.created_at)
    assert [p for p in applied() if p >= positions[0]] == [p for p in positions if p != broken]
    assert checkpoint(FLAKY, store.pk) >= store_position(positions[-1])


def test_a_transient_database_error_stops_the_batch_instead(store, applied, monkeypatch):
    # given a batch that fails the way a lost connection or a deadlock does
    positions = _append(store.pk, "a", "b")

    def lost() -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setitem(projectors.REGISTRY, FLAKY, _flaky({positions[1]}, error=lost))
    checkpoint_set(FLAKY, store.pk, store_position(positions[0]) - 1)

    with pytest.raises(OperationalError):
        projectors.projector_catch_up(name=FLAKY)

    # nothing is dead-lettered or skipped: the runner retries the batch later
    assert not DeadLetter.objects.filter(projector=FLAKY).exists()
    assert checkpoint(FLAKY, store.pk) == store_position(positions[0]) - 1


def test_a_rolled_back_batch_pushes_nothing_live(
    store, applied, monkeypatch, django_capture_on_commit_callbacks
):
    # dashboard_live pushes on commit: a batch attempt that rolls back must not push, and the
    # events applied one by one afterwards push once each
    from dashboards import live

    positions = _append(store.pk, "a", "poison", "b")
    flaky = _flaky({positions[1]})

    def apply(events: Sequence[CartEvent]) -> None:
        live.apply(events)
        flaky.apply(events)

    monkeypatch.setitem(projectors.REGISTRY, FLAKY, projectors.Projector(FLAKY, apply, flaky.reset))
    checkpoint_set(FLAKY, store.pk, store_position(positions[0]) - 1)

    with django_capture_on_commit_callbacks() as callbacks:
        projectors.projector_catch_up(name=FLAKY)

    assert len(callbacks) == 2  # "a" and "b"; neither the whole batch nor the poison


def test_cart_state_rebuild_dead_letters_what_the_fold_refuses_and_keeps_folding(store):
    # given a cart whose log holds an event the fold refuses (another currency) and one it
    # cannot read (no SKU), as an older version might have stored them, then a good one
    _append(store.pk, "c")
    refused = inject(store.pk, "c", "cart.item_added", item("USD-1", currency="USD"), version=2)
    broken = inject(store.pk, "c", "cart.item_removed", {"quantity": 1}, version=3)
    inject(store.pk, "c", "cart.item_added", item("SKU-2", 2, 300), version=4)

    call_command("rebuild_projections", "cart_state")

    state = CartState.objects.get(store=store, token="c")
    assert state.version == 4
    assert [(i["sku"], i["quantity"]) for i in state.items] == [("SKU-1", 1), ("SKU-2", 2)]
    assert state.value == 1000 + 600
    letters = _open_letters(projectors.CART_STATE)
    assert letters == [(refused, "c", "cart.item_added"), (broken, "c", "cart.item_removed")]
    errors = dict(
        DeadLetter.objects.filter(projector=projectors.CART_STATE).values_list("position", "error")
    )
    assert errors[refused] == "Rejected: Cart is in EUR; this event is in USD."
    # a second rebuild records them again, still open, once each
    call_command("rebuild_projections", "cart_state")
    assert _open_letters(projectors.CART_STATE) == letters
    assert DeadLetter.objects.filter(projector=projectors.CART_STATE).count() == 2


@pytest.fixture
def admin_client(db) -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-12345678")
    client = Client()
    client.force_login(user)
    return client


def test_dead_letters_are_listed_read_only_in_the_admin(admin_client, store):
    [position] = _append(store.pk, "c")
    DeadLetter.objects.create(
        projector="dashboard",
        position=position,
        store_id=store.pk,
        cart="c",
        event_type="cart.item_added",
        error="Unrepresentable: occurred_at out of range",
    )
    DeadLetter.objects.create(
        projector="other",
        position=position,
        error="Resolved: long ago",
        resolved_at=datetime(2026, 1, 1, tzinfo=UTC),
    )

    open_ones = admin_client.get("/admin/carts/deadletter/?open=yes&projector=dashboard")
    resolved = admin_client.get("/admin/carts/deadletter/?open=no")

    assert open_ones.status_code == 200
    page = open_ones.content.decode()
    assert "Unrepresentable: occurred_at out of range" in page
    assert "Resolved: long ago" not in page
    assert "Resolved: long ago" in resolved.content.decode()
    found = admin_client.get(f"/admin/carts/deadletter/?q={position}")
    assert "Unrepresentable: occurred_at out of range" in found.content.decode()
    assert admin_client.get("/admin/carts/deadletter/?q=not-a-number").status_code == 200
    letter = DeadLetter.objects.get(projector="dashboard")
    assert admin_client.get("/admin/carts/deadletter/add/").status_code == 403
    change = admin_client.post(f"/admin/carts/deadletter/{letter.pk}/change/", {"error": "x"})
    assert change.status_code == 403
    assert DeadLetter.objects.get(pk=letter.pk).error.startswith("Unrepresentable")


def test_run_projectors_once_exits_0_with_a_poison_event_in_the_log(committed_store):
    store, _ = committed_store
    # given a committed log with a poison event for the dashboards between good events
    _append(store.pk, "before")
    poison = inject(
        store.pk,
        "poison",
        "cart.item_added",
        item("P"),
        occurred_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    )
    _append(store.pk, "after")
    try:
        runner = subprocess.run(
            [sys.executable, "manage.py", "run_projectors", "--once"],
            cwd=BASE_DIR_FOR_TESTS,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert runner.returncode == 0, runner.stdout + runner.stderr
        assert "applied" in runner.stdout
        assert list(
            DeadLetter.objects.filter(store_id=store.pk).values_list(
                "projector", "position", "resolved_at"
            )
        ) == [("dashboard", poison, None)]
        assert f"event at position {poison}" in runner.stderr
    finally:
        # The event stays in the log (it refuses deletes); its dead letter must not make later
        # tests' /healthz degraded.
        DeadLetter.objects.filter(store_id=store.pk).delete()
