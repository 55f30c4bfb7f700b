"""Events written into the log with SQL, past every check of the append service: what an older
version of the service may have accepted (poison events, browser orders from before provenance).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from carts import event_types

T = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def event_inject(
    store_id: int,
    cart: str,
    type_: str,
    data: dict[str, Any],
    *,
    version: int = 1,
    occurred_at: datetime = T,
    source: str = "unknown",
) -> int:
    """Insert one event with raw SQL (no cart-state update), at the store's next position (its
    log head moved, as the append service does: docs/adr/0003); returns its global position."""
    body = json.dumps(data)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH head AS (
                INSERT INTO carts_loghead AS h (store_id, position) VALUES (%(store)s, 1)
                ON CONFLICT (store_id) DO UPDATE SET position = h.position + 1
                RETURNING h.position
            ), event AS (
                INSERT INTO carts_cartevent (
                    store_id, store_position, event_id, cart, version, type, schema_version,
                    data, shopper, occurred_at, body_hash, source)
                SELECT %(store)s, head.position, %(id)s, %(cart)s, %(version)s, %(type)s,
                       %(schema)s, %(data)s::jsonb, NULL, %(at)s, %(hash)s, %(source)s
                FROM head
                RETURNING *
            ), keys AS (
                INSERT INTO carts_eventkey (
                    store_id, event_id, cart, version, position, store_position, body_hash,
                    source)
                SELECT store_id, event_id, cart, version, position, store_position, body_hash,
                       source
                FROM event
            )
            SELECT position FROM event
            """,
            {
                "store": store_id,
                "id": uuid.uuid4(),
                "cart": cart,
                "version": version,
                "type": type_,
                "schema": event_types.REGISTRY[type_].version,
                "data": body,
                "at": occurred_at,
                "hash": hashlib.sha256(body.encode()).hexdigest(),
                "source": source,
            },
        )
        return int(cursor.fetchone()[0])


def store_position(position: int) -> int:
    """The store position of the event at this global position."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT store_position FROM carts_cartevent WHERE position = %s", [position])
        return int(cursor.fetchone()[0])


def checkpoint(name: str, store_id: int) -> int:
    """The projector's checkpoint (a store position) for the store; 0 if it never read it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT position FROM carts_projectorcheckpoint WHERE name = %s AND store_id = %s",
            [name, store_id],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def checkpoint_set(name: str, store_id: int, position: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO carts_projectorcheckpoint (name, store_id, position, updated_at)
            VALUES (%s, %s, %s, now())
            ON CONFLICT (store_id, name) DO UPDATE SET position = EXCLUDED.position
            """,
            [name, store_id, position],
        )
