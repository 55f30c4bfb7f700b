"""How far behind the log its readers are, and what they could not apply: cheap reads for
/metrics (config/metrics.py), a few index lookups each, no scan of the log.

``projector_lags`` is the one place that knows how a projector's progress compares with the
log's head: when positions change shape (per store), only it changes.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import Count

from carts import projectors
from carts.models import DeadLetter


def log_head() -> int:
    """How many events the log holds: the sum of every store's head (carts_loghead), one row
    per store, no scan of the log."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(SUM(position), 0) FROM carts_loghead")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


_LAGS = """
    SELECT p.name, COALESCE(SUM(GREATEST(h.position - COALESCE(c.position, 0), 0)), 0)
    FROM unnest(%s::text[]) AS p(name)
    CROSS JOIN carts_loghead h
    LEFT JOIN carts_projectorcheckpoint c ON c.store_id = h.store_id AND c.name = p.name
    GROUP BY p.name
"""


def projector_lags() -> dict[str, int]:
    """Events each registered projector has still to read: for every store, its head minus the
    projector's checkpoint for it (a store it never read counts whole), summed (docs/adr/0003)."""
    names = sorted(projectors.REGISTRY)
    lags = dict.fromkeys(names, 0)
    with connection.cursor() as cursor:
        cursor.execute(_LAGS, [names])
        for name, lag in cursor.fetchall():
            lags[name] = int(lag)
    return lags


def dead_letters_open() -> dict[str, int]:
    """Open (unresolved) dead letters per projector: every registered projector, 0 when it has
    none, and any other reader that has some (a rebuild's). Counted on the partial index of
    open ones."""
    counts = dict.fromkeys(projectors.REGISTRY, 0)
    rows = (
        DeadLetter.objects.filter(resolved_at__isnull=True)
        .values_list("projector")
        .annotate(count=Count("id"))
        .order_by()
    )
    for name, count in rows:
        counts[name] = int(count)
    return dict(sorted(counts.items()))
