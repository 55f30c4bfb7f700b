"""Domain errors of the carts app. config/exceptions.py maps them to HTTP responses."""

from __future__ import annotations

from typing import Any


class CartsError(Exception):
    code = "carts_error"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class EventIdConflict(CartsError):
    """The same event id was sent before (or earlier in the batch) with a different body."""

    code = "event_id_conflict"


class VersionConflict(CartsError):
    """``expected_version`` did not match the cart's version."""

    code = "version_conflict"


class EventRejected(CartsError):
    """An event that cannot apply to its cart; ``index`` is its place in the request."""

    code = "event_rejected"

    def __init__(self, message: str, *, index: int, field: str) -> None:
        super().__init__(message, index=index, field=field)
        self.index = index
        self.field = field


class StoreNotFound(CartsError):
    code = "store_not_found"


class EventInvalid(CartsError):
    """An event's payload or schema version does not fit its type. ``detail`` holds field errors
    keyed like the event object: ``{"data": {"quantity": ["..."]}}``."""

    code = "event_invalid"
