"""The one append service of the event log (``events_append``) and the phases of an append.

An append, in the caller's transaction and two round trips to PostgreSQL:

1. ``_Batch.prepare``: encode each event once; find ids repeated inside the request.
2. ``_lock_and_load`` (round trip 1): create missing carts, lock them in token order, read the
   ids already stored and the batch's shopper keys.
3. ``_Batch.seal``: key the hashes of events with personal data (carts/pii.py).
4. ``_fold``: pure: duplicates and conflicts, expected versions, the new cart states.
5. ``_score``: the registered scorer (carts/extensions.py) rescores the changed carts.
6. ``_react``: standing and per-call reactions add system events under the same locks.
7. ``_write`` (round trip 2): the cart states, then the events at the store's next positions.
8. ``_results``: what each event of the request became.

Order (docs/adr/0003): each store's events have positions 1, 2, 3... taken under the store's
row in carts_loghead, whose lock is held until commit, so a follower reading one store by
``store_position > checkpoint`` never misses a late commit, and appends of different stores
never wait for each other.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from carts import append_sql as sql
from carts import event_types, extensions, hints, metrics, partitions, pii, projections
from carts.errors import EventIdConflict, EventRejected, VersionConflict
from carts.extensions import CartScore, CartScorer, Reacting, Reaction
from carts.models import CartEvent, CartState
from carts.new_events import Appended, NewEvent, canonical
from carts.sources import Source

log = logging.getLogger(__name__)

EVENTS_HINT_CHANNEL = "carts:events"
CART_STATE_FIELDS = sql.CART_STATE_FIELDS
_SYSTEM = Source.system("reaction")


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
    original version and positions and stores nothing; with another body, or the same id from
    another kind of source, it raises EventIdConflict. ``expected_version`` mismatches raise
    VersionConflict. Followers read each store in ``store_position`` order (docs/adr/0003).
    """
    # When this call owns the transaction, its COMMIT travels in the last round trip instead of
    # one of its own: the store's log head is locked until commit, so every round trip it waits
    # for holds up the store's other appends.
    own_transaction = not connection.in_atomic_block
    started = time.perf_counter()
    for attempt in range(4):
        try:
            # wrap_database_errors: raw psycopg errors surface as django.db errors, as elsewhere.
            with transaction.atomic(), connection.wrap_database_errors:
                results, appended = _append(
                    store_id, events, source, react, commit=own_transaction, now=now
                )
        except partitions.MonthMissing as missing:
            # The month of ``recorded_at`` has no partition yet (the scheduler makes them ahead;
            # an append with a time of its own may come first): make it, and append again.
            if attempt == 3:
                raise
            partitions.partition_ensure(month=missing.month)
            continue
        except IntegrityError as exc:
            # Two requests raced to store the same new event id (carts_eventkey refused the
            # second); the retry sees the committed one and reports a duplicate or a conflict.
            # Any other integrity error (a store that does not exist, ...) is no race: at once.
            if attempt == 3 or _constraint(exc) != EVENT_KEY_CONSTRAINT:
                raise
            continue
        if appended:
            transaction.on_commit(lambda: _publish_hint(store_id))
            _observe(source, appended, time.perf_counter() - started)
        return results
    raise AssertionError("unreachable")


# The phases ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Batch:
    """The request's events, each encoded once, and where each id first appears."""

    events: Sequence[NewEvent]
    encoded: list[tuple[str, str, str | None]]  # (body hash, data JSON, shopper JSON)
    first_index: dict[uuid.UUID, int]
    tokens: list[str]
    per_event: list[pii.Subjects]  # each event's shoppers (personal data) when encryption is on
    subjects: list[str]
    keyed: set[int] = field(default_factory=set)  # events whose hash is keyed (personal data)
    sealer: pii.Sealer | None = None

    @classmethod
    def prepare(cls, events: Sequence[NewEvent]) -> _Batch:
        first_index: dict[uuid.UUID, int] = {}
        for i, event in enumerate(events):
            first_index.setdefault(event.event_id, i)
        per_event = pii.events_subjects(events) if settings.CARTS_PII_ENCRYPTION else []
        return cls(
            events=events,
            encoded=[e.encoded() for e in events],
            first_index=first_index,
            tokens=sorted({e.cart for e in events}),
            per_event=per_event,
            subjects=sorted({s for pair in per_event for s in pair if s is not None}),
        )

    def seal(self, store_id: int, shopper_keys: dict[str, tuple[int, bytes]]) -> None:
        """Key the hash of each event with personal data by its shoppers' keys, so that it cannot
        confirm a guessed address once they are destroyed (carts/pii.py)."""
        if not shopper_keys:
            return
        self.sealer = pii.Sealer(store_id, shopper_keys)
        for i, pair in enumerate(self.per_event):
            if any(pair):
                body_hash, data_json, shopper_json = self.encoded[i]
                self.encoded[i] = (self.sealer.keyed_hash(body_hash, pair), data_json, shopper_json)
                self.keyed.add(i)

    def hash(self, i: int) -> str:
        return self.encoded[i][0]

    def stored_form(self, i: int) -> tuple[str, str, str | None]:
        """Event ``i`` as stored: its body hash, and its JSON with personal fields encrypted."""
        sealer = self.sealer
        subjects = self.per_event[i] if sealer is not None else pii.NONE
        if sealer is None or not any(subjects):
            return self.encoded[i]
        body_hash, data_json, shopper_json = self.encoded[i]
        envelope = None if shopper_json is None else sealer.envelopes.get(shopper_json)
        if envelope is not None and subjects[0] is None:  # a cart's events repeat their envelope
            return body_hash, data_json, envelope
        data, shopper = sealer.sealed(self.events[i], subjects)
        if shopper is not None and shopper_json is not None:
            envelope = sealer.envelopes[shopper_json] = canonical(shopper)
        return (
            body_hash,
            data_json if data is None else canonical(data),
            shopper_json if envelope is None else envelope,
        )


@dataclass(slots=True)
class _Loaded:
    """What round trip 1 found: the locked carts and the ids already stored."""

    now: datetime
    row_ids: dict[str, int]
    states: dict[str, projections.Cart]
    accs: dict[str, dict[str, Any]]
    existing: dict[uuid.UUID, tuple[Any, ...]]  # event id -> its carts_eventkey row
    shopper_keys: dict[str, tuple[int, bytes]]


def _lock_and_load(
    raw: psycopg.Connection[Any], store_id: int, batch: _Batch, now: datetime | None
) -> _Loaded:
    """Round trip 1: create missing carts, lock every cart this request touches in token order
    (so batches cannot deadlock), then read the ids already in the log (after the cart locks, so
    a racing twin for the same cart has committed), and find or make the keys of the batch's
    shoppers (locked after the carts, in subject order)."""
    with (
        psycopg.Cursor(raw) as carts_cursor,
        psycopg.Cursor(raw) as seen_cursor,
        psycopg.Cursor(raw) as keys_cursor,
    ):
        with raw.pipeline():
            carts_cursor.execute(sql.INSERT_MISSING_CARTS, (store_id, batch.tokens))
            carts_cursor.execute(sql.LOCK_CARTS, (batch.tokens, store_id))
            seen_cursor.execute(sql.EXISTING_EVENTS, (store_id, list(batch.first_index)))
            if batch.subjects:
                keys_cursor.execute(
                    pii.UPSERT_KEYS, pii.upsert_params(store_id, batch.subjects, now)
                )
        shopper_keys = (
            {subject: (key_id, bytes(key)) for subject, key_id, key in keys_cursor}
            if batch.subjects
            else {}
        )
        row_ids: dict[str, int] = {}
        states: dict[str, projections.Cart] = {}
        accs: dict[str, dict[str, Any]] = {}
        for *row, db_now in carts_cursor.fetchall():
            if now is None:
                now = db_now
            values = dict(zip(sql.STATE_COLUMNS, row, strict=True))
            row_ids[row[1]] = row[0]
            states[row[1]] = _cart_from_values(values)
            accs[row[1]] = _json(values["features"]) or {}
        existing = {row[0]: tuple(row) for row in seen_cursor.fetchall()}
    assert now is not None  # every batch touches at least one cart
    return _Loaded(now, row_ids, states, accs, existing, shopper_keys)


@dataclass(slots=True)
class _Folded:
    """The pure outcome of the fold: the carts' new states and what each event became."""

    changed: set[str] = field(default_factory=set)
    new: list[tuple[int, int]] = field(default_factory=list)  # (index in request, version)
    # Per event of the request: (index, index in ``new`` or None, stored eventkey row or None).
    pending: list[tuple[int, int | None, tuple[Any, ...] | None]] = field(default_factory=list)


def _fold(
    store_id: int,
    batch: _Batch,
    loaded: _Loaded,
    source: Source,
    scorer: CartScorer | None,
) -> _Folded:
    """Duplicates (same id and body: answered with the stored event) and conflicts, expected
    versions, and each new event folded into its cart's state (``loaded.states`` and
    ``loaded.accs`` are updated in place)."""
    events = batch.events
    # Within the batch: a repeated id is a duplicate of its first occurrence, or a conflict.
    for i, event in enumerate(events):
        j = batch.first_index[event.event_id]
        if j != i and batch.hash(j) != batch.hash(i):
            raise EventIdConflict(
                f"Event {event.event_id} appears twice in this request with different bodies.",
                event_id=str(event.event_id),
            )
    folded = _Folded()
    for i, event in enumerate(events):
        seen = loaded.existing.get(event.event_id)
        if seen is not None:
            # Its shopper erased since, a stored event cannot be compared: its id stands.
            if seen[4] != batch.hash(i) and not (
                i in batch.keyed and pii.stored_event_erased(store_id, event.event_id)
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
            folded.pending.append((i, None, seen))
            continue
        if batch.first_index[event.event_id] != i:
            folded.pending.append((i, None, None))  # duplicate of an earlier event in this batch
            continue
        state = loaded.states[event.cart]
        if event.expected_version is not None and event.expected_version != state.version:
            raise VersionConflict(
                f"Cart {event.cart} is at version {state.version}, not {event.expected_version}.",
                cart=event.cart,
                expected_version=event.expected_version,
                actual_version=state.version,
            )
        as_folded = fold_event(event, source.kind, loaded.now)
        try:
            state = projections.apply(state, as_folded)
        except projections.Rejected as exc:
            raise EventRejected(exc.message, index=i, field=exc.field) from exc
        loaded.states[event.cart] = state
        if scorer is not None:
            loaded.accs[event.cart] = scorer.accumulate(loaded.accs[event.cart], as_folded)
        folded.changed.add(event.cart)
        folded.new.append((i, state.version))
        folded.pending.append((i, len(folded.new) - 1, None))
    return folded


def _score(
    scorer: CartScorer | None, store_id: int, loaded: _Loaded, folded: _Folded
) -> dict[int, Scored] | None:
    if not folded.new or scorer is None:
        return None
    return carts_score(
        scorer,
        store_id=store_id,
        carts={t: (loaded.states[t], loaded.accs[t]) for t in sorted(folded.changed)},
        row_ids=loaded.row_ids,
    )


# An event about to be inserted: the event, its version, its stored form, its source.
_Insert = tuple[NewEvent, int, tuple[str, str, str | None], Source]


def _react(
    store_id: int,
    batch: _Batch,
    loaded: _Loaded,
    folded: _Folded,
    scored: dict[int, Scored] | None,
    scorer: CartScorer | None,
    source: Source,
    react: Reaction | None,
) -> list[_Insert]:
    """The request's new events, then the system events of the reactions that apply, folded
    into the same states (reactions' events are the system's)."""
    events = batch.events
    inserts: list[_Insert] = [
        (events[i], version, batch.stored_form(i), source) for i, version in folded.new
    ]
    reactions: list[Reaction] = []
    standing = extensions.standing_reactions()
    if folded.new and standing:
        new_types = {events[i].type for i, _ in folded.new}
        reactions = [r for types, r in standing if not types.isdisjoint(new_types)]
    if folded.new and react is not None:
        reactions.append(react)
    if not reactions:
        return inserts
    changed, states, row_ids = folded.changed, loaded.states, loaded.row_ids
    reacting = Reacting(
        store_id=store_id,
        states={t: states[t] for t in changed},
        scores={t: (scored[row_ids[t]].score if scored is not None else None) for t in changed},
        accumulators={t: (scored[row_ids[t]].acc if scored is not None else {}) for t in changed},
        appended=[events[i] for i, _ in folded.new],
        source=source,
    )
    for extra in (e for reaction in reactions for e in reaction(reacting)):
        if extra.cart not in changed or not extra.type.startswith(event_types.SYSTEM_NAMESPACES):
            raise ValueError(f"A reaction appends system events to the request's carts: {extra}")
        if pii.subjects([extra]):  # they would be stored unsealed
            raise ValueError(f"A reaction's events carry no personal data: {extra.type}")
        as_folded = fold_event(extra, _SYSTEM.kind, loaded.now)
        states[extra.cart] = projections.apply(states[extra.cart], as_folded)
        if scorer is not None and scored is not None:
            loaded.accs[extra.cart] = scorer.accumulate(loaded.accs[extra.cart], as_folded)
            row = row_ids[extra.cart]
            scored[row] = Scored(loaded.accs[extra.cart], scored[row].score)
        inserts.append((extra, states[extra.cart].version, extra.encoded(), _SYSTEM))
    return inserts


def _write(
    raw: psycopg.Connection[Any],
    store_id: int,
    loaded: _Loaded,
    folded: _Folded,
    scored: dict[int, Scored] | None,
    inserts: Sequence[_Insert],
    *,
    commit: bool,
) -> dict[uuid.UUID, tuple[int, int]]:
    """Round trip 2: write the cart states, then the events at the store's next positions, and
    (when the append owns its transaction) commit. Returns event id -> (position, store
    position)."""
    params = (
        store_id,
        len(inserts),
        len(inserts),
        [e.event_id for e, _, _, _ in inserts],
        [e.cart for e, _, _, _ in inserts],
        [version for _, version, _, _ in inserts],
        [e.type for e, _, _, _ in inserts],
        [e.schema_version for e, _, _, _ in inserts],
        [stored[1] for _, _, stored, _ in inserts],
        [stored[2] for _, _, stored, _ in inserts],
        [e.occurred_at for e, _, _, _ in inserts],
        [stored[0] for _, _, stored, _ in inserts],
        [str(src.kind) for _, _, _, src in inserts],
        [src.ref for _, _, _, src in inserts],
        store_id,
        store_id,
        loaded.now,
    )
    states = {loaded.row_ids[t]: loaded.states[t] for t in folded.changed}
    with psycopg.Cursor(raw) as cursor, psycopg.Cursor(raw) as insert_cursor:
        try:
            with raw.pipeline():
                cart_states_update(cursor, states, scored)
                insert_cursor.execute(sql.INSERT_EVENTS, params)
                if commit:
                    # The caller's atomic() then finds the transaction committed (psycopg's
                    # commit() on an idle connection sends nothing) and runs on_commit hooks.
                    cursor.execute("COMMIT")
        except psycopg.errors.CheckViolation as exc:
            if partitions.is_month_missing(exc):
                raise partitions.MonthMissing(loaded.now) from exc
            raise
        return {event_id: (pos, store_pos) for event_id, pos, store_pos in insert_cursor}


def _results(
    batch: _Batch, folded: _Folded, positions: Mapping[uuid.UUID, tuple[int, int]]
) -> list[Appended]:
    results: list[Appended] = []
    for i, new_index, seen in folded.pending:
        event = batch.events[i]
        if new_index is not None:
            position, store_position = positions[event.event_id]
            version = folded.new[new_index][1]
            results.append(
                Appended(event.event_id, event.cart, version, position, False, store_position)
            )
        elif seen is not None:
            results.append(Appended(event.event_id, seen[1], seen[2], seen[3], True, seen[6]))
        else:
            twin = results[batch.first_index[event.event_id]]  # earlier in this batch
            results.append(
                Appended(
                    twin.event_id, twin.cart, twin.version, twin.position, True, twin.store_position
                )
            )
    return results


def _append(
    store_id: int,
    events: Sequence[NewEvent],
    source: Source,
    react: Reaction | None = None,
    commit: bool = False,
    now: datetime | None = None,
) -> tuple[list[Appended], int]:
    """The append itself, in the caller's transaction: the phases above. Returns the results
    and how many of the request's events were new."""
    batch = _Batch.prepare(events)
    scorer = extensions.cart_scorer_get()
    connection.ensure_connection()
    raw = connection.connection
    loaded = _lock_and_load(raw, store_id, batch, now)
    batch.seal(store_id, loaded.shopper_keys)
    folded = _fold(store_id, batch, loaded, source, scorer)
    positions: dict[uuid.UUID, tuple[int, int]] = {}
    if folded.new:
        scored = _score(scorer, store_id, loaded, folded)
        inserts = _react(store_id, batch, loaded, folded, scored, scorer, source, react)
        positions = _write(raw, store_id, loaded, folded, scored, inserts, commit=commit)
    return _results(batch, folded, positions), len(folded.new)


EVENT_KEY_CONSTRAINT = "carts_eventkey_pkey"


def _constraint(exc: IntegrityError) -> str | None:
    """The name of the constraint PostgreSQL says the error broke, if it says."""
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


def _observe(source: Source, appended: int, seconds: float) -> None:
    """Count the append in the metrics (carts/metrics.py): events, and the call's latency."""
    metrics.append_observe(source_kind=str(source.kind), events=appended, seconds=seconds)


def _publish_hint(store_id: int) -> None:
    """Wake tailing projectors (the message names the store; they read every store's new
    events whatever it says). A hint only: they poll anyway, so a lost hint loses nothing."""
    hints.publish(EVENTS_HINT_CHANNEL, store_id)


# The cart state and its scores ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scored:
    acc: dict[str, Any]
    score: CartScore

    def columns(self) -> list[Any]:
        s = self.score
        return [canonical(self.acc), s.score, s.model_version, canonical(s.reasons), s.scored_at]


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


def cart_from_row(row: CartState) -> projections.Cart:
    """The fold's view of a cart-state row."""
    return _cart_from_values({name: getattr(row, name) for name in CART_STATE_FIELDS})


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
    """Parameters of UPDATE_CARTS: the row ids, then one array per state column."""
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
        cursor.execute(sql.UPDATE_CARTS, params)
        return
    per_cart = [scored[i].columns() for i in ids]
    params += [[row[k] for row in per_cart] for k in range(len(sql.SCORE_ARRAYS))]
    cursor.execute(sql.UPDATE_CARTS_SCORED, params)


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
