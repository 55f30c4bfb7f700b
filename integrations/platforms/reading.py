"""Reading the platforms' JSON: what every adapter shares. A value we cannot read is a 400 naming
its place in the payload (``bad``), never a 500."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from carts import money
from carts.validation import MAX_MONEY
from integrations.facts import BadDelivery


def bad(field: str, message: str) -> BadDelivery:
    """A 400 naming the payload's field."""
    return BadDelivery(400, f"{field}: {message}", **{field: [message]})


def text(data: dict[str, Any], key: str, max_length: int) -> str:
    """A text field, stripped and cut to ``max_length``; "" when absent or not text."""
    value = data.get(key)
    return value.strip()[:max_length] if isinstance(value, str) else ""


def timestamp(data: dict[str, Any], key: str) -> datetime | None:
    """An ISO 8601 time, in UTC (one without an offset is UTC); None when absent."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise bad(key, "Expected an ISO 8601 date and time.")
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise bad(key, "Expected an ISO 8601 date and time.") from None
    if not 1970 <= at.year <= 9998:
        raise bad(key, "Expected a date between 1970 and 9998.")
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def decimal(value: Any, where: str) -> Decimal:
    """A decimal amount in major units (a number or a decimal string), finite and bounded."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise bad(where, "Expected a decimal amount.")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise bad(where, "Expected a decimal amount.") from None
    if not amount.is_finite() or amount.adjusted() > 15:
        raise bad(where, "Expected a decimal amount.")
    return amount


def minor_units(value: Any, currency: str, where: str) -> int:
    """A decimal amount in major units of ``currency``, in minor units within carts' bounds."""
    minor = money.to_minor_units(decimal(value, where), currency)
    if not 0 <= minor <= MAX_MONEY:
        raise bad(where, f"Expected an amount from 0 to {MAX_MONEY} minor units.")
    return minor
