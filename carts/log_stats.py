"""How far behind the log its readers are, and what they could not apply: cheap reads for
/metrics (config/metrics.py), a few index lookups each, no scan of the log.

``projector_lags`` is the one place that knows how a projector's progress compares with the
log's head: when positions change shape (per store), only it changes.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import Count

from carts import projectors
from carts.models import DeadLetter, ProjectorCheckpoint


def log_head() -> int:
    """The last position in the log (0 when it is empty): one backward index lookup."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(MAX(position), 0) FROM carts_cartevent")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def projector_lags() -> dict[str, int]:
    """Events each registered projector has still to read: the log's last position minus its
    checkpoint (a projector that never ran has read nothing), never below 0."""
    head = log_head()
    checkpoints = dict(ProjectorCheckpoint.objects.values_list("name", "position"))
    return {name: max(head - checkpoints.get(name, 0), 0) for name in sorted(projectors.REGISTRY)}


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
