"""Writes of the carts app: stores and their keys, and the one append service of the event log."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Protocol

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from carts import event_types, hints, keys, pii, projections
from carts import origins as origins_module
from carts.errors import EventIdConflict, EventRejected, VersionConflict
from carts.models import CartEvent, CartState, Store, StoreKey
from carts.sources import Source

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key that serialises the last step of every append (see docs/adr/0001).
LOG_APPEND_LOCK = 0x63617274  # "cart"
EVENTS_HINT_CHANNEL = "carts:events"


# Stores and keys ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreCredentials:
    store_id: int
    secret_key: str
    publishable_key: str
    webhook_secret: str


def _issue_keys(store: Store) -> tuple[str, str]:
    secret = keys.new_key(keys.SECRET_PREFIX)
    publishable = keys.new_key(keys.PUBLISHABLE_PREFIX)
    StoreKey.objects.bulk_create(
        [
            StoreKey(store=store, kind=kind, prefix=key[:10], key_hash=keys.hash_key(key))
            for kind, key in (
                (StoreKey.Kind.SECRET, secret),
                (StoreKey.Kind.PUBLISHABLE, publishable),
            )
        ]
    )
    return secret, publishable


def store_webhook_secret(*, store: Store) -> str:
    return keys.webhook_secret(
        secret_key=settings.SECRET_KEY, store_id=store.pk, nonce=store.webhook_secret_nonce
    )


@transaction.atomic
def store_create(*, name: str, domain: str = "") -> StoreCredentials:
    """Create a store and its keys. The keys are returned here once and never again."""
    store = Store.objects.create(name=name, domain=domain, webhook_secret_nonce=keys.new_nonce())
    secret, publishable = _issue_keys(store)
    return StoreCredentials(store.pk, secret, publishable, store_webhook_secret(store=store))


DEMO_STORE_NAME = "Demo store"
# pg_advisory_xact_lock key: two `make run` starting together create one demo store, not two.
DEMO_STORE_LOCK = 0x64656D6F  # "demo"


# What other apps add to the demo store (e.g. campaigns: an active demo campaign). carts imports no
# other app, so they register here from their AppConfig.ready().
_DEMO_STORE_HOOKS: list[Callable[[Store], None]] = []


def store_demo_hook_register(hook: Callable[[Store], None]) -> None:
    if hook not in _DEMO_STORE_HOOKS:
        _DEMO_STORE_HOOKS.append(hook)


@transaction.atomic
def store_demo_ensure(
    *, domain: str = "", origins: Sequence[str] = ()
) -> tuple[Store, StoreCredentials | None]:
    """The demo store, created on first use, with ``origins`` allowed and whatever the other
    apps add to it. Credentials come back only when it was created."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DEMO_STORE_LOCK])
    store = Store.objects.filter(name=DEMO_STORE_NAME).order_by("pk").first()
    creds = None
    if store is None:
        creds = store_create(name=DEMO_STORE_NAME, domain=domain)
        store = Store.objects.get(pk=creds.store_id)
    store_origins_add(store=store, origins=origins)
    for hook in _DEMO_STORE_HOOKS:
        hook(store)
    return store, creds


def store_origins_add(*, store: Store, origins: Sequence[str]) -> Store:
    """Allow these origins (normalised; ValueError for one that is not an origin)."""
    allowed = list(store.allowed_origins)
    for origin in origins:
        normal = origins_module.origin_normalise(origin)
        if normal not in allowed:
            allowed.append(normal)
    if allowed != store.allowed_origins:
        store.allowed_origins = allowed
        store.save(update_fields=["allowed_origins"])
    return store


def store_publishable_key_issue(*, store: Store) -> str:
    """One more publishable key for the store (publishable keys are public: the demo page
    embeds one). Returned once; stored hashed like every key."""
    key = keys.new_key(keys.PUBLISHABLE_PREFIX)
    StoreKey.objects.create(
        store=store,
        kind=StoreKey.Kind.PUBLISHABLE,
        prefix=key[:10],
        key_hash=keys.hash_key(key),
    )
    return key


@transaction.atomic
def store_keys_rotate(*, store: Store, now: datetime) -> StoreCredentials:
    """Revoke every live key of the store, replace the webhook secret, and issue new keys."""
    StoreKey.objects.filter(store=store, revoked_at__isnull=True).update(revoked_at=now)
    store.webhook_secret_nonce = keys.new_nonce()
    store.save(update_fields=["webhook_secret_nonce"])
    secret, publishable = _issue_keys(store)
    return StoreCredentials(store.pk, secret, publishable, store_webhook_secret(store=store))


# The event log -----------------------------------------------------------------------------------


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
        data_json = _canonical(self.data)
        shopper_json = None if self.shopper is None else _canonical(self.shopper)
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


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True, slots=True)
class Appended:
    event_id: uuid.UUID
    cart: str
    version: int
    position: int
    duplicate: bool


def cart_from_row(row: CartState) -> projections.Cart:
    """The fold's view of a cart-state row."""
    return _cart_from_values({name: getattr(row, name) for name in CART_STATE_FIELDS})


# The cart-state columns the fold writes, with their array types for _UPDATE_CARTS (jsonb
# travels as text and is cast back).
_STATE_ARRAYS = [
    ("version", "int"), ("status", "text"), ("currency", "text"), ("items", "text"),
    ("value", "bigint"), ("item_count", "int"), ("shopper_id", "text"), ("email", "text"),
    ("phone", "text"), ("consent", "text"), ("contact_source", "text"), ("timezone", "text"),
    ("locale", "text"),
    ("order_id", "text"), ("order_total", "bigint"), ("refunded", "bigint"),
    ("started_at", "timestamptz"), ("last_activity_at", "timestamptz"),
    ("checkout_started_at", "timestamptz"), ("converted_at", "timestamptz"),
    ("seen_at", "timestamptz"),
]  # fmt: skip
CART_STATE_FIELDS = [name for name, _ in _STATE_ARRAYS]


# Scoring hook --------------------------------------------------------------------------------
# The score is part of the cart-state projection, but scoring lives in ``recovery`` (which may
# import carts, never the other way). recovery registers its scorer when the app is ready; the
# append service then folds every event into the cart's feature accumulator and rescores each
# changed cart in the same transaction as the append.


@dataclass(frozen=True, slots=True)
class CartScore:
    score: float | None
    model_version: str
    reasons: list[dict[str, Any]]
    scored_at: datetime | None


class CartScorer(Protocol):
    def accumulate(
        self, acc: dict[str, Any], event: projections.FoldEvent
    ) -> dict[str, Any]:  # pure: the new accumulator
        ...

    def score(
        self, *, store_id: int, carts: Mapping[str, tuple[projections.Cart, dict[str, Any]]]
    ) -> dict[str, tuple[dict[str, Any], CartScore]]:
        """Score each cart (token -> (state, accumulator)) as of its last activity; may read in
        the caller's transaction (once for the whole batch) and return enriched accumulators
        (e.g. with the shopper's history, looked up once)."""
        ...


_scorer: CartScorer | None = None


def cart_scorer_set(scorer: CartScorer | None) -> None:
    """Register the scorer every append uses (None: carts are not scored)."""
    global _scorer
    _scorer = scorer


def cart_scorer_get() -> CartScorer | None:
    return _scorer


# The score columns, written in the same statement as the state when a scorer is registered.
_SCORE_ARRAYS = [
    ("features", "text"), ("score", "float8"), ("model_version", "text"), ("reasons", "text"),
    ("scored_at", "timestamptz"),
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Scored:
    acc: dict[str, Any]
    score: CartScore

    def columns(self) -> list[Any]:
        s = self.score
        return [_canonical(self.acc), s.score, s.model_version, _canonical(s.reasons), s.scored_at]


def fold_event(
    event: NewEvent | CartEvent, source: str | None = None, recorded_at: datetime | None = None
) -> projections.FoldEvent:
    """The fold's view of an event; ``source`` is its source kind and ``recorded_at`` the time
    the server records it (a stored event has its own of both)."""
    kind = source if source is not None else getattr(event, "source", "unknown")
    if recorded_at is None:
        recorded_at = getattr(event, "recorded_at", None)
    return projections.FoldEvent(
        type=event.type,
        data=event_types.upcast(event.type, event.schema_version, event.data),
        occurred_at=event.occurred_at,
        shopper=event.shopper,
        source=kind,
        recorded_at=recorded_at,
    )


@dataclass(frozen=True, slots=True)
class Reacting:
    """What a reaction sees: the request's carts after its events, and their scores."""

    store_id: int
    states: Mapping[str, projections.Cart]
    scores: Mapping[str, CartScore | None]
    accumulators: Mapping[str, dict[str, Any]]  # the scorer's, per cart ({} without a scorer)
    appended: Sequence[NewEvent]  # the request's new events (duplicates left out), in order
    source: Source  # who appended them (a reaction's own events are the system's)


# A reaction returns system events (recovery.*, campaign.*) for the request's carts, appended in
# the same transaction, under the same cart locks; e.g. the exit-intent offer decision.
Reaction = Callable[[Reacting], Sequence[NewEvent]]

# Standing reactions, registered by later apps for every append that carries one of their event
# types (campaigns: an order cancels the cart's pending steps in the order's own transaction).
_standing_reactions: list[tuple[frozenset[str], Reaction]] = []


def append_reaction_register(*, types: Sequence[str], reaction: Reaction) -> None:
    """Run ``reaction`` inside every append that carries an event of one of ``types``."""
    if any(r is reaction for _, r in _standing_reactions):
        return
    _standing_reactions.append((frozenset(types), reaction))


def events_append(
    *,
    store_id: int,
    events: Sequence[NewEvent],
    source: Source,
    react: Reaction | None = None,
    now: datetime | None = None,
) -> list[Appended]:
    """Append a batch to the log, all or nothing, and fold it into cart state in the same commit.

    ``source`` is who appends (carts/sources.py): stored with each event, and the fold's rules
    follow it (only trusted sources convert or refund a cart; a browser never replaces the contact
    a trusted source gave). Reactions' events are recorded as the system's.

    ``now`` is the server's time of the append, stored as every event's ``recorded_at`` and
    folded into the cart's ``seen_at``; None (every edge) takes the database's clock, as the
    column's default always did. Tests and benchmarks pass a time of their own.

    Idempotent per event id: an id seen before with the same body (and source kind) returns its
    original version and position and stores nothing; with another body, or the same id from
    another kind of source, it raises EventIdConflict. ``expected_version`` mismatches raise
    VersionConflict. Readers see positions in commit order (docs/adr/0001).
    """
    # When this call owns the transaction, its COMMIT travels in the last round trip instead of
    # one of its own: the log's append lock is held until commit, so every round trip it waits
    # for holds up every other append (bench/exit_intent.py found it held 99% of the time).
    own_transaction = not connection.in_atomic_block
    for attempt in range(3):
        try:
            # wrap_database_errors: raw psycopg errors surface as django.db errors, as elsewhere.
            with transaction.atomic(), connection.wrap_database_errors:
                results, appended = _append(
                    store_id, events, source, react, commit=own_transaction, now=now
                )
        except IntegrityError:
            # Two requests raced to insert the same new event id for different carts; the retry
            # sees the committed one and reports a duplicate or a conflict.
            if attempt == 2:
                raise
            continue
        if appended:
            last = max(r.position for r in results if not r.duplicate)
            transaction.on_commit(lambda last=last: _publish_hint(last))  # type: ignore[misc]
        return results
    raise AssertionError("unreachable")


_STATE_COLUMNS = ["id", "token", *CART_STATE_FIELDS, "features"]

_INSERT_MISSING_CARTS = """
    INSERT INTO carts_cartstate (
        store_id, token, version, status, currency, items, value, item_count, shopper_id, email,
        phone, consent, timezone, locale, order_id, refunded, features, model_version, reasons)
    SELECT %s, t, 0, 'active', '', '[]', 0, 0, '', '', '', '{}', '', '', '', 0, '{}', '', '[]'
    FROM unnest(%b::text[]) AS t
    ON CONFLICT (store_id, token) DO NOTHING
"""
# now(): the transaction's time, the append's ``recorded_at`` unless the caller gives one.
_LOCK_CARTS = f"""
    SELECT {", ".join(_STATE_COLUMNS)}, now() FROM carts_cartstate
    WHERE token = ANY(%b::text[]) AND store_id + 0 = %s
    ORDER BY token
    FOR UPDATE
"""
_EXISTING_EVENTS = """
    SELECT event_id, cart, version, position, body_hash, source FROM carts_cartevent
    WHERE event_id = ANY(%b::uuid[]) AND store_id + 0 = %s
"""
# Both lookups name the store as ``store_id + 0``, which no index can serve, so the only plan is
# one probe per token / event id in the (token, store) / (event_id, store) unique index. Given a
# plain ``store_id = %s`` the planner may scan the store's whole range of a store-first index
# instead, when its statistics still think the store small: a store that grew fast since the last
# ANALYZE made that cost 80 ms a batch at 330k events, growing with the store.
_JSONB_STATE = {"items", "consent", "features", "reasons"}


def _update_carts_sql(arrays: Sequence[tuple[str, str]]) -> str:
    """Every changed cart in one statement (one row per cart; the arrays run in parallel)."""
    return (
        "UPDATE carts_cartstate AS c SET "
        + ", ".join(
            f"{name} = v.{name}::jsonb" if name in _JSONB_STATE else f"{name} = v.{name}"
            for name, _ in arrays
        )
        + " FROM unnest(%b::bigint[], "
        + ", ".join(f"%b::{kind}[]" for _, kind in arrays)
        + ") AS v(id, "
        + ", ".join(name for name, _ in arrays)
        + ") WHERE c.id = v.id"
    )


_UPDATE_CARTS = _update_carts_sql(_STATE_ARRAYS)
_UPDATE_CARTS_SCORED = _update_carts_sql(_STATE_ARRAYS + _SCORE_ARRAYS)

_INSERT_EVENTS = """
    INSERT INTO carts_cartevent (
        store_id, event_id, cart, version, type, schema_version, data, shopper, occurred_at,
        recorded_at, body_hash, source, source_ref)
    SELECT %s, e.event_id, e.cart, e.version, e.type, e.schema_version, e.data::jsonb,
           e.shopper::jsonb, e.occurred_at, %s::timestamptz, e.body_hash, e.source, e.source_ref
    FROM unnest(%b::uuid[], %b::text[], %b::int[], %b::text[], %b::int[], %b::text[],
                %b::text[], %b::timestamptz[], %b::text[], %b::text[], %b::text[])
         AS e(event_id, cart, version, type, schema_version, data, shopper, occurred_at, body_hash,
              source, source_ref)
    RETURNING event_id, position
"""


def _json(value: Any) -> Any:
    # Django's psycopg setup leaves jsonb as text for JSONField to decode.
    return json.loads(value) if isinstance(value, str | bytes) else value


def _cart_from_values(v: Mapping[str, Any]) -> projections.Cart:
    return projections.Cart(
        version=v["version"],
        status=v["status"],
        currency=v["currency"],
        lines=tuple(projections.Line(**line) for line in _json(v["items"])),
        shopper_id=v["shopper_id"],
        email=v["email"],
        phone=v["phone"],
        consent=dict(_json(v["consent"])),
        contact_source=v["contact_source"],
        timezone=v["timezone"],
        locale=v["locale"],
        order_id=v["order_id"],
        order_total=v["order_total"],
        refunded=v["refunded"],
        started_at=v["started_at"],
        last_activity_at=v["last_activity_at"],
        checkout_started_at=v["checkout_started_at"],
        converted_at=v["converted_at"],
        seen_at=v["seen_at"],
    )


def _state_column(cart: projections.Cart, name: str) -> Any:
    if name == "items":
        return json.dumps([line.as_dict() for line in cart.lines])
    if name == "consent":
        return json.dumps(dict(cart.consent))
    return getattr(cart, name)  # value and item_count are derived properties of the fold


def _cart_columns(carts: Sequence[projections.Cart], row_ids: Sequence[int]) -> list[list[Any]]:
    """Parameters of _UPDATE_CARTS: the row ids, then one array per state column."""
    return [list(row_ids)] + [[_state_column(c, name) for c in carts] for name in CART_STATE_FIELDS]


def cart_states_update(
    cursor: psycopg.Cursor[Any],
    carts: Mapping[int, projections.Cart],
    scored: Mapping[int, Scored] | None = None,
) -> None:
    """Write folded states (row id -> state), and their scores when given, in one statement."""
    ids = sorted(carts)
    params = _cart_columns([carts[i] for i in ids], ids)
    if scored is None:
        cursor.execute(_UPDATE_CARTS, params)
        return
    per_cart = [scored[i].columns() for i in ids]
    params += [[row[k] for row in per_cart] for k in range(len(_SCORE_ARRAYS))]
    cursor.execute(_UPDATE_CARTS_SCORED, params)


def carts_score(
    scorer: CartScorer,
    *,
    store_id: int,
    carts: Mapping[str, tuple[projections.Cart, dict[str, Any]]],
    row_ids: Mapping[str, int],
) -> dict[int, Scored]:
    """The scorer's results keyed by cart-state row id, for cart_states_update."""
    return {
        row_ids[token]: Scored(acc, score)
        for token, (acc, score) in scorer.score(store_id=store_id, carts=carts).items()
    }


_SYSTEM = Source.system("reaction")


def _append(
    store_id: int,
    events: Sequence[NewEvent],
    source: Source,
    react: Reaction | None = None,
    commit: bool = False,
    now: datetime | None = None,
) -> tuple[list[Appended], int]:
    """The append itself, in the caller's transaction, in three round trips to PostgreSQL.

    Raw psycopg rather than the ORM: this is the hottest path in the product, and the ORM's
    per-statement and per-row overhead was most of its cost (docs/benchmarks.md).
    """
    encoded = [e.encoded() for e in events]
    first_index: dict[uuid.UUID, int] = {}
    for i, event in enumerate(events):
        first_index.setdefault(event.event_id, i)

    tokens = sorted({e.cart for e in events})
    scorer = _scorer
    # The shoppers whose personal data the batch carries: their keys (carts/pii.py).
    per_event = pii.events_subjects(events) if settings.CARTS_PII_ENCRYPTION else []
    subjects = sorted({s for pair in per_event for s in pair if s is not None})
    shopper_keys: dict[str, tuple[int, bytes]] = {}
    connection.ensure_connection()
    raw = connection.connection
    with (
        psycopg.Cursor(raw) as carts_cursor,
        psycopg.Cursor(raw) as seen_cursor,
        psycopg.Cursor(raw) as keys_cursor,
    ):
        # Round trip 1: create missing carts, lock every cart this request touches in token
        # order (so batches cannot deadlock), then read the ids already in the log (after the
        # cart locks, so a racing twin for the same cart has committed), and find or make the
        # keys of the batch's shoppers (locked after the carts, in subject order).
        with raw.pipeline():
            carts_cursor.execute(_INSERT_MISSING_CARTS, (store_id, tokens))
            carts_cursor.execute(_LOCK_CARTS, (tokens, store_id))
            seen_cursor.execute(_EXISTING_EVENTS, (list(first_index), store_id))
            if subjects:
                keys_cursor.execute(pii.UPSERT_KEYS, pii.upsert_params(store_id, subjects, now))
        if subjects:
            shopper_keys = {subject: (key_id, bytes(key)) for subject, key_id, key in keys_cursor}
        row_ids: dict[str, int] = {}
        states: dict[str, projections.Cart] = {}
        accs: dict[str, dict[str, Any]] = {}
        for *row, db_now in carts_cursor.fetchall():
            if now is None:
                now = db_now
            values = dict(zip(_STATE_COLUMNS, row, strict=True))
            row_ids[row[1]] = row[0]
            states[row[1]] = _cart_from_values(values)
            accs[row[1]] = _json(values["features"]) or {}
        existing = {row[0]: row for row in seen_cursor.fetchall()}

    # An event with personal data: its hash keyed by its shoppers' keys (so that it cannot
    # confirm a guessed address once they are destroyed), its fields sealed (carts/pii.py).
    sealer = pii.Sealer(store_id, shopper_keys) if shopper_keys else None
    keyed: set[int] = set()
    if sealer is not None:
        for i, pair in enumerate(per_event):
            if any(pair):
                encoded[i] = (sealer.keyed_hash(encoded[i][0], pair), encoded[i][1], encoded[i][2])
                keyed.add(i)
    hashes = [h for h, _, _ in encoded]

    # Within the batch: a repeated id is a duplicate of its first occurrence, or a conflict.
    for i, event in enumerate(events):
        j = first_index[event.event_id]
        if j != i and hashes[j] != hashes[i]:
            raise EventIdConflict(
                f"Event {event.event_id} appears twice in this request with different bodies.",
                event_id=str(event.event_id),
            )

    changed: set[str] = set()
    new: list[tuple[int, int]] = []  # (index in request, version)
    pending: list[tuple[int, int | None, tuple[Any, ...] | None]] = []
    for i, event in enumerate(events):
        seen = existing.get(event.event_id)
        if seen is not None:
            # Its shopper erased since, a stored event cannot be compared: its id stands.
            if seen[4] != hashes[i] and not (
                i in keyed and pii.stored_event_erased(store_id, event.event_id)
            ):
                raise EventIdConflict(
                    f"Event {event.event_id} was already stored with a different body.",
                    event_id=str(event.event_id),
                )
            if seen[5] != source.kind and seen[5] != "unknown":
                raise EventIdConflict(
                    f"Event {event.event_id} was already stored, sent by another source.",
                    event_id=str(event.event_id),
                )
            pending.append((i, None, seen))
            continue
        if first_index[event.event_id] != i:
            pending.append((i, None, None))  # duplicate of an earlier event in this batch
            continue
        state = states[event.cart]
        if event.expected_version is not None and event.expected_version != state.version:
            raise VersionConflict(
                f"Cart {event.cart} is at version {state.version}, not {event.expected_version}.",
                cart=event.cart,
                expected_version=event.expected_version,
                actual_version=state.version,
            )
        folded = fold_event(event, source.kind, now)
        try:
            state = projections.apply(state, folded)
        except projections.Rejected as exc:
            raise EventRejected(exc.message, index=i, field=exc.field) from exc
        states[event.cart] = state
        if scorer is not None:
            accs[event.cart] = scorer.accumulate(accs[event.cart], folded)
        changed.add(event.cart)
        new.append((i, state.version))
        pending.append((i, len(new) - 1, None))

    scored: dict[int, Scored] | None = None
    if new and scorer is not None:
        scored = carts_score(
            scorer,
            store_id=store_id,
            carts={t: (states[t], accs[t]) for t in sorted(changed)},
            row_ids=row_ids,
        )

    # Reactions: system events decided from the new states, appended in the same commit.
    inserts: list[tuple[NewEvent, int, tuple[str, str, str | None], Source]] = [
        (events[i], version, _sealed(sealer, events[i], encoded[i], per_event, i), source)
        for i, version in new
    ]
    reactions: list[Reaction] = []
    if new and _standing_reactions:
        new_types = {events[i].type for i, _ in new}
        reactions = [r for types, r in _standing_reactions if not types.isdisjoint(new_types)]
    if new and react is not None:
        reactions.append(react)
    if reactions:
        request_events = [events[i] for i, _ in new]
        reacting = Reacting(
            store_id=store_id,
            states={t: states[t] for t in changed},
            scores={t: (scored[row_ids[t]].score if scored is not None else None) for t in changed},
            accumulators={
                t: (scored[row_ids[t]].acc if scored is not None else {}) for t in changed
            },
            appended=request_events,
            source=source,
        )
        for extra in (e for reaction in reactions for e in reaction(reacting)):
            if extra.cart not in changed or not extra.type.startswith(
                event_types.SYSTEM_NAMESPACES
            ):
                raise ValueError(
                    f"A reaction appends system events to the request's carts: {extra}"
                )
            if pii.subjects([extra]):  # they would be stored unsealed
                raise ValueError(f"A reaction's events carry no personal data: {extra.type}")
            folded = fold_event(extra, _SYSTEM.kind, now)
            states[extra.cart] = projections.apply(states[extra.cart], folded)
            if scorer is not None and scored is not None:
                accs[extra.cart] = scorer.accumulate(accs[extra.cart], folded)
                row = row_ids[extra.cart]
                scored[row] = Scored(accs[extra.cart], scored[row].score)
            inserts.append((extra, states[extra.cart].version, extra.encoded(), _SYSTEM))

    positions: dict[uuid.UUID, int] = {}
    if new:
        columns = (
            store_id,
            now,
            [e.event_id for e, _, _, _ in inserts],
            [e.cart for e, _, _, _ in inserts],
            [version for _, version, _, _ in inserts],
            [e.type for e, _, _, _ in inserts],
            [e.schema_version for e, _, _, _ in inserts],
            [enc[1] for _, _, enc, _ in inserts],
            [enc[2] for _, _, enc, _ in inserts],
            [e.occurred_at for e, _, _, _ in inserts],
            [enc[0] for _, _, enc, _ in inserts],
            [str(src.kind) for _, _, _, src in inserts],
            [src.ref for _, _, _, src in inserts],
        )
        with psycopg.Cursor(raw) as cursor, psycopg.Cursor(raw) as insert_cursor:
            # Round trip 2: write the cart states, then take the log's append lock and insert.
            # Positions are taken under that lock, held to commit, so they become visible in
            # order (docs/adr/0001).
            with raw.pipeline():
                cart_states_update(cursor, {row_ids[t]: states[t] for t in changed}, scored)
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOG_APPEND_LOCK])
                insert_cursor.execute(_INSERT_EVENTS, columns)
                if commit:
                    # The caller's atomic() then finds the transaction committed (psycopg's
                    # commit() on an idle connection sends nothing) and runs on_commit hooks.
                    cursor.execute("COMMIT")
            positions = dict(insert_cursor.fetchall())

    results: list[Appended] = []
    for i, new_index, seen in pending:
        event = events[i]
        if new_index is not None:
            results.append(
                Appended(
                    event.event_id, event.cart, new[new_index][1], positions[event.event_id], False
                )
            )
        elif seen is not None:
            results.append(Appended(event.event_id, seen[1], seen[2], seen[3], True))
        else:
            twin = results[first_index[event.event_id]]  # earlier in this batch
            results.append(Appended(twin.event_id, twin.cart, twin.version, twin.position, True))
    return results, len(new)


def _sealed(
    sealer: pii.Sealer | None,
    event: NewEvent,
    encoded: tuple[str, str, str | None],
    per_event: Sequence[pii.Subjects],
    i: int,
) -> tuple[str, str, str | None]:
    """The event as stored: its body hash, and its JSON with personal fields encrypted."""
    subjects = per_event[i] if sealer is not None else pii.NONE
    if sealer is None or not any(subjects):
        return encoded
    body_hash, data_json, shopper_json = encoded
    envelope = None if shopper_json is None else sealer.envelopes.get(shopper_json)
    if envelope is not None and subjects[0] is None:  # a cart's events repeat their envelope
        return body_hash, data_json, envelope
    data, shopper = sealer.sealed(event, subjects)
    if shopper is not None and shopper_json is not None:
        envelope = sealer.envelopes[shopper_json] = _canonical(shopper)
    return (
        body_hash,
        data_json if data is None else _canonical(data),
        shopper_json if envelope is None else envelope,
    )


def _publish_hint(position: int) -> None:
    """Wake tailing projectors. A hint only: they poll anyway, so a lost hint loses nothing."""
    hints.publish(EVENTS_HINT_CHANNEL, position)
