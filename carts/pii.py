"""Shoppers' personal data in the log, encrypted with a key per shopper (crypto-shredding).

The log is append-only: no row is ever updated or deleted. So what it holds of a shopper (their
email address and phone number) is stored encrypted, with a key of their own (``ShopperKey``,
one per store and email address, in its own table, never in the log). Erasing the shopper
destroys the key (carts/privacy.py): the ciphertexts stay, and nothing can read them any more.

- On append (carts/append.py), each personal field of a new event is replaced by
  ``enc1:<key id>:<base64url(nonce | AES-256-GCM ciphertext)>``, the ciphertext bound to the
  store and the field (associated data), so it opens in no other store or field. A batch seals
  a value once per field: a cart's events repeat their envelope's address.
  The keys of a batch's shoppers are found or made in the append's first round trip.
- Readers of the log (``events_reveal``) get the fields back in clear, or ``None`` where the
  shopper was erased (or the ciphertext does not open): one query per batch of events.

Which fields are personal is declared here, per event type (``pii_fields_register`` is the
extension point for event types with more of them, e.g. platform webhooks' names and addresses);
the ``shopper`` envelope's ``email`` is always one. The idempotency hash (``body_hash``) of an
event with personal fields is its body's sha256 HMAC'd with the shopper's key
(``Sealer.keyed_hash``): while the key lives, a retry hashes the same; once it is destroyed, the
hash confirms no guess (and a retry of such an event is a duplicate by its id).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
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


Subjects = tuple[str | None, str | None]  # an event's (payload's, envelope's) shopper
NONE: Subjects = (None, None)


def _subject(email: Any, known: dict[str, str]) -> str | None:
    if not isinstance(email, str) or not email:
        return None
    subject = known.get(email)
    if subject is None:
        subject = known[email] = subject_of(email)
    return subject


def events_subjects(events: Iterable[_Event]) -> list[Subjects]:
    """Whose personal data each event's payload and envelope carry (None: none); an address
    repeated through a batch is hashed once."""
    known: dict[str, str] = {}
    found: list[Subjects] = []
    for event in events:
        spec = PAYLOAD_FIELDS.get(event.type)
        if spec is None and not event.shopper:
            found.append(NONE)
            continue
        found.append(
            (
                None if spec is None else _subject(event.data.get(spec.subject), known),
                _subject((event.shopper or {}).get("email"), known),
            )
        )
    return found


def subjects(events: Iterable[_Event]) -> list[str]:
    """The shoppers whose personal data a batch carries, sorted (the order keys are locked in)."""
    return sorted({s for pair in events_subjects(events) for s in pair if s is not None})


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


def _aad(store_id: int, place: str) -> bytes:
    """What a ciphertext is bound to: its store and its field (it opens nowhere else)."""
    return f"{store_id}|{place}".encode()


class Sealer:
    """Seals a batch's personal fields with the keys UPSERT_KEYS returned (subject -> (id, key)),
    one cipher per key."""

    def __init__(self, store_id: int, keys: Mapping[str, tuple[int, bytes]]) -> None:
        self.store_id = store_id
        self._keys = keys
        self._ciphers: dict[str, tuple[int, AESGCM]] = {}
        # A value sealed once per batch and place: a cart's events repeat their envelope's.
        self._sealed: dict[tuple[str, str, str], str] = {}
        # An envelope's JSON as posted -> as stored (the append's cache).
        self.envelopes: dict[str, str] = {}

    def _cipher(self, subject: str) -> tuple[int, AESGCM]:
        found = self._ciphers.get(subject)
        if found is None:
            key_id, key = self._keys[subject]
            found = self._ciphers[subject] = (key_id, AESGCM(key))
        return found

    def _seal(self, subject: str, value: str, place: str) -> str:
        done = self._sealed.get((subject, place, value))
        if done is not None:
            return done
        key_id, cipher = self._cipher(subject)
        nonce = os.urandom(NONCE_BYTES)
        sealed = cipher.encrypt(nonce, value.encode(), _aad(self.store_id, place))
        done = f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"
        self._sealed[(subject, place, value)] = done
        return done

    def sealed(
        self, event: _Event, subjects: Subjects
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The event's payload and envelope with their personal fields sealed; None for either
        that carries none (it is stored as it came)."""
        payload_subject, shopper_subject = subjects
        data: dict[str, Any] | None = None
        shopper: dict[str, Any] | None = None
        if payload_subject is not None:
            data = dict(event.data)
            for name in PAYLOAD_FIELDS[event.type].fields:
                value = data.get(name)
                if isinstance(value, str) and value:
                    data[name] = self._seal(payload_subject, value, f"data.{name}")
        if shopper_subject is not None and event.shopper is not None:
            shopper = dict(event.shopper)
            for name in SHOPPER_FIELDS:
                value = shopper.get(name)
                if isinstance(value, str) and value:
                    shopper[name] = self._seal(shopper_subject, value, f"shopper.{name}")
        return data, shopper

    def keyed_hash(self, body_hash: str, subjects: Subjects) -> str:
        """The idempotency hash of an event with personal data: its body's sha256, HMAC'd with
        each of its shoppers' keys, so that it dies with them (it can confirm no guess)."""
        digest = body_hash
        for subject in sorted({s for s in subjects if s is not None}):
            digest = hmac.digest(self._keys[subject][1], digest.encode(), "sha256").hex()
        return digest


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


# By the event's key (carts_eventkey: its store position), then the log's primary key.
_STORED_EVENT = """
    SELECT e.store_id, e.event_id, e.type, e.data, e.shopper
    FROM carts_eventkey k
    JOIN carts_cartevent e ON e.store_id = k.store_id AND e.store_position = k.store_position
    WHERE k.event_id = %s AND k.store_id = %s
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
                plain = _open(store_key[1], value, _aad(event.store_id, f"{container}.{name}"))
            (data if container == "data" else shopper)[name] = plain
        event.data = data
        event.shopper = shopper
