"""The log is partitioned by month; old months are archived without a row deleted, and positions
and checkpoints stay valid (carts/partitions.py, docs/operations.md "The log's partitions")."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime

import pytest
from django.db import DatabaseError, connection, transaction

from carts import partitions, projectors, services
from carts.models import CartEvent, LogHead
from carts.sources import Source
from tests.conftest import item, new_event
from tests.log_sql import checkpoint

MONTHS = [datetime(2025, m, 15, 12, 0, tzinfo=UTC) for m in (1, 2, 3)]
NOW = datetime(2025, 4, 2, tzinfo=UTC)


def _append(store_id: int, cart: str, at: datetime, n: int = 2) -> list[services.Appended]:
    return services.events_append(
        store_id=store_id,
        events=[new_event("cart.item_added", cart, item(f"S{k}")) for k in range(n)],
        source=Source.server("test"),
        now=at,
    )


def _partition_of(position: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM carts_cartevent WHERE position = %s", [position]
        )
        return str(cursor.fetchone()[0])


@pytest.fixture
def months(store):
    """Two stores with events recorded in three generated months (January to March 2025)."""
    # The month of NOW exists before anything is detached in the test's transaction (a detach
    # locks the log until that transaction ends; the maker of a missing month would wait for it).
    partitions.partition_ensure(month=NOW.date())
    other = services.store_create(name="Other shop").store_id
    appended = {
        (store_id, at.month): _append(store_id, f"c{at.month}", at)
        for at in MONTHS
        for store_id in (store.pk, other)
    }
    return store.pk, other, appended


def test_each_month_goes_to_its_own_partition_made_on_demand(months):
    store_id, other, appended = months
    attached = {p.name for p in partitions.partitions_list() if p.attached}
    for (_, month), results in appended.items():
        name = partitions.partition_name(date(2025, month, 1))
        assert name in attached
        assert {_partition_of(r.position) for r in results} == {name}
    # each store counts its own positions, in commit order
    assert [r.store_position for m in (1, 2, 3) for r in appended[(store_id, m)]] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    assert LogHead.objects.get(store_id=other).position == 6


def test_the_scheduler_job_makes_this_month_and_the_next_ones():
    made = partitions.partitions_ensure_ahead(now=datetime(2031, 11, 30, tzinfo=UTC))
    assert made == [
        "carts_cartevent_y2031m11",
        "carts_cartevent_y2031m12",
        "carts_cartevent_y2032m01",
    ]
    # idempotent
    assert partitions.partitions_ensure_ahead(now=datetime(2031, 11, 1, tzinfo=UTC)) == made


def test_a_partition_refuses_changes_like_the_log(months):
    name = partitions.partition_name(date(2025, 1, 1))
    for statement in (
        f"UPDATE {name} SET version = 99",
        f"DELETE FROM {name}",
        f"TRUNCATE {name}",
    ):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)


def test_archiving_waits_for_every_projector_to_have_read_the_month(months, tmp_path):
    with pytest.raises(partitions.ArchiveRefused, match="not yet read by: daily_event_counts"):
        partitions.partition_archive(
            month=date(2025, 1, 1),
            directory=tmp_path,
            projector_names=["daily_event_counts"],
            now=NOW,
        )
    with pytest.raises(partitions.ArchiveRefused, match="not over yet"):
        partitions.partition_archive(
            month=date(2025, 4, 1), directory=tmp_path, projector_names=[], now=NOW
        )


def test_an_archived_month_leaves_positions_checkpoints_and_idempotency_intact(months, tmp_path):
    store_id, other, appended = months
    name = "daily_event_counts"
    projectors.projector_catch_up(name=name)
    before = {s: checkpoint(name, s) for s in (store_id, other)}
    total = CartEvent.objects.filter(store_id__in=[store_id, other]).count()

    # when January is archived
    archive = partitions.partition_archive(
        month=date(2025, 1, 1), directory=tmp_path, projector_names=[name], now=NOW
    )

    # then its rows are in the archive file, counted and hashed in the manifest
    assert archive.rows >= 4
    manifest = json.loads((tmp_path / f"{archive.name}.json").read_text())
    assert manifest["rows"] == archive.rows
    with gzip.open(archive.path, "rt") as f:
        lines = f.read().splitlines()
    assert lines[0].split(",") == list(partitions.COLUMNS)
    assert len(lines) - 1 == archive.rows
    # and they left the log with their table, no row deleted from the others
    assert archive.name not in {p.name for p in partitions.partitions_list()}
    assert CartEvent.objects.filter(store_id__in=[store_id, other]).count() == total - 4
    # and positions and checkpoints are untouched: a catch-up reads nothing, the next append
    # takes the next store position
    assert {s: checkpoint(name, s) for s in (store_id, other)} == before
    assert projectors.projector_catch_up(name=name) == 0
    [later] = _append(store_id, "c-later", NOW, n=1)
    assert later.store_position == 7
    # and an archived event delivered again is still a duplicate, answered as first stored
    january = appended[(store_id, 1)][0]
    [again] = services.events_append(
        store_id=store_id,
        events=[_replay(january.event_id)],
        source=Source.server("test"),
        now=NOW,
    )
    assert (again.duplicate, again.position, again.store_position) == (
        True,
        january.position,
        january.store_position,
    )


def _replay(event_id):
    """The first event of the ``months`` fixture's January cart, as first sent."""
    event = new_event("cart.item_added", "c1", item("S0"))
    return services.NewEvent(
        event_id=event_id,
        cart=event.cart,
        type=event.type,
        schema_version=event.schema_version,
        occurred_at=event.occurred_at,
        data=event.data,
    )


def test_an_archive_is_restored_as_it_was(months, tmp_path):
    store_id, _, appended = months
    projectors.projector_catch_up(name="daily_event_counts")
    rows = list(
        CartEvent.objects.filter(store_id=store_id).order_by("store_position").values_list()
    )
    archive = partitions.partition_archive(
        month=date(2025, 2, 1),
        directory=tmp_path,
        projector_names=["daily_event_counts"],
        now=NOW,
    )
    assert CartEvent.objects.filter(store_id=store_id).count() == len(rows) - 2

    assert partitions.partition_restore(path=archive.path) == archive.rows

    assert (
        list(CartEvent.objects.filter(store_id=store_id).order_by("store_position").values_list())
        == rows
    )
    assert {_partition_of(r.position) for r in appended[(store_id, 2)]} == {archive.name}


def test_a_tampered_archive_is_refused_and_the_log_is_left_as_it_was(months, tmp_path):
    import gzip
    import json

    import pytest

    store_id, _, _ = months
    projectors.projector_catch_up(name="daily_event_counts")
    archive = partitions.partition_archive(
        month=date(2025, 2, 1),
        directory=tmp_path,
        projector_names=["daily_event_counts"],
        now=NOW,
    )
    left = CartEvent.objects.filter(store_id=store_id).count()
    text = gzip.decompress(archive.path.read_bytes()).decode()
    header, first, *rest = text.splitlines(keepends=True)
    archive.path.write_bytes(gzip.compress((header + "".join(rest)).encode()))  # a row gone

    with pytest.raises(ValueError, match="sha256 and row count"):
        partitions.partition_restore(path=archive.path)
    assert CartEvent.objects.filter(store_id=store_id).count() == left
    assert not any(p.name == archive.name and p.attached for p in partitions.partitions_list())

    # Another header: refused before anything is read into the database.
    archive.path.write_bytes(gzip.compress(("nope,columns\n" + first).encode()))
    with pytest.raises(ValueError, match="has columns"):
        partitions.partition_restore(path=archive.path)
    # The manifest's row count is what COPY wrote: the file's rows.
    manifest = archive.path.with_name(archive.name + ".json")
    assert json.loads(manifest.read_text())["rows"] == archive.rows == len(rest) + 1


def test_a_role_with_only_select_and_insert_on_the_log_makes_a_months_partition(committed_db):
    """The app's role in production owns nothing of the log (docs/architecture.md); the maker
    runs with its owner's rights (migration 0012), so appends and the scheduler still make
    months."""
    import uuid as uuid_module

    import psycopg
    from django.conf import settings
    from psycopg.conninfo import make_conninfo

    from config import embedded

    url = embedded.postgres_superuser_url()
    if url is None:
        pytest.skip("DATABASE_URL points at an external PostgreSQL: no superuser to make a role")
    role = f"app_{uuid_module.uuid4().hex[:8]}"
    dbname = str(settings.DATABASES["default"]["NAME"])
    with psycopg.connect(make_conninfo(url, dbname=dbname), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT SELECT, INSERT ON carts_cartevent TO {role}")
        # A role that may create objects where the owner's search path would look, planting a
        # better-matching to_char: the maker must not run it as the owner (migration 0014).
        admin.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
        try:
            with psycopg.connect(make_conninfo(url, dbname=dbname, user=role)) as app:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute("SELECT carts_cartevent_partition_ensure('2041-07-01')")
                app.rollback()
                admin.execute(
                    f"GRANT EXECUTE ON FUNCTION carts_cartevent_partition_ensure(date) TO {role}"
                )
                app.execute(
                    "CREATE FUNCTION public.to_char(date, text) RETURNS text LANGUAGE plpgsql "
                    "AS $$ BEGIN RAISE EXCEPTION 'hijacked as %', current_user; END $$"
                )
                app.commit()
                owner = app.execute(
                    "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = %s",
                    ["carts_cartevent"],
                ).fetchone()
                assert owner is not None and owner[0] != role
                [made] = app.execute(
                    "SELECT carts_cartevent_partition_ensure('2041-07-01')"
                ).fetchone()  # type: ignore[misc]
                app.commit()
            assert made == "carts_cartevent_y2041m07"
            assert made in {p.name for p in partitions.partitions_list() if p.attached}
        finally:
            admin.execute("DROP FUNCTION IF EXISTS public.to_char(date, text)")
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_an_archive_waits_for_an_append_still_open_in_its_month(committed_store, tmp_path):
    """An append whose transaction began in the month may commit after the month ended: the
    archive waits for it (and gives up, saying so, rather than queue every append behind it)."""
    import threading

    store, _ = committed_store
    at = datetime(2019, 3, 31, 23, 59, tzinfo=UTC)  # a month no other test uses
    partitions.partition_ensure(month=at.date())
    appended, release = threading.Event(), threading.Event()
    outcome: list[services.Appended] = []

    def writer() -> None:
        try:
            with transaction.atomic():
                outcome.extend(_append(store.pk, "late", at, n=1))
                appended.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert appended.wait(30)
        with pytest.raises(partitions.ArchiveRefused, match="still running"):
            partitions.partition_archive(
                month=date(2019, 3, 1), directory=tmp_path, projector_names=[], now=NOW
            )
    finally:
        release.set()
        thread.join(30)

    archive = partitions.partition_archive(
        month=date(2019, 3, 1), directory=tmp_path, projector_names=[], now=NOW
    )
    [late] = outcome
    with gzip.open(archive.path, "rt") as f:
        assert str(late.event_id) in f.read()


def test_a_cart_whose_first_month_was_archived_keeps_its_state_through_a_rebuild(store, tmp_path):
    from django.core.management import call_command

    from carts.models import CartState

    # given a cart with events in January and February, January archived
    partitions.partition_ensure(month=NOW.date())
    _append(store.pk, "spans", MONTHS[0])
    _append(store.pk, "spans", MONTHS[1])
    projectors.projector_catch_up(name="daily_event_counts")
    partitions.partition_archive(
        month=date(2025, 1, 1), directory=tmp_path, projector_names=["daily_event_counts"], now=NOW
    )
    before = CartState.objects.get(store=store, token="spans")
    assert (before.version, before.item_count) == (4, 4)

    # when the cart state is rebuilt from what the log still holds
    call_command("rebuild_projections", "cart_state")

    # then the cart was left as it was (refolding from version 3 would lose its items), and the
    # next append takes the next version
    after = CartState.objects.get(store=store, token="spans")
    assert (after.version, after.item_count, after.items) == (4, 4, before.items)
    [next_one] = _append(store.pk, "spans", NOW, n=1)
    assert next_one.version == 5
