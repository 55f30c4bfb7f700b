"""Projectors: named read models that tail the log from a checkpoint.

A projector's rows and its checkpoint are written in one transaction, so a crash never applies a
batch twice or skips one. Readers take events in position order, which is commit order
(docs/adr/0001), so ``position > checkpoint`` never misses a late commit. Runners are woken by a
Redis hint but are correct by polling alone. Any projector can be rebuilt from position zero.

Readers are total: an event that the log accepted never stops one. A batch is applied under a
savepoint; when ``apply`` raises, the batch is applied again one event at a time, each under a
savepoint of its own, and an event that still raises is recorded as a ``DeadLetter`` and skipped
(docs/operations.md, "Dead letters"). A rebuild tries every event again: those that now apply are
resolved, those that still fail are recorded again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models.functions import Now

from carts import pii, selectors
from carts.models import CartEvent, CartState, DailyEventCount, DeadLetter, ProjectorCheckpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Projector:
    """``apply`` folds a batch of events into the read model inside the caller's transaction;
    ``reset`` empties it. Both run in the same transaction as the checkpoint update."""

    name: str
    apply: Callable[[Sequence[CartEvent]], None]
    reset: Callable[[], None]
    # Whether it reads shoppers' personal fields: it is then given them in clear (None where the
    # shopper was erased, carts/pii.py); others see them sealed and pay nothing to open them.
    personal: bool = False


REGISTRY: dict[str, Projector] = {}


def _events_after(projector: Projector, position: int, limit: int) -> list[CartEvent]:
    events = list(selectors.events_after(position=position, limit=limit))
    if projector.personal:
        pii.events_reveal(events)
    return events


def register(projector: Projector) -> Projector:
    REGISTRY[projector.name] = projector
    return projector


def _checkpoint_for_update(name: str) -> ProjectorCheckpoint:
    ProjectorCheckpoint.objects.get_or_create(name=name)
    return ProjectorCheckpoint.objects.select_for_update().get(name=name)


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


def projector_catch_up(*, name: str, batch_size: int = 1000, max_batches: int | None = None) -> int:
    """Apply every event after the checkpoint, one transaction per batch. Returns events read
    (the checkpoint is past each of them: applied, or dead-lettered when it cannot apply).

    Safe to run in several processes: the checkpoint row lock makes them take turns.
    """
    projector = REGISTRY[name]
    applied = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic():
            checkpoint = _checkpoint_for_update(name)
            events = _events_after(projector, checkpoint.position, batch_size)
            if not events:
                break
            _apply_total(projector, events)
            checkpoint.position = events[-1].position
            checkpoint.save(update_fields=["position", "updated_at"])
        applied += len(events)
        batches += 1
    return applied


def projector_rebuild(*, name: str, batch_size: int = 5000) -> int:
    """Empty the read model and replay the whole log into it, in one transaction.

    Readers see the old model until the rebuilt one commits. The projector's open dead letters
    are resolved, and those whose events still fail are recorded again. Returns events read.
    """
    projector = REGISTRY[name]
    applied = 0
    with transaction.atomic():
        checkpoint = _checkpoint_for_update(name)
        _dead_letters_resolve(name)
        projector.reset()
        position = 0
        while True:
            events = _events_after(projector, position, batch_size)
            if not events:
                break
            _apply_total(projector, events)
            position = events[-1].position
            applied += len(events)
        checkpoint.position = position
        checkpoint.save(update_fields=["position", "updated_at"])
    return applied


def projectors_catch_up_all(*, batch_size: int = 1000) -> int:
    return sum(projector_catch_up(name=name, batch_size=batch_size) for name in REGISTRY)


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
