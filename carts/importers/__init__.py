"""Importers: turn another system's event export into NewEvents for the one append service.

A format maps rows to events without touching the database (``rees46.py``); ``replay.py`` streams
those events through ``services.events_append`` in batches. Event ids are derived from the rows, so
importing the same file twice stores nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO

from carts.importers import rees46
from carts.importers.types import Mapped, Skipped

__all__ = ["FORMATS", "Format", "Mapped", "RowCounter", "Skipped"]


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    read_rows: Callable[[IO[str]], Iterator[dict[str, str]]]
    map_rows: Callable[..., Iterator[Mapped]]


FORMATS: Mapping[str, Format] = {
    "rees46": Format("rees46", rees46.read_rows, rees46.map_rows),
}


class RowCounter:
    """Passes rows through and counts them: rows read, whatever they map to."""

    def __init__(self, rows: Iterable[dict[str, str]]) -> None:
        self._rows = iter(rows)
        self.count = 0

    def __iter__(self) -> Iterator[dict[str, str]]:
        for row in self._rows:
            self.count += 1
            yield row
