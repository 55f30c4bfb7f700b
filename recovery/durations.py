"""Durations written the way people type them: ``24h``, ``30m``, ``7d``, ``90s``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> timedelta:
    """``'24h'`` -> 24 hours. Raises ValueError naming the accepted forms."""
    match = _PATTERN.match(text.lower())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit, e.g. 24h, 30m, 7d."
        )
    value = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    if value <= timedelta(0):
        raise ValueError(f"{text!r}: the duration must be positive.")
    return value
