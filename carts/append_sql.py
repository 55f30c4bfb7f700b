"""The statements of the append (carts/append.py): raw SQL, because the append is the hottest path
in the product and the ORM's per-statement and per-row overhead was most of its cost
(docs/benchmarks.md). Every array travels as one binary parameter (``%b``)."""

from __future__ import annotations

from collections.abc import Sequence

# The cart-state columns the fold writes, with their array types for UPDATE_CARTS (jsonb travels
# as text and is cast back).
STATE_ARRAYS = [
    ("version", "int"), ("status", "text"), ("currency", "text"), ("items", "text"),
    ("value", "bigint"), ("item_count", "int"), ("shopper_id", "text"), ("email", "text"),
    ("phone", "text"), ("consent", "text"), ("contact_source", "text"), ("timezone", "text"),
    ("locale", "text"),
    ("order_id", "text"), ("order_total", "bigint"), ("refunded", "bigint"),
    ("started_at", "timestamptz"), ("last_activity_at", "timestamptz"),
    ("checkout_started_at", "timestamptz"), ("converted_at", "timestamptz"),
    ("seen_at", "timestamptz"),
]  # fmt: skip
CART_STATE_FIELDS = [name for name, _ in STATE_ARRAYS]

# The score columns, written in the same statement as the state when a scorer is registered.
SCORE_ARRAYS = [
    ("features", "text"), ("score", "float8"), ("model_version", "text"), ("reasons", "text"),
    ("scored_at", "timestamptz"),
]  # fmt: skip

STATE_COLUMNS = ["id", "token", *CART_STATE_FIELDS, "features"]

INSERT_MISSING_CARTS = """
    INSERT INTO carts_cartstate (
        store_id, token, version, status, currency, items, value, item_count, shopper_id, email,
        phone, consent, timezone, locale, order_id, refunded, features, model_version, reasons)
    SELECT %s, t, 0, 'active', '', '[]', 0, 0, '', '', '', '{}', '', '', '', 0, '{}', '', '[]'
    FROM unnest(%b::text[]) AS t
    ON CONFLICT (store_id, token) DO NOTHING
"""
# now(): the transaction's time, the append's ``recorded_at`` unless the caller gives one.
LOCK_CARTS = f"""
    SELECT {", ".join(STATE_COLUMNS)}, now() FROM carts_cartstate
    WHERE token = ANY(%b::text[]) AND store_id + 0 = %s
    ORDER BY token
    FOR UPDATE
"""
# The cart lookup names the store as ``store_id + 0``, which no index can serve, so the only plan
# is one probe per token in the (token, store) unique index. Given a plain ``store_id = %s`` the
# planner may scan the store's whole range of a store-first index instead, when its statistics
# still think the store small: a store that grew fast since the last ANALYZE made that cost 80 ms
# a batch at 330k events, growing with the store.

# Event ids already stored: one probe per id in carts_eventkey's primary key (store_id,
# event_id), its only index, whatever the number of the log's monthly partitions.
EXISTING_EVENTS = """
    SELECT event_id, cart, version, position, body_hash, source, store_position
    FROM carts_eventkey
    WHERE store_id = %s AND event_id = ANY(%b::uuid[])
"""

_JSONB_STATE = {"items", "consent", "features", "reasons"}


def _update_carts_sql(arrays: Sequence[tuple[str, str]]) -> str:
    """Every changed cart in one statement (one row per cart; the arrays run in parallel)."""
    return (
        "UPDATE carts_cartstate AS c SET "
        + ", ".join(
            f"{name} = v.{name}::jsonb" if name in _JSONB_STATE else f"{name} = v.{name}"
            for name, _ in arrays
        )
        + " FROM unnest(%b::bigint[], "
        + ", ".join(f"%b::{kind}[]" for _, kind in arrays)
        + ") AS v(id, "
        + ", ".join(name for name, _ in arrays)
        + ") WHERE c.id = v.id"
    )


UPDATE_CARTS = _update_carts_sql(STATE_ARRAYS)
UPDATE_CARTS_SCORED = _update_carts_sql(STATE_ARRAYS + SCORE_ARRAYS)

# The write, in one statement (docs/adr/0003):
# 1. ``head`` reserves the batch's store positions by moving the store's row in carts_loghead;
#    its row lock is held until the append's transaction ends, so within a store positions are
#    taken, and become visible, in commit order. Other stores' appends never wait on it.
# 2. ``batch`` numbers the events (the ordinality) and takes their global positions.
# 3. ``keys`` records each event id once per store: its primary key refuses a second one (a
#    racing twin), which rolls the whole append back for a retry that reports a duplicate.
# 4. The events go into the month's partition of carts_cartevent.
# Parameters: store, count, count, the 11 arrays, store (keys), store and recorded_at (events).
INSERT_EVENTS = """
    WITH head AS (
        INSERT INTO carts_loghead AS h (store_id, position) VALUES (%s, %s)
        ON CONFLICT (store_id) DO UPDATE SET position = h.position + EXCLUDED.position
        RETURNING h.position
    ), batch AS MATERIALIZED (
        SELECT e.*, head.position - %s::bigint + e.ord AS store_position,
               nextval('carts_cartevent_position_seq') AS position
        FROM head, unnest(%b::uuid[], %b::text[], %b::int[], %b::text[], %b::int[], %b::text[],
                          %b::text[], %b::timestamptz[], %b::text[], %b::text[], %b::text[])
             WITH ORDINALITY
             AS e(event_id, cart, version, type, schema_version, data, shopper, occurred_at,
                  body_hash, source, source_ref, ord)
    ), keys AS (
        INSERT INTO carts_eventkey (
            store_id, event_id, cart, version, position, store_position, body_hash, source)
        SELECT %s, event_id, cart, version, position, store_position, body_hash, source
        FROM batch
    )
    INSERT INTO carts_cartevent (
        store_id, store_position, position, event_id, cart, version, type, schema_version, data,
        shopper, occurred_at, recorded_at, body_hash, source, source_ref)
    SELECT %s, store_position, position, event_id, cart, version, type, schema_version,
           data::jsonb, shopper::jsonb, occurred_at, %s::timestamptz, body_hash, source,
           source_ref
    FROM batch
    ORDER BY ord
    RETURNING event_id, position, store_position
"""
