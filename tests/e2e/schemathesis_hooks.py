"""Schemathesis hooks for tests/e2e/test_schemathesis.py (loaded by `st` through the
SCHEMATHESIS_HOOKS environment variable).

One relation between parameters that OpenAPI cannot state: the metrics' ``start`` and ``end``
(each a date the schema describes) must be in order and at most 366 days apart. Schema-valid
cases that break it would be refused with 400 and reported as "schema-valid request rejected";
this keeps their ``start`` and sets ``end`` to it. Negative cases are left as generated.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import schemathesis


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if not case.operation.path.startswith("/api/v1/metrics/") or not case.query:
        return case
    meta = case.meta
    if meta is None or meta.generation.mode.is_negative:
        return case
    start = _day(case.query.get("start"))
    end = _day(case.query.get("end"))
    # Left out, end is the store's today: a start alone is taken as a one-day range.
    if start is not None and (end is None or not 0 <= (end - start).days < 366):
        case.query["end"] = start.isoformat()
    return case
