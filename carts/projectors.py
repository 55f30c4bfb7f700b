"""Projectors: named read models that tail the log, each store from its own checkpoint.

A projector's rows and its checkpoint for a store are written in one transaction, so a crash never
applies a batch twice or skips one. Readers take a store's events in ``store_position`` order,
which is the store's commit order (docs/adr/0003), so ``store_position > checkpoint`` never misses
a late commit. Runners are woken by a Redis hint but are correct by polling alone. Any projector
can be rebuilt from the start of the log.

Several runners share the work (``ProjectorRunner``): the stores of each projector are split into
PROJECTOR_PARTITIONS partitions (store id modulo that number), and each partition is leased to
one runner at a time in ``carts_projectorlease``. A runner renews its leases on every turn; when
it dies, another takes its partitions over once they expire (PROJECTOR_LEASE_SECONDS). Leases
spread the work; correctness does not depend on them: a store's checkpoint row is locked for each
batch, so two runners can never apply the same events.

Readers are total: an event that the log accepted never stops one. A batch is applied under a
savepoint; when ``apply`` raises, the batch is applied again one event at a time, each under a
savepoint of its own, and an event that still raises is recorded as a ``DeadLetter`` and skipped
(docs/operations.md, "Dead letters"). A rebuild tries every event again: those that now apply are
resolved, those that still fail are recorded again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models.functions import Now

from carts import metrics, pii, selectors
from carts.models import CartEvent, CartState, DailyEventCount, DeadLetter, ProjectorCheckpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Projector:
    """``apply`` folds a batch of events (of one store, in store-position order) into the read
    model inside the caller's transaction; ``reset`` empties it. Both run in the same transaction
    as the checkpoint update."""

    name: str
    apply: Callable[[Sequence[CartEvent]], None]
    reset: Callable[[], None]
    # Whether it reads shoppers' personal fields: it is then given them in clear (None where the
    # shopper was erased, carts/pii.py); others see them sealed and pay nothing to open them.
    personal: bool = False


REGISTRY: dict[str, Projector] = {}

# Advisory lock namespace ("proj"): each batch of a projector takes its key in shared mode, a
# rebuild in exclusive mode, so a rebuild waits for running batches and holds new ones off.
_REBUILD_LOCK = 0x70726F6A


def _lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) - 2**31  # a signed int4


def _events_after(
    projector: Projector, store_id: int, position: int, limit: int
) -> list[CartEvent]:
    events = list(selectors.store_events_after(store_id=store_id, position=position, limit=limit))
    if projector.personal:
        pii.events_reveal(events)
    return events


def register(projector: Projector) -> Projector:
    REGISTRY[projector.name] = projector
    return projector


def partition_count() -> int:
    return max(1, int(getattr(settings, "PROJECTOR_PARTITIONS", 16)))


def _checkpoint_for_update(name: str, store_id: int) -> ProjectorCheckpoint:
    ProjectorCheckpoint.objects.bulk_create(
        [ProjectorCheckpoint(name=name, store_id=store_id, position=0)], ignore_conflicts=True
    )
    return ProjectorCheckpoint.objects.select_for_update().get(name=name, store_id=store_id)


def _batch_lock(name: str, *, exclusive: bool = False, wait: bool = True) -> bool:
    """The projector's lock, in the caller's transaction: exclusive for a rebuild, shared for a
    batch. Without ``wait``, a batch that would wait for a rebuild gets False instead."""
    if exclusive:
        fn = "pg_advisory_xact_lock"
    else:
        fn = "pg_advisory_xact_lock_shared" if wait else "pg_try_advisory_xact_lock_shared"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {fn}(%s, %s)", [_REBUILD_LOCK, _lock_key(name)])
        row = cursor.fetchone()
    if exclusive or wait:
        return True  # the blocking forms return only once they hold it
    return bool(row and row[0])


class RebuildRunning(Exception):
    """The projector is being rebuilt: a runner leaves it for this turn (its other projectors go
    on)."""


# Least recently served first (a store never read before all): a turn that cannot serve every
# store serves next time those it left, so no store waits behind busier ones.
_STORES_BEHIND = """
    SELECT h.store_id FROM carts_loghead h
    LEFT JOIN carts_projectorcheckpoint c ON c.store_id = h.store_id AND c.name = %s
    WHERE h.position > COALESCE(c.position, 0) {parts}
    ORDER BY c.updated_at NULLS FIRST, h.store_id
"""


def stores_behind(name: str, parts: Sequence[int] | None = None) -> list[int]:
    """The stores with events the projector has not read (in ``parts`` when given), least
    recently served first."""
    sql = _STORES_BEHIND.format(
        parts="" if parts is None else "AND h.store_id %% %s = ANY(%s::int[])"
    )
    params: list[Any] = [name] if parts is None else [name, partition_count(), list(parts)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


# -- dead letters ---------------------------------------------------------------------------------

# Failures that say nothing about the event (the database went away, a deadlock, a cancelled
# statement): they stop the batch, which is retried as a whole later, instead of dead-lettering
# events that would apply a moment after.
TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
ERROR_CHARS = 2000


def dead_letter_record(*, projector: str, event: CartEvent, error: BaseException) -> None:
    """Record (or re-open) the dead letter of ``event`` for ``projector``, in the caller's
    transaction, and log it at ERROR with its position."""
    message = f"{type(error).__name__}: {error}"[:ERROR_CHARS]
    log.error(
        "projector %s: event at position %d (%s, store %s, cart %s) dead-lettered: %s",
        projector,
        event.position,
        event.type,
        event.store_id,
        event.cart,
        message,
        exc_info=error,
    )
    DeadLetter.objects.bulk_create(
        [
            DeadLetter(
                projector=projector,
                position=event.position,
                store_id=event.store_id,
                cart=event.cart,
                event_type=event.type,
                error=message,
                resolved_at=None,
            )
        ],
        update_conflicts=True,
        unique_fields=["projector", "position"],
        update_fields=["store_id", "cart", "event_type", "error", "resolved_at"],
    )


def _dead_letters_resolve(name: str) -> None:
    """Resolve the projector's open dead letters: a rebuild tries their events again and
    re-opens those that still fail (in the same transaction)."""
    DeadLetter.objects.filter(projector=name, resolved_at__isnull=True).update(resolved_at=Now())


def _apply_total(projector: Projector, events: Sequence[CartEvent]) -> int:
    """Apply ``events`` to the projector, dead-lettering those it cannot apply. Returns how many
    were dead-lettered. Raises only TRANSIENT errors (and errors recording a dead letter)."""
    try:
        with transaction.atomic():
            projector.apply(events)
        return 0
    except TRANSIENT:
        raise
    except Exception as exc:
        if len(events) == 1:
            dead_letter_record(projector=projector.name, event=events[0], error=exc)
            return 1
        log.warning(
            "projector %s: the batch at positions %d-%d failed (%s: %s); applying it one event "
            "at a time",
            projector.name,
            events[0].position,
            events[-1].position,
            type(exc).__name__,
            exc,
        )
    dead = 0
    for event in events:
        try:
            with transaction.atomic():
                projector.apply([event])
        except TRANSIENT:
            raise
        except Exception as exc:
            dead_letter_record(projector=projector.name, event=event, error=exc)
            dead += 1
    return dead


def _store_catch_up(
    projector: Projector,
    store_id: int,
    batch_size: int,
    max_batches: int | None,
    wait: bool = True,
) -> tuple[int, int]:
    """Apply the store's events after its checkpoint, one transaction per batch. Returns (events
    read, batches). Without ``wait``, raises RebuildRunning instead of waiting for a rebuild."""
    read = batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic():
            if not _batch_lock(projector.name, wait=wait):
                raise RebuildRunning(projector.name)
            checkpoint = _checkpoint_for_update(projector.name, store_id)
            events = _events_after(projector, store_id, checkpoint.position, batch_size)
            if not events:
                break
            _apply_total(projector, events)
            checkpoint.position = events[-1].store_position
            checkpoint.save(update_fields=["position", "updated_at"])
        read += len(events)
        batches += 1
    return read, batches


def projector_catch_up(
    *,
    name: str,
    batch_size: int = 1000,
    max_batches: int | None = None,
    parts: Sequence[int] | None = None,
    deadline: float | None = None,
    wait: bool = True,
) -> int:
    """Apply every event after the checkpoints, store by store, one transaction per batch
    (``max_batches`` in all). Returns events read (the checkpoint is past each of them: applied,
    or dead-lettered when it cannot apply). ``parts``: only the stores of these partitions.

    With a ``deadline`` (time.monotonic()), a runner's turn: each store behind gets one batch,
    least recently served first, until the deadline; stores left wait for the next turn, at the
    front. Without ``wait``, raises RebuildRunning rather than wait for a rebuild.

    Safe to run in several processes: each store's checkpoint row lock makes them take turns.
    """
    projector = REGISTRY[name]
    read = batches = 0
    per_store = 1 if deadline is not None else None
    for store_id in stores_behind(name, parts):
        left = None if max_batches is None else max_batches - batches
        if left is not None and left <= 0:
            break
        limit = per_store if left is None else (left if per_store is None else min(left, per_store))
        store_read, store_batches = _store_catch_up(projector, store_id, batch_size, limit, wait)
        read += store_read
        batches += store_batches
        if deadline is not None and time.monotonic() > deadline:
            break  # at least one store served a turn
    return read


def projector_rebuild(*, name: str, batch_size: int = 5000) -> int:
    """Empty the read model and replay the whole log into it, in one transaction.

    Readers see the old model until the rebuilt one commits; the projector's runners wait for it
    (its batches take the projector's lock in shared mode, the rebuild in exclusive mode) and go
    on from the rebuilt checkpoints. The projector's open dead letters are resolved, and those
    whose events still fail are recorded again. Returns events read.
    """
    projector = REGISTRY[name]
    read = 0
    with transaction.atomic():
        _batch_lock(name, exclusive=True)
        _dead_letters_resolve(name)
        projector.reset()
        with connection.cursor() as cursor:
            cursor.execute("SELECT store_id FROM carts_loghead ORDER BY store_id")
            stores = [row[0] for row in cursor.fetchall()]
        for store_id in stores:
            checkpoint = _checkpoint_for_update(name, store_id)
            position = 0
            while True:
                events = _events_after(projector, store_id, position, batch_size)
                if not events:
                    break
                _apply_total(projector, events)
                position = events[-1].store_position
                read += len(events)
            checkpoint.position = position
            checkpoint.save(update_fields=["position", "updated_at"])
    return read


def projectors_catch_up_all(*, batch_size: int = 1000) -> int:
    return sum(projector_catch_up(name=name, batch_size=batch_size) for name in REGISTRY)


# Runners and their leases --------------------------------------------------------------------


def runner_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_ALIVE = """
    INSERT INTO carts_projectorrunner AS r (owner, names, expires_at)
    VALUES (%s, %s::jsonb, clock_timestamp() + make_interval(secs => %s))
    ON CONFLICT (owner) DO UPDATE SET names = EXCLUDED.names, expires_at = EXCLUDED.expires_at
"""
_FORGET = (
    "DELETE FROM carts_projectorrunner WHERE expires_at < clock_timestamp() - interval '1 hour'"
)
_RUNNERS = """
    SELECT n.name, count(r.owner)
    FROM unnest(%s::text[]) AS n(name)
    LEFT JOIN carts_projectorrunner r ON r.names ? n.name AND r.expires_at > clock_timestamp()
    GROUP BY n.name
"""
_LEASES = """
    SELECT name, part, owner, expires_at > clock_timestamp() FROM carts_projectorlease
    WHERE name = ANY(%s::text[])
"""
# Lease times are the database's wall clock (clock_timestamp(), not the transaction's now()).
# Take a lease that is free or expired (or ours): a conditional upsert, so two runners racing
# for the same partition cannot both win. Returns the previous owner when it was taken over.
_TAKE = """
    WITH before AS (
        SELECT owner FROM carts_projectorlease WHERE name = %s AND part = %s
    )
    INSERT INTO carts_projectorlease AS l (name, part, owner, expires_at)
    VALUES (%s, %s, %s, clock_timestamp() + make_interval(secs => %s))
    ON CONFLICT (name, part) DO UPDATE
        SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
        WHERE l.owner = EXCLUDED.owner OR l.expires_at <= clock_timestamp()
    RETURNING (SELECT owner FROM before)
"""
_RENEW = """
    UPDATE carts_projectorlease SET expires_at = clock_timestamp() + make_interval(secs => %s)
    WHERE owner = %s AND expires_at > clock_timestamp()
    RETURNING name, part
"""
_RELEASE = "DELETE FROM carts_projectorlease WHERE owner = %s AND (name, part) = (%s, %s)"


class ProjectorRunner:
    """One runner among several: holds a fair share of the partitions of each projector it
    runs and keeps their read models up to date. ``step`` is one turn; the caller loops
    (run_projectors)."""

    def __init__(
        self,
        *,
        owner: str | None = None,
        names: Sequence[str] | None = None,
        lease_seconds: float | None = None,
        batch_size: int = 1000,
    ) -> None:
        self.owner = owner or runner_identity()
        self.names = sorted(names) if names is not None else sorted(REGISTRY)
        self.lease_seconds = float(
            lease_seconds
            if lease_seconds is not None
            else getattr(settings, "PROJECTOR_LEASE_SECONDS", 10.0)
        )
        self.batch_size = batch_size
        self.held: set[tuple[str, int]] = set()

    def leases_hold(self) -> set[tuple[str, int]]:
        """Say we are alive, renew our leases, and take free or expired partitions of each
        projector up to a fair share: its partitions divided by the runners alive that run it."""
        parts = partition_count()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_ALIVE, [self.owner, json.dumps(self.names), self.lease_seconds])
            cursor.execute(_FORGET)
            cursor.execute(_RENEW, [self.lease_seconds, self.owner])
            held = {(name, part) for name, part in cursor.fetchall() if part < parts}
            cursor.execute(_RUNNERS, [self.names])
            runners = {name: max(int(n), 1) for name, n in cursor.fetchall()}
            cursor.execute(_LEASES, [self.names])
            taken = {(name, part) for name, part, owner, live in cursor.fetchall() if live}
        for name in self.names:
            share = math.ceil(parts / runners.get(name, 1))
            mine = sorted(key for key in held if key[0] == name)
            # More than our share (a runner joined): give the extras back for it to take.
            for key in mine[share:]:
                with connection.cursor() as cursor:
                    cursor.execute(_RELEASE, [self.owner, *key])
                held.discard(key)
            count = min(len(mine), share)
            for part in range(parts):
                if count >= share:
                    break
                key = (name, part)
                if key in held or key in taken:
                    continue
                if self._take(key):
                    held.add(key)
                    count += 1
        self.held = held
        return held

    def _take(self, key: tuple[str, int]) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(_TAKE, [*key, *key, self.owner, self.lease_seconds])
            row = cursor.fetchone()
        if row is None:
            return False  # another runner holds it
        previous = row[0]
        if previous is not None and previous != self.owner:
            log.warning(
                "projector %s partition %d: the lease of %s expired; %s takes over",
                key[0],
                key[1],
                previous,
                self.owner,
            )
            metrics.lease_expired("projector")
        return True

    def step(self) -> int:
        """Hold the leases, then serve every partition held: one batch per store behind, least
        recently served first, for at most a third of the lease time per projector (leases are
        renewed between projectors). A projector under rebuild is left for this turn. Returns
        events read."""
        held = self.leases_hold()
        read = 0
        by_name: dict[str, list[int]] = {}
        for name, part in sorted(held):
            by_name.setdefault(name, []).append(part)
        budget = self.lease_seconds / 3
        renewed = time.monotonic()
        for name, parts in by_name.items():
            if time.monotonic() - renewed > budget:
                self.leases_hold()
                renewed = time.monotonic()
            try:
                read += projector_catch_up(
                    name=name,
                    batch_size=self.batch_size,
                    parts=parts,
                    deadline=time.monotonic() + budget,
                    wait=False,
                )
            except RebuildRunning:
                log.info("projector %s is being rebuilt; left for this turn", name)
        return read

    def release(self) -> None:
        """Give every lease up (on a clean stop) so another runner takes over at once."""
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM carts_projectorlease WHERE owner = %s", [self.owner])
            cursor.execute("DELETE FROM carts_projectorrunner WHERE owner = %s", [self.owner])
        self.held = set()


# daily_event_counts: events per store, UTC day and type ------------------------------------------


def _daily_counts_apply(events: Sequence[CartEvent]) -> None:
    counts: Counter[tuple[int, str, str]] = Counter()
    firsts: Counter[tuple[int, str, str]] = Counter()
    for event in events:
        key = (event.store_id, event.occurred_at.date().isoformat(), event.type)
        counts[key] += 1
        if event.version == 1:
            firsts[key] += 1
    if not counts:
        return
    rows = [
        (store, day, type_, n, firsts[(store, day, type_)])
        for (store, day, type_), n in counts.items()
    ]
    with connection.cursor() as cursor:
        cursor.executemany(
            """
            INSERT INTO carts_dailyeventcount (store_id, day, type, count, carts)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (store_id, day, type) DO UPDATE
            SET count = carts_dailyeventcount.count + EXCLUDED.count,
                carts = carts_dailyeventcount.carts + EXCLUDED.carts
            """,
            rows,
        )


def _daily_counts_reset() -> None:
    DailyEventCount.objects.all().delete()


register(Projector("daily_event_counts", _daily_counts_apply, _daily_counts_reset))


# cart_state: written by the append service itself; rebuilt here by refolding each cart ----------

CART_STATE = "cart_state"


def cart_state_rebuild(*, batch_size: int = 500) -> int:
    """Refold every cart from its events and overwrite its state row. Returns carts rebuilt.

    Each batch of carts is locked while refolded, so concurrent appends wait rather than race.
    An event the fold refuses (``projections.Rejected``) or fails on is dead-lettered under
    ``cart_state`` and skipped, keeping its version, so the cart's later events still fold; the
    batch's earlier dead letters are resolved first.
    """
    from carts import projections, services

    rebuilt = 0
    scorer = services.cart_scorer_get()
    keys = list(CartState.objects.order_by("store_id", "token").values_list("store_id", "token"))
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        with transaction.atomic():
            by_store: dict[int, list[str]] = {}
            for store_id, token in chunk:
                by_store.setdefault(store_id, []).append(token)
            for store_id, tokens in by_store.items():
                rows = {
                    r.token: r
                    for r in CartState.objects.select_for_update()
                    .filter(store_id=store_id, token__in=tokens)
                    .order_by("token")
                }
                DeadLetter.objects.filter(
                    projector=CART_STATE,
                    resolved_at__isnull=True,
                    store_id=store_id,
                    cart__in=tokens,
                ).update(resolved_at=Now())
                states = {t: projections.Cart() for t in tokens}
                accs: dict[str, dict[str, Any]] = {t: {} for t in tokens}
                stored = list(
                    CartEvent.objects.filter(store_id=store_id, cart__in=tokens).order_by(
                        "cart", "version"
                    )
                )
                pii.events_reveal(stored)
                # A cart whose first events were archived with their month cannot be refolded
                # from what is left: its state stays as it is (docs/operations.md).
                first: dict[str, int] = {}
                for event in stored:
                    first.setdefault(event.cart, event.version)
                partial = {t for t, v in first.items() if v != 1}
                if partial:
                    log.warning(
                        "cart_state: %d cart(s) of store %s begin in an archived month; "
                        "their state is left as it is",
                        len(partial),
                        store_id,
                    )
                    rows = {t: r for t, r in rows.items() if t not in partial}
                    stored = [e for e in stored if e.cart not in partial]
                for event in stored:
                    state = states[event.cart]
                    try:
                        folded = services.fold_event(event)
                        after = projections.apply(state, folded)
                        acc = (
                            scorer.accumulate(accs[event.cart], folded)
                            if scorer is not None
                            else accs[event.cart]
                        )
                    except Exception as exc:
                        dead_letter_record(projector=CART_STATE, event=event, error=exc)
                        # Skipped, but it keeps its version: the later events fold in order.
                        states[event.cart] = replace(state, version=state.version + 1)
                        continue
                    states[event.cart], accs[event.cart] = after, acc
                # Rescored with today's active model (and the shopper history as it is now).
                scored = (
                    None
                    if scorer is None
                    else services.carts_score(
                        scorer,
                        store_id=store_id,
                        carts={t: (states[t], accs[t]) for t in tokens if t in rows},
                        row_ids={t: rows[t].pk for t in tokens if t in rows},
                    )
                )
                with psycopg.Cursor(connection.connection) as cursor:
                    services.cart_states_update(
                        cursor, {rows[t].pk: states[t] for t in tokens if t in rows}, scored
                    )
                rebuilt += len(rows)
    return rebuilt


REBUILDERS: dict[str, Callable[[], int]] = {CART_STATE: cart_state_rebuild}


def rebuild(name: str) -> int:
    """Rebuild one read model by name (a tailing projector or the cart state)."""
    if name in REBUILDERS:
        return REBUILDERS[name]()
    return projector_rebuild(name=name)


def names() -> list[str]:
    return [*REBUILDERS, *REGISTRY]
