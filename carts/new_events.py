"""What is appended to the log (``NewEvent``) and what an append answers (``Appended``)."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A validated event about to be appended (payload as posted, at ``schema_version``)."""

    event_id: uuid.UUID
    cart: str
    type: str
    schema_version: int
    occurred_at: datetime
    data: dict[str, Any]
    shopper: dict[str, Any] | None = None
    expected_version: int | None = None

    def encoded(self) -> tuple[str, str, str | None]:
        """(body hash, payload JSON, shopper JSON): the JSON is canonical (sorted keys) and is
        both hashed and stored, so each event is serialised once."""
        data_json = canonical(self.data)
        shopper_json = None if self.shopper is None else canonical(self.shopper)
        # Byte for byte the canonical JSON of the whole body (its keys in sorted order).
        body = (
            f'{{"cart":{_json_str(self.cart)},"data":{data_json},'
            f'"occurred_at":{_json_str(self.occurred_at.astimezone(UTC).isoformat())},'
            f'"schema_version":{self.schema_version},'
            f'"shopper":{"null" if shopper_json is None else shopper_json},'
            f'"type":{_json_str(self.type)}}}'
        )
        return hashlib.sha256(body.encode()).hexdigest(), data_json, shopper_json

    def body_hash(self) -> str:
        return self.encoded()[0]


# What json.dumps does with a str (the C encoder), without its per-call overhead.
_json_str = encode_basestring_ascii


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True, slots=True)
class Appended:
    event_id: uuid.UUID
    cart: str
    version: int
    position: int
    duplicate: bool
    store_position: int = 0  # the event's place in its store's log (docs/adr/0003)
