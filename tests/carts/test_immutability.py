"""The event log is append-only in the database itself: UPDATE, DELETE and TRUNCATE are refused.

The app's role is refused by revoked privileges and, should it grant them back to itself, by the
triggers; a superuser (who bypasses privileges) is still refused by the triggers.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from carts import services
from carts.models import CartEvent
from carts.sources import Source
from config import embedded
from tests.conftest import item, new_event

# Each statement touches only the given store's rows (TRUNCATE cannot be scoped; it is refused).
STATEMENTS = {
    "update": "UPDATE carts_cartevent SET data = '{}'::jsonb, version = 99 WHERE store_id = %s",
    "delete": "DELETE FROM carts_cartevent WHERE store_id = %s",
    "truncate": "TRUNCATE carts_cartevent",
}


def _append_one(store_id: int) -> CartEvent:
    [result] = services.events_append(
        source=Source.server("test"),
        store_id=store_id,
        events=[new_event("cart.item_added", "c1", item(unit_price=1299))],
    )
    return CartEvent.objects.get(position=result.position)


def _snapshot(row: CartEvent) -> tuple:
    fresh = CartEvent.objects.get(position=row.position)
    return (fresh.event_id, fresh.cart, fresh.version, fresh.type, fresh.data, fresh.body_hash)


def _run(sql: str, store_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, [store_id] if "%s" in sql else [])


@pytest.mark.parametrize("operation", list(STATEMENTS))
def test_app_role_cannot_change_the_log(store, operation):
    # given an event in the log
    row = _append_one(store.pk)
    before = _snapshot(row)

    # when the app's own role tries to change it (in a savepoint, so the test can go on)
    with (
        pytest.raises(DatabaseError, match="permission denied for table carts_cartevent"),
        transaction.atomic(),
    ):
        _run(STATEMENTS[operation], store.pk)

    # then the row is exactly as it was
    assert _snapshot(row) == before
    assert CartEvent.objects.filter(store=store).count() == 1


@pytest.mark.parametrize("operation", list(STATEMENTS))
def test_triggers_refuse_even_if_the_app_role_grants_itself_the_privilege(store, operation):
    # given an event in the log, and the app's role (the table owner) granting itself the
    # privileges back: only the triggers stand in the way now
    row = _append_one(store.pk)
    before = _snapshot(row)

    # when it tries to change the log (the GRANT is rolled back with the savepoint; the deferred
    # foreign-key checks of the insert run first, or TRUNCATE refuses for another reason)
    with (
        pytest.raises(DatabaseError, match="carts_cartevent is append-only") as refused,
        transaction.atomic(),
    ):
        _run("SET CONSTRAINTS ALL IMMEDIATE", store.pk)
        _run("GRANT UPDATE, DELETE, TRUNCATE ON carts_cartevent TO CURRENT_USER", store.pk)
        _run(STATEMENTS[operation], store.pk)

    # then the trigger refused it, and nothing changed
    assert f"{operation.upper()} is not allowed" in str(refused.value)
    assert _snapshot(row) == before
    assert CartEvent.objects.filter(store=store).count() == 1


@pytest.fixture
def superuser_conn(committed_db):
    import psycopg
    from psycopg.conninfo import make_conninfo

    url = embedded.postgres_superuser_url()
    if url is None:
        pytest.skip(
            "DATABASE_URL points at an external PostgreSQL: no superuser credentials to prove "
            "that the triggers stop a superuser too"
        )
    # The test database, not the embedded server's maintenance database.
    conninfo = make_conninfo(url, dbname=str(settings.DATABASES["default"]["NAME"]))
    with psycopg.connect(conninfo) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.commit()
        yield conn


@pytest.mark.parametrize("operation", list(STATEMENTS))
def test_triggers_refuse_a_superuser(committed_store, superuser_conn, operation):
    import psycopg

    # given a committed event (so the superuser's connection can see it)
    store, _ = committed_store
    row = _append_one(store.pk)
    before = _snapshot(row)
    is_superuser = superuser_conn.execute("SELECT current_setting('is_superuser')").fetchone()
    superuser_conn.rollback()
    assert is_superuser == ("on",)

    # when a superuser, who bypasses every privilege, tries to change the log
    sql = STATEMENTS[operation].replace("%s", str(int(store.pk)))
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            superuser_conn.execute(sql)
    finally:
        superuser_conn.rollback()  # were the trigger missing, the change is still not kept

    # then the trigger refused it, and the row is unchanged
    assert str(refused.value).startswith(
        f"carts_cartevent is append-only: {operation.upper()} is not allowed"
    )
    assert _snapshot(row) == before
    count = superuser_conn.execute(
        "SELECT count(*) FROM carts_cartevent WHERE store_id = %s", [store.pk]
    ).fetchone()
    superuser_conn.rollback()
    assert count == (1,)
