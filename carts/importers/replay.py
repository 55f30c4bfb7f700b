"""Stream mapped events through the one append service in batches, and count what happened."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from carts import services
from carts.errors import CartsError, StoreNotFound
from carts.importers.types import Mapped, Skipped
from carts.models import Store
from carts.sources import Source

BATCH_SIZE = 500
EXAMPLES_PER_REASON = 3


@dataclass(slots=True)
class ReplayReport:
    events_mapped: int = 0
    appended: Counter[str] = field(default_factory=Counter)  # by event type
    duplicates: Counter[str] = field(default_factory=Counter)  # by event type
    carts_created: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # rows, by reason
    rejected: Counter[str] = field(default_factory=Counter)  # events, by error code
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few details

    def _example(self, reason: str, text: str) -> None:
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES_PER_REASON:
            kept.append(text)


def replay(
    mapped: Iterable[Mapped], *, store_id: int, batch_size: int = BATCH_SIZE
) -> ReplayReport:
    """Append every mapped event to the store's log, ``batch_size`` at a time.

    A batch the service refuses (an event that cannot apply, an id stored with another body) is
    retried event by event, so only the offending events are lost; they are counted as rejected.
    Safe to run again: events already in the log count as duplicates and store nothing.
    """
    if not Store.objects.filter(pk=store_id).exists():
        raise StoreNotFound(f"No store with id {store_id}.", store_id=store_id)
    report = ReplayReport()
    batch: list[services.NewEvent] = []
    for item in mapped:
        if isinstance(item, Skipped):
            report.skipped[item.reason] += 1
            report._example(item.reason, f"row {item.row}: {item.detail}".rstrip(": "))
            continue
        report.events_mapped += 1
        batch.append(item)
        if len(batch) >= batch_size:
            _append(store_id, batch, report)
            batch = []
    if batch:
        _append(store_id, batch, report)
    return report


def _append(store_id: int, batch: Sequence[services.NewEvent], report: ReplayReport) -> None:
    try:
        results = services.events_append(
            store_id=store_id, events=batch, source=Source.server("import")
        )
    except CartsError:
        for event in batch:
            try:
                [result] = services.events_append(
                    store_id=store_id, events=[event], source=Source.server("import")
                )
            except CartsError as exc:
                report.rejected[exc.code] += 1
                report._example(exc.code, f"{event.type} {event.event_id}: {exc.message}")
            else:
                _count(report, event, result)
        return
    for event, result in zip(batch, results, strict=True):
        _count(report, event, result)


def _count(report: ReplayReport, event: services.NewEvent, result: services.Appended) -> None:
    if result.duplicate:
        report.duplicates[event.type] += 1
        return
    report.appended[event.type] += 1
    if result.version == 1:
        report.carts_created += 1
