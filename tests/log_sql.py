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
    """Insert one event with raw SQL (no cart-state update); returns its position."""
    body = json.dumps(data)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO carts_cartevent (store_id, event_id, cart, version, type, schema_version,
                                         data, shopper, occurred_at, body_hash, source)
            VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, NULL, %s, %s, %s)
            RETURNING position
            """,
            [
                store_id,
                uuid.uuid4(),
                cart,
                version,
                type_,
                event_types.REGISTRY[type_].version,
                body,
                occurred_at,
                hashlib.sha256(body.encode()).hexdigest(),
                source,
            ],
        )
        return int(cursor.fetchone()[0])
