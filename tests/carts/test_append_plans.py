"""The append service's lookups stay index probes when a store outgrows its statistics.

A store that grew fast since the last ANALYZE looks small to the planner; given
``store_id = X AND event_id = ANY(...)`` it may then read the store's whole range of a
store-first index and filter it, which cost 80 ms a batch at 330k events and grows with the store.
The cart lock names the store as ``store_id + 0`` so the only plan is one probe per token; the
event-id lookup reads ``carts_eventkey``, whose only index is its primary key (store_id,
event_id), so the plan is one probe per id whatever the statistics say (docs/adr/0003).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from carts import append_sql, services
from carts.sources import Source
from tests.conftest import item, new_event

# The shape of the cart lookup before the fix, as a negative control.
OLD_LOCK = """
    SELECT id FROM carts_cartstate WHERE store_id = %s AND token = ANY(%s::text[])
"""


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def plan_of(sql: str, params: list[Any]) -> dict[str, Any]:
    """The query's executed plan. Sequential scans are off: in production the log has millions
    of rows, where a scan never wins; here the table is small."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        raw = cursor.fetchone()[0]
        cursor.execute("RESET enable_seqscan")
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]


def rows_filtered_out(sql: str, params: list[Any]) -> int:
    """Rows read and thrown away by the query's plan."""
    return sum(int(node.get("Rows Removed by Filter", 0)) for node in nodes(plan_of(sql, params)))


@pytest.fixture
def stale_statistics(store):
    """The store's log analysed while tiny, then grown well past it (autovacuum held off)."""
    with connection.cursor() as cursor:
        for table in ("carts_eventkey", "carts_cartstate"):
            cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        services.events_append(
            source=Source.server("test"),
            store_id=store.pk,
            events=[new_event("cart.item_added", "c-0", item())],
        )
        cursor.execute("ANALYZE carts_eventkey")
        cursor.execute("ANALYZE carts_cartstate")
    for batch in range(12):
        services.events_append(
            source=Source.server("test"),
            store_id=store.pk,
            events=[
                new_event("cart.item_added", f"c-{batch}-{n}", item(sku=f"S{n}"))
                for n in range(250)
            ],
        )
    return store  # the test's transaction is rolled back, ALTER TABLE included


def test_existing_events_lookup_probes_by_event_id(stale_statistics):
    store = stale_statistics
    ids = [uuid.uuid4() for _ in range(200)]

    sql = append_sql.EXISTING_EVENTS.replace("%b", "%s")
    assert rows_filtered_out(sql, [store.pk, ids]) == 0
    # One probe per id in the primary key, both columns as index conditions.
    [scan] = [n for n in nodes(plan_of(sql, [store.pk, ids])) if "Index" in n["Node Type"]]
    assert scan["Index Name"] == "carts_eventkey_pkey"
    assert "store_id" in scan["Index Cond"] and "event_id" in scan["Index Cond"]


def test_cart_lock_probes_by_token(stale_statistics):
    store = stale_statistics
    tokens = [f"c-3-{n}" for n in range(50)]
    assert rows_filtered_out(append_sql.LOCK_CARTS.replace("%b", "%s"), [tokens, store.pk]) == 0
    # The old shape reads the store's range and throws it away (the control proves the setup
    # really leaves the planner with stale statistics).
    assert rows_filtered_out(OLD_LOCK, [store.pk, tokens]) > 1000
