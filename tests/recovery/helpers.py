"""Test helpers: synthetic journeys appended through the one append service."""

from __future__ import annotations

import uuid

from carts import event_types, services
from carts.sources import Source
from recovery import synthetic

NAMESPACE = uuid.UUID("6b1d3c1e-3f0a-4a51-9b8e-5a0c7f2d9e11")


def append_journeys(*, store_id: int, carts: int, seed: int = 0, prefix: str = "") -> int:
    """Append ``carts`` synthetic journeys (recovery/synthetic.py) to the store's log."""
    batch: list[services.NewEvent] = []
    appended = 0
    for n, (token, event) in enumerate(synthetic.journeys(carts=carts, seed=seed)):
        version, payload = event_types.validate(event.type, None, dict(event.data))
        batch.append(
            services.NewEvent(
                event_id=uuid.uuid5(NAMESPACE, f"{store_id}/{prefix}{token}/{n}"),
                cart=prefix + token,
                type=event.type,
                schema_version=version,
                occurred_at=event.occurred_at,
                data=payload,
                shopper=None if event.shopper is None else dict(event.shopper),
            )
        )
        if len(batch) == 500:
            appended += _flush(store_id, batch)
    return appended + _flush(store_id, batch)


def _flush(store_id: int, batch: list[services.NewEvent]) -> int:
    if not batch:
        return 0
    try:
        results = services.events_append(
            store_id=store_id, events=batch, source=Source.server("test")
        )
    except Exception:
        # A journey whose remove names an already removed line is refused as a whole batch:
        # append one by one and skip the refused events (the log never holds them).
        results = []
        for event in batch:
            try:
                results += services.events_append(
                    store_id=store_id, events=[event], source=Source.server("test")
                )
            except Exception:  # noqa: S112
                continue
    batch.clear()
    return sum(not r.duplicate for r in results)
