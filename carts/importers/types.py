"""What a format's mapper yields: events ready for the append service, or rows it had to skip."""

from __future__ import annotations

from dataclasses import dataclass

from carts.services import NewEvent


@dataclass(frozen=True, slots=True)
class Skipped:
    """A source row that maps to no event. ``reason`` is a short category (counted in summaries);
    ``detail`` says what exactly was wrong with this row."""

    row: int
    reason: str
    detail: str = ""


Mapped = NewEvent | Skipped
