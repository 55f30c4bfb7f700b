"""Pydantic field types for events, and pydantic errors in the API's field-error shape.

The types accept what the DRF fields they replaced accepted, and clean it the same way: text is
stripped and may come as a number (``123`` is ``"123"``); integers may come as ``"5"`` or ``5.0``
but never as ``true`` or ``1.5``; URLs and email addresses are checked by Django's validators and
stored as sent (stripped); times without an offset are UTC. Unknown fields are refused (``STRICT``).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import EmailValidator, URLValidator
from django.utils.dateparse import parse_datetime
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from carts import money, projections

# For every schema here: unknown fields are errors, and numbers are accepted where text is due.
STRICT = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

# One amount of an event, and a line's quantity (what one item event may add to it): the cart
# fold's own bounds (carts/projections.py), so no single event is refused by one and not the other.
MAX_MONEY = projections.MAX_CART_VALUE
MAX_QUANTITY = projections.MAX_LINE_QUANTITY
# How long a page view may have lasted: one day.
MAX_DWELL_MS = 86_400_000
# A cart's version (int4 in the database).
MAX_VERSION = 2**31 - 1
# PostgreSQL refuses NUL in text and jsonb; every free-text field refuses it up front.
NO_NUL = r"^[^\x00]*$"
# Text that is not blank either: validation strips whitespace (Unicode White_Space, as pydantic's
# strip does) and then wants a character, so the schema says "a character other than those".
_WHITE_SPACE = r"\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = rf"^[^\x00]*[^\x00{_WHITE_SPACE}][^\x00]*$"
CART_TOKEN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"  # noqa: S105
LOCALE_PATTERN = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"
PHONE_PATTERN = r"^\+?[0-9 ()\-]{4,32}$"

# Messages for the patterns above, instead of pydantic's "String should match pattern '...'".
PATTERN_MESSAGES = {
    NO_NUL: "Null characters are not allowed.",
    NOT_BLANK: "Null characters are not allowed.",
    CART_TOKEN_PATTERN: (
        "1-128 characters: letters, digits and _ . : - (starting with a letter or digit)."
    ),
    LOCALE_PATTERN: "Expected a locale such as 'en' or 'pt-BR'.",
    PHONE_PATTERN: "Expected a phone number: 4-32 digits, spaces, brackets or dashes, "
    "optionally after a '+'.",
}


def text(max_length: int | None = None, *, blank: bool = False, pattern: str = NO_NUL) -> Any:
    """Constraints of a text field: stripped, not blank (unless ``blank``), at most ``max_length``
    characters after stripping, matching ``pattern`` (by default: no NUL)."""
    if pattern == NO_NUL and not blank:
        pattern = NOT_BLANK  # the same test once stripped, and the schema says "not blank"
    return StringConstraints(
        strip_whitespace=True, min_length=0 if blank else 1, max_length=max_length, pattern=pattern
    )


def _not_bool(value: Any) -> Any:
    # pydantic's lax int takes true as 1; DRF's IntegerField refused it, and so do we.
    if value is True or value is False:
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


NOT_BOOL = BeforeValidator(_not_bool)

Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY), NOT_BOOL]
Money = Annotated[int, Field(ge=0, le=MAX_MONEY, description="Integer minor units."), NOT_BOOL]


def _currency(value: str) -> str:
    if not money.is_currency(value):
        raise PydanticCustomError(
            "currency", "'{value}' is not an ISO 4217 currency code.", {"value": value}
        )
    return value


Currency = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(_currency),
    # The schema lists the codes validation takes (docs/api.md, "Contract").
    WithJsonSchema(
        {"type": "string", "enum": sorted(money.currency_codes()), "description": "ISO 4217"}
    ),
]


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise PydanticCustomError(
            "timezone", "'{value}' is not an IANA time zone.", {"value": value}
        ) from exc
    return value


Timezone = Annotated[
    str,
    text(64),
    AfterValidator(_timezone),
    WithJsonSchema(
        {"type": "string", "enum": sorted(zoneinfo.available_timezones()), "description": "IANA"}
    ),
]
Locale = Annotated[str, text(35, pattern=LOCALE_PATTERN)]
Phone = Annotated[str, text(pattern=PHONE_PATTERN)]
CartToken = Annotated[str, text(pattern=CART_TOKEN_PATTERN)]

_django_email = EmailValidator()
_django_url = URLValidator()


def _email(value: str) -> str:
    try:
        _django_email(value)
    except DjangoValidationError:
        raise PydanticCustomError("email", "Enter a valid email address.") from None
    return value


# A subset of what URLValidator accepts, in one regex: http(s), an ASCII host name of at most 253
# characters with a letter-only TLD, an optional port, then anything without whitespace. Most URLs
# match it, and skip the validator's urlsplit and its larger regex (which cost about 5 us).
_PLAIN_URL = re.compile(
    r"https?://"
    r"(?=[a-z0-9.-]{1,253}(?:[:/?#]|\Z))"  # the host name: at most 253 characters
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # first label
    r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"  # more labels
    r"\.[a-z]{2,63}"  # top-level domain
    r"(?::[0-9]{1,5})?"  # port
    r"(?:[/?#][^\s]*)?\Z",
    re.IGNORECASE | re.ASCII,
)


def _url(value: str) -> str:
    if _PLAIN_URL.match(value):
        return value
    try:
        _django_url(value)
    except DjangoValidationError:
        raise PydanticCustomError("url", "Enter a valid URL.") from None
    return value


Email = Annotated[
    str, text(254), AfterValidator(_email), Field(json_schema_extra={"format": "email"})
]
Url = Annotated[str, text(2048), AfterValidator(_url), Field(json_schema_extra={"format": "uri"})]

_TIMESTAMP_FORMAT = "Expected an ISO 8601 date and time, such as 2026-11-01T12:00:00Z."


def _timestamp(value: Any) -> datetime:
    """An ISO 8601 string (or datetime) as an aware UTC datetime; no offset means UTC."""
    parsed: datetime | None = None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
    if parsed is None:
        raise PydanticCustomError("datetime", _TIMESTAMP_FORMAT)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime", "Datetime value out of range.") from None


Timestamp = Annotated[
    datetime,
    PlainValidator(_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


@dataclass(frozen=True, slots=True)
class OccurredWindow:
    """The instants an event's ``occurred_at`` may name, both included: a window around the
    server's clock (``now`` from the edge), so that a client's clock can neither pin a cart's
    activity years ahead nor file it in a long-closed period, nor reach the ends of the calendar."""

    earliest: datetime
    latest: datetime

    @classmethod
    def around(cls, now: datetime, *, past: timedelta, future: timedelta) -> OccurredWindow:
        return cls(earliest=now - past, latest=now + future)

    def error(self, occurred_at: datetime) -> str | None:
        """The client-facing message when ``occurred_at`` is outside; None when inside."""
        if self.earliest <= occurred_at <= self.latest:
            return None
        return (
            f"Must be between {_iso(self.earliest)} and {_iso(self.latest)} "
            "(a window around the server's clock)."
        )


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# Errors ------------------------------------------------------------------------------------------

# Messages that name what the client sent (JSON), not what Python calls it.
_MESSAGES = {
    "extra_forbidden": "Unknown field.",
    "dict_type": "Expected a JSON object.",
    "model_type": "Expected a JSON object.",
    "model_attributes_type": "Expected a JSON object.",
    "list_type": "Expected a JSON array.",
    "string_unicode": "Surrogate characters are not allowed.",
    "uuid_type": "Expected a UUID string.",
}
# Errors about an object or list as a whole: they go under its "non_field_errors" key.
_WHOLE = {"dict_type", "model_type", "model_attributes_type", "list_type"}


def message(error: Any) -> str:
    """The client-facing message of one pydantic error (an ``ErrorDetails``): a sentence."""
    kind = error["type"]
    msg: str = error["msg"]
    if kind == "string_pattern_mismatch":
        msg = PATTERN_MESSAGES.get(error["ctx"]["pattern"], msg)
    elif kind in ("too_short", "too_long") and error.get("ctx", {}).get("field_type") == "List":
        # pydantic says "List should have at most 1000 items after validation, not 1001".
        msg = msg.replace(" after validation", "")
    else:
        msg = _MESSAGES.get(kind, msg)
    return msg if msg.endswith(".") else f"{msg}."


def field_errors(exc: ValidationError, *, skip: int = 0) -> dict[str, Any]:
    """``exc`` as nested field errors: ``{"data": {"quantity": ["..."]}}``.

    List indexes become string keys (``{"events": {"3": {...}}}``) and the first ``skip`` parts of
    each location are dropped. As with DRF, errors about an object or a list as a whole (not one
    of their fields or items: the body is not an object, the batch is empty) go under its
    ``non_field_errors`` key: ``{"events": {"non_field_errors": ["..."]}}``.
    """
    out: dict[str, Any] = {}
    for error in exc.errors(include_url=False):
        loc = error["loc"][skip:]
        if loc and error["input"] is None and error["type"] != "missing":
            add_error(out, loc, "This field may not be null.")
            continue
        if error["type"] in _WHOLE or error.get("ctx", {}).get("field_type") == "List":
            loc = (*loc, "non_field_errors")
        add_error(out, loc, message(error))
    return out


def add_error(out: dict[str, Any], loc: Iterable[str | int], msg: str) -> None:
    """Add one message at ``loc`` to nested field errors ``out``."""
    *parents, last = [str(part) for part in loc] or ["non_field_errors"]
    node = out
    for part in parents:
        child = node.setdefault(part, {})
        if isinstance(child, list):  # messages about the object itself, and now its fields too
            child = node[part] = {"non_field_errors": child}
        node = child
    existing = node.get(last)
    if isinstance(existing, dict):
        existing.setdefault("non_field_errors", []).append(msg)
    else:
        node.setdefault(last, []).append(msg)
