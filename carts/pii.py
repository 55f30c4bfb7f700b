"""Shoppers' personal data in the log, encrypted with a key per shopper (crypto-shredding).

The log is append-only: no row is ever updated or deleted. So what it holds of a shopper (their
email address and phone number) is stored encrypted, with a key of their own (``ShopperKey``,
one per store and email address, in its own table, never in the log). Erasing the shopper
destroys the key (carts/privacy.py): the ciphertexts stay, and nothing can read them any more.

- On append (carts/services.py), each personal field of a new event is replaced by
  ``enc1:<key id>:<base64url(nonce | AES-256-GCM ciphertext)>``, the ciphertext bound to the
  store, the event id and the field (associated data), so it cannot be moved to another event.
  The keys of a batch's shoppers are found or made in the append's first round trip.
- Readers of the log (``events_reveal``) get the fields back in clear, or ``None`` where the
  shopper was erased (or the ciphertext does not open): one query per batch of events.

Which fields are personal is declared here, per event type (``pii_fields_register`` is the
extension point for event types with more of them, e.g. platform webhooks' names and addresses);
the ``shopper`` envelope's ``email`` is always one. The idempotency hash (``body_hash``) of an
event with personal fields is taken over the event with each of them replaced by its HMAC under
the shopper's key (``masked``): while the key lives, a retry hashes the same; once it is
destroyed, the hash confirms no guess (and a retry of such an event is a duplicate by its id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carts import identity

log = logging.getLogger(__name__)

PREFIX = "enc1:"
KEY_BYTES = 32
NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class PiiFields:
    """The personal fields of an event type's payload, and the field naming whose they are."""

    fields: tuple[str, ...]
    subject: str  # a field holding the shopper's email address


# Event type -> its personal payload fields. The shopper envelope's email is personal in every
# event (SHOPPER_FIELDS).
PAYLOAD_FIELDS: dict[str, PiiFields] = {
    "checkout.contact_captured": PiiFields(("email", "phone"), "email"),
}
SHOPPER_FIELDS = ("email",)


def pii_fields_register(event_type: str, fields: Sequence[str], subject: str) -> None:
    """Declare an event type's personal payload fields (``subject``: its email field)."""
    if subject not in fields:
        raise ValueError(f"the subject field {subject!r} must be one of the personal fields")
    PAYLOAD_FIELDS[event_type] = PiiFields(tuple(fields), subject)


def subject_of(email: str) -> str:
    """The key's subject of a shopper: their address, hashed as the shopper key hashes it."""
    return f"email:{identity.email_digest(email)}"


class _Event(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...
    @property
    def shopper(self) -> dict[str, Any] | None: ...


def _payload_subject(event: _Event) -> str | None:
    spec = PAYLOAD_FIELDS.get(event.type)
    if spec is None:
        return None
    email = event.data.get(spec.subject)
    return subject_of(email) if isinstance(email, str) and email else None


def _shopper_subject(event: _Event) -> str | None:
    email = (event.shopper or {}).get("email")
    return subject_of(email) if isinstance(email, str) and email else None


def subjects(events: Iterable[_Event]) -> list[str]:
    """The shoppers whose personal data a batch carries, sorted (the order keys are locked in)."""
    found: set[str] = set()
    for event in events:
        for subject in (_payload_subject(event), _shopper_subject(event)):
            if subject is not None:
                found.add(subject)
    return sorted(found)


# Finds or makes each subject's live key, and marks it seen (the retention sweep's clock). Rows
# are locked in the order given (sorted), after the batch's carts, as every writer takes them.
UPSERT_KEYS = """
    INSERT INTO carts_shopperkey (store_id, subject, key, created_at, last_seen_at)
    SELECT %s, v.subject, v.key, COALESCE(%s::timestamptz, now()), COALESCE(%s::timestamptz, now())
    FROM unnest(%b::text[], %b::bytea[]) WITH ORDINALITY AS v(subject, key, n)
    ORDER BY v.n
    ON CONFLICT (store_id, subject) WHERE erased_at IS NULL
    DO UPDATE SET last_seen_at = GREATEST(carts_shopperkey.last_seen_at, EXCLUDED.last_seen_at)
    RETURNING subject, id, key
"""


def upsert_params(store_id: int, subjects: Sequence[str], now: Any) -> tuple[Any, ...]:
    """Parameters of UPSERT_KEYS: a fresh key for each subject, used if it has none yet."""
    fresh = [os.urandom(KEY_BYTES) for _ in subjects]
    return (store_id, now, now, list(subjects), fresh)


Keys = Mapping[str, tuple[int, bytes]]  # subject -> (key id, key)


def _aad(store_id: int, event_id: uuid.UUID | str, place: str) -> bytes:
    return f"{store_id}|{event_id}|{place}".encode()


def _seal(key_id: int, key: bytes, value: str, aad: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, value.encode(), aad)
    return f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def _replaced(
    event: _Event, keys: Keys, replace: Callable[[int, bytes, str, str], str]
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The event's payload and envelope with each personal field replaced by
    ``replace(key id, key, value, place)``, or None if it carries none."""
    data, shopper = event.data, event.shopper
    changed = False
    subject = _payload_subject(event)
    if subject is not None:
        key_id, key = keys[subject]
        data = dict(data)
        for name in PAYLOAD_FIELDS[event.type].fields:
            value = data.get(name)
            if isinstance(value, str) and value:
                data[name] = replace(key_id, key, value, f"data.{name}")
                changed = True
    subject = _shopper_subject(event)
    if subject is not None and shopper is not None:
        key_id, key = keys[subject]
        shopper = dict(shopper)
        for name in SHOPPER_FIELDS:
            value = shopper.get(name)
            if isinstance(value, str) and value:
                shopper[name] = replace(key_id, key, value, f"shopper.{name}")
                changed = True
    return (data, shopper) if changed else None


def encrypted(
    store_id: int, event_id: uuid.UUID, event: _Event, keys: Keys
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The event's payload and shopper envelope with their personal fields sealed, or None if it
    carries none."""
    return _replaced(
        event,
        keys,
        lambda key_id, key, value, place: _seal(
            key_id, key, value, _aad(store_id, event_id, place)
        ),
    )


def masked(
    store_id: int, event: _Event, keys: Keys
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The event with each personal field replaced by its HMAC under the shopper's key: what the
    idempotency hash is taken over, so that it dies with the key."""
    return _replaced(
        event,
        keys,
        lambda _key_id, key, value, place: (
            "hmac1:"
            + hmac.new(key, f"{store_id}|{place}|{value}".encode(), hashlib.sha256).hexdigest()
        ),
    )


# Revealing ----------------------------------------------------------------------------------------


class _StoredEvent(Protocol):
    store_id: int
    event_id: uuid.UUID
    type: str
    data: Any
    shopper: Any


def _sealed_places(event: _StoredEvent) -> list[tuple[str, str, str]]:
    """(container, field, sealed value) of each sealed personal field of a stored event."""
    places: list[tuple[str, str, str]] = []
    spec = PAYLOAD_FIELDS.get(event.type)
    if spec is not None and isinstance(event.data, dict):
        for name in spec.fields:
            value = event.data.get(name)
            if isinstance(value, str) and value.startswith(PREFIX):
                places.append(("data", name, value))
    if isinstance(event.shopper, dict):
        for name in SHOPPER_FIELDS:
            value = event.shopper.get(name)
            if isinstance(value, str) and value.startswith(PREFIX):
                places.append(("shopper", name, value))
    return places


def _key_id(sealed: str) -> int | None:
    head, _, _ = sealed[len(PREFIX) :].partition(":")
    return int(head) if head.isascii() and head.isdigit() and len(head) < 19 else None


def _open(key: bytes, sealed: str, aad: bytes) -> str | None:
    _, _, body = sealed[len(PREFIX) :].partition(":")
    try:
        raw = base64.urlsafe_b64decode(body.encode())
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad).decode()
    except (InvalidTag, ValueError, UnicodeDecodeError):
        return None


def sealed_key_ids(events: Iterable[_StoredEvent]) -> set[int]:
    """The ids of the keys the events' personal fields were sealed with."""
    return {
        key_id
        for event in events
        for _, _, value in _sealed_places(event)
        if (key_id := _key_id(value)) is not None
    }


_STORED_EVENT = """
    SELECT store_id, event_id, type, data, shopper FROM carts_cartevent
    WHERE event_id = %s AND store_id = %s
"""


def stored_event_erased(store_id: int, event_id: uuid.UUID) -> bool:
    """Whether the stored event was sealed with a key destroyed since (its shopper erased)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_STORED_EVENT, [event_id, store_id])
        row = cursor.fetchone()
    if row is None:
        return False
    stored = _Row(row[0], row[1], row[2], _json(row[3]), _json(row[4]))
    ids = sealed_key_ids([stored])
    keys = keys_by_id(ids)
    return any(keys.get(key_id, (None, None))[1] is None for key_id in ids)


@dataclass(slots=True)
class _Row:
    store_id: int
    event_id: uuid.UUID
    type: str
    data: Any
    shopper: Any


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


KEYS_BY_ID = "SELECT id, store_id, key FROM carts_shopperkey WHERE id = ANY(%s)"


def keys_by_id(ids: Iterable[int]) -> dict[int, tuple[int, bytes | None]]:
    """Key id -> (store id, key or None when erased), in one query."""
    from django.db import connection

    wanted = sorted(set(ids))
    if not wanted:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(KEYS_BY_ID, [wanted])
        return {
            row[0]: (row[1], None if row[2] is None else bytes(row[2])) for row in cursor.fetchall()
        }


def events_reveal(events: Sequence[_StoredEvent]) -> None:
    """Open the personal fields of stored events in place: the value, or None where the shopper
    was erased (or the ciphertext does not open: it is not this event's). Never raises for what
    the log holds; one query for the whole sequence, none when it holds no sealed field."""
    sealed = [(event, _sealed_places(event)) for event in events]
    sealed = [(event, places) for event, places in sealed if places]
    if not sealed:
        return
    keys = keys_by_id(
        key_id
        for _, places in sealed
        for _, _, value in places
        if (key_id := _key_id(value)) is not None
    )
    for event, places in sealed:
        data = dict(event.data) if isinstance(event.data, dict) else event.data
        shopper = dict(event.shopper) if isinstance(event.shopper, dict) else event.shopper
        for container, name, value in places:
            key_id = _key_id(value)
            store_key = keys.get(key_id) if key_id is not None else None
            plain = None
            if store_key is not None and store_key[0] == event.store_id and store_key[1]:
                plain = _open(
                    store_key[1], value, _aad(event.store_id, event.event_id, f"{container}.{name}")
                )
            (data if container == "data" else shopper)[name] = plain
        event.data = data
        event.shopper = shopper
