"""Running campaigns: enqueue due steps, execute them exactly once (enrolment, which makes the
steps: campaigns/enrolment.py; the hooks recovery fills in: campaigns/extensions.py).

1. ``due_steps_enqueue`` (scheduler, several times a second): claims due steps with
   ``FOR UPDATE SKIP LOCKED`` and hands them to Celery in batches (``campaigns.tasks.steps_run``).
   Steps handed out long ago and never finished are handed out again.
2. ``steps_execute`` (the worker): per batch, one transaction that locks the carts (the append
   service's own lock, in the same order) and then the steps; each step re-checks everything
   (campaigns/rules.py) and is sent, skipped, suppressed, deferred or cancelled; its outcome is a
   ``campaign.*`` event appended in the same transaction. Only ``enqueued`` steps run, under their
   row lock, so a duplicate delivery or a racing worker finds them finished and does nothing.
   Each step runs under a savepoint of its own: one that raises is undone alone and failed with
   its error, and the rest of the batch commits.
   Emails go out while the cart is locked, before the commit: an ``order.placed`` for the cart
   waits for the commit, then finds the step done; a step that locks after the order sees the cart
   converted. Nothing is sent after an order commits (tests/e2e/test_campaign_races.py).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Max

from campaigns import events, rules, senders
from campaigns.extensions import HOOKS
from campaigns.models import CampaignSettings, Step, Suppression
from carts.models import CartState, Store
from carts.services import NewEvent, Reacting, append_reaction_register, events_append
from carts.sources import Source

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
RETRY_BACKOFF = timedelta(seconds=30)


# 1. Enqueueing -----------------------------------------------------------------------------------

_CLAIM_DUE = """
    WITH due AS (
        SELECT id FROM campaigns_step
        WHERE status = 'pending' AND due_at <= %(now)s
        ORDER BY due_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
    UPDATE campaigns_step s SET status = 'enqueued', enqueued_at = %(now)s
    FROM due WHERE s.id = due.id
    RETURNING s.id
"""
_CLAIM_STALE = """
    WITH stale AS (
        SELECT id FROM campaigns_step
        WHERE status = 'enqueued' AND enqueued_at <= %(stale)s
        ORDER BY enqueued_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
    UPDATE campaigns_step s SET enqueued_at = %(now)s
    FROM stale WHERE s.id = stale.id
    RETURNING s.id
"""


def due_steps_enqueue(
    *, now: datetime, limit: int | None = None, publish: Callable[[list[int]], None] | None = None
) -> int:
    """Hand due steps (and steps handed out long ago and not finished) to workers, in batches.

    Safe to run concurrently: SKIP LOCKED gives each caller different steps. The tasks are
    published after commit; a publish lost in a crash is redelivered after
    CAMPAIGNS_REDELIVER_SECONDS. Returns steps handed out."""
    limit = limit or settings.CAMPAIGNS_ENQUEUE_LIMIT
    if publish is None:
        from campaigns.tasks import steps_publish

        publish = steps_publish
    stale = now - timedelta(seconds=settings.CAMPAIGNS_REDELIVER_SECONDS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CLAIM_DUE, {"now": now, "limit": limit})
        ids = [row[0] for row in cursor.fetchall()]
        cursor.execute(_CLAIM_STALE, {"now": now, "stale": stale, "limit": limit})
        redelivered = [row[0] for row in cursor.fetchall()]
        if redelivered:
            log.warning("handing out %d unfinished step(s) again", len(redelivered))
        claimed = sorted(ids + redelivered)
        if claimed:
            transaction.on_commit(lambda: publish(claimed))
    return len(claimed)


# 2. Execution ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Batch:
    """What one batch decided; written back in one go."""

    updates: list[Step] = field(default_factory=list)
    events: dict[int, list[NewEvent]] = field(default_factory=lambda: defaultdict(list))
    pushes: list[tuple[int, str, dict]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def merge(self, other: _Batch) -> None:
        self.updates += other.updates
        for store_id, store_events in other.events.items():
            self.events[store_id] += store_events
        self.pushes += other.pushes
        for outcome, n in other.counts.items():
            self.counts[outcome] += n


def steps_execute(*, step_ids: Sequence[int], now: Callable[[], datetime]) -> dict[str, int]:
    """Run the given steps that are still enqueued; each at most once. Returns outcome counts."""
    carts = list(
        Step.objects.filter(id__in=step_ids, status=Step.Status.ENQUEUED)
        .values_list("store_id", "cart")
        .distinct()
    )
    if not carts:
        return {}
    batch = _Batch()
    with transaction.atomic():
        # The append service's lock on each cart, taken in its order (token), before the steps.
        by_store: dict[int, list[str]] = defaultdict(list)
        for store_id, cart in carts:
            by_store[store_id].append(cart)
        states: dict[tuple[int, str], CartState] = {}
        for store_id, tokens in sorted(by_store.items()):
            for row in (
                CartState.objects.select_for_update()
                .filter(store_id=store_id, token__in=tokens)
                .defer("features", "reasons")  # large; read only for discount amounts
                .order_by("token")
            ):
                states[(store_id, row.token)] = row
        steps = list(
            Step.objects.select_for_update(of=("self",))
            .filter(id__in=step_ids, status=Step.Status.ENQUEUED)
            .select_related("tier", "tier__campaign", "enrollment")
            .order_by("store_id", "cart", "tier__position")
        )
        if not steps:
            return {}
        pause = settings.CAMPAIGNS_PAUSE_BEFORE_SEND
        if pause:
            time.sleep(pause)  # tests kill the worker here (tests/e2e/test_campaign_worker.py)
        moment = now()
        _run(steps, states, batch, moment)
        if batch.updates:
            _steps_update(batch.updates)
        for store_id, store_events in batch.events.items():
            events_append(store_id=store_id, events=store_events, source=Source.system("campaigns"))
        for store_id, cart, offer in batch.pushes:
            transaction.on_commit(
                lambda s=store_id, c=cart, o=offer: _push(s, c, o)  # type: ignore[misc]
            )
    return dict(batch.counts)


# One statement for the batch (Django's bulk_update builds a CASE per field and row: it cost
# 2 ms a step, more than rendering and sending the email).
_UPDATE_STEPS = """
    UPDATE campaigns_step AS s SET
        status = v.status, reason = v.reason, due_at = v.due_at, attempts = v.attempts,
        finished_at = v.finished_at, message_id = v.message_id
    FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::int[],
                %s::timestamptz[], %s::text[])
        AS v(id, status, reason, due_at, attempts, finished_at, message_id)
    WHERE s.id = v.id
"""


def _steps_update(updated: list[Step]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _UPDATE_STEPS,
            [
                [s.pk for s in updated],
                [s.status for s in updated],
                [s.reason for s in updated],
                [s.due_at for s in updated],
                [s.attempts for s in updated],
                [s.finished_at for s in updated],
                [s.message_id for s in updated],
            ],
        )


def _push(store_id: int, cart: str, offer: dict) -> None:
    if HOOKS.onsite_push is not None:
        try:
            HOOKS.onsite_push(store_id, cart, offer)
        except Exception:  # the browser re-fetches pending offers; a lost push loses nothing
            log.exception("on-site push failed for cart %s", cart)


def _run(
    steps: list[Step], states: dict[tuple[int, str], CartState], batch: _Batch, now: datetime
) -> None:
    store_ids = {s.store_id for s in steps}
    shoppers = {s.shopper for s in steps if s.shopper}
    carts = {(s.store_id, s.cart) for s in steps}
    stores = {s.pk: s for s in Store.objects.filter(pk__in=store_ids)}
    store_settings = {
        cs.store_id: cs for cs in CampaignSettings.objects.filter(store_id__in=store_ids)
    }
    suppressed: dict[tuple[int, str], set[str]] = defaultdict(set)
    for store_id, shopper, kind in Suppression.objects.filter(
        store_id__in=store_ids, shopper__in=shoppers
    ).values_list("store_id", "shopper", "kind"):
        suppressed[(store_id, shopper)].add(kind)
    sent_to_cart: dict[tuple[int, str], int] = defaultdict(int)
    for row in (
        Step.objects.filter(
            store_id__in=store_ids, cart__in={c for _, c in carts}, status=Step.Status.SENT
        )
        .values("store_id", "cart")
        .annotate(n=Count("id"))
    ):
        sent_to_cart[(row["store_id"], row["cart"])] = row["n"]
    last_email: dict[tuple[int, str], datetime] = {}
    for last_row in (
        Step.objects.filter(
            store_id__in=store_ids,
            shopper__in=shoppers,
            status=Step.Status.SENT,
            channel__in=rules.EMAIL_CHANNELS,
        )
        .values("store_id", "shopper")
        .annotate(last=Max("finished_at"))
    ):
        last_email[(last_row["store_id"], last_row["shopper"])] = last_row["last"]

    known = _Known(stores, store_settings, suppressed, sent_to_cart, last_email)
    with senders.session() as session:
        for step in steps:
            # Each step under a savepoint of its own: one that raises (a bug, data no rule
            # foresaw) is failed with its error and undone alone, and the rest of the batch,
            # whose messages may be out already, commits.
            done = _Batch()
            try:
                with transaction.atomic():
                    _step_run(
                        step, states.get((step.store_id, step.cart)), known, session, done, now
                    )
            except Exception as exc:
                log.exception("campaign step %s (cart %s) failed", step.pk, step.cart)
                # The database failing under it says nothing about the step: retried like a
                # refused send. Anything else would fail again: failed for good.
                transient = isinstance(exc, (OperationalError, InterfaceError))
                data = events.step_data(step, "failed" if transient else "error")
                error = f"{type(exc).__name__}: {exc}"
                _failed(step, batch, data, error, now, permanent=not transient)
                continue
            batch.merge(done)


@dataclass(frozen=True, slots=True)
class _Known:
    """What a batch reads once for all its steps; the counts are updated as steps send."""

    stores: dict[int, Store]
    settings: dict[int, CampaignSettings]
    suppressed: dict[tuple[int, str], set[str]]
    sent_to_cart: dict[tuple[int, str], int]
    last_email: dict[tuple[int, str], datetime]


def _step_run(
    step: Step,
    state: CartState | None,
    known: _Known,
    session: senders.Session,
    batch: _Batch,
    now: datetime,
) -> None:
    """Decide one step and act on it; its outcome goes into ``batch`` (the step's own)."""
    campaign = step.tier.campaign
    cfg = known.settings.get(step.store_id) or CampaignSettings(store_id=step.store_id)
    key = (step.store_id, step.shopper)
    facts = rules.StepFacts(
        channel=step.channel,
        tier_min_score=step.tier.min_score,
        delay_minutes=step.tier.delay_minutes,
        status=state.status if state else "active",
        item_count=state.item_count if state else 0,
        last_activity_at=state.last_activity_at if state else None,
        score=state.score if state else None,
        email=state.email if state else "",
        consent=state.consent if state else {},
        timezone=state.timezone if state else "",
        inactivity_minutes=campaign.inactivity_minutes,
        holdout=step.enrollment.holdout,
        cart_cap=campaign.cart_cap,
        shopper_cap_hours=campaign.shopper_cap_hours,
        quiet_start=campaign.quiet_start,
        quiet_end=campaign.quiet_end,
        store_timezone=cfg.timezone,
        legal_basis=cfg.email_legal_basis,
        suppressions=frozenset(known.suppressed.get(key, ())),
        sent_to_cart=known.sent_to_cart[(step.store_id, step.cart)],
        last_email_to_shopper=known.last_email.get(key) if step.shopper else None,
    )
    outcome = rules.step_decide(facts, now)
    data = events.step_data(step, outcome.reason)
    if outcome.action == rules.SEND:
        assert state is not None
        sent = session.send(
            store=known.stores[step.store_id], settings=cfg, step=step, cart=state, now=now
        )
        batch.events[step.store_id].extend(sent.events)
        if sent.push is not None:
            batch.pushes.append((step.store_id, step.cart, sent.push))
        if sent.error is not None:
            _failed(step, batch, data, sent.error, now)
            return
        if sent.skipped is not None:
            data["reason"] = sent.skipped
            _finish(step, batch, data, Step.Status.SKIPPED, events.STEP_SKIPPED, now)
            return
        step.message_id = sent.message_id
        data["message_id"] = sent.message_id
        data.update(sent.data)
        _finish(step, batch, data, Step.Status.SENT, events.STEP_SENT, now)
        known.sent_to_cart[(step.store_id, step.cart)] += 1
        if step.channel in rules.EMAIL_CHANNELS and step.shopper:
            known.last_email[key] = now
    elif outcome.action == rules.DEFER:
        assert outcome.until is not None
        step.status = Step.Status.PENDING
        step.reason = outcome.reason
        step.due_at = outcome.until
        data["until"] = outcome.until.isoformat()
        batch.updates.append(step)
        batch.counts["deferred"] += 1
        batch.events[step.store_id].append(
            events.campaign_event(
                cart=step.cart,
                type=events.STEP_DEFERRED,
                data=data,
                now=now,
                key=f"{step.pk}:{outcome.until.isoformat()}",
            )
        )
    elif outcome.action == rules.FAIL:
        error = (
            f"{outcome.reason}: a time beyond the calendar (last activity {facts.last_activity_at})"
        )
        _failed(step, batch, data, error, now, permanent=True)
    else:
        status, event_type = {
            rules.SKIP: (Step.Status.SKIPPED, events.STEP_SKIPPED),
            rules.SUPPRESS: (Step.Status.SUPPRESSED, events.STEP_SUPPRESSED),
            rules.CANCEL: (Step.Status.CANCELLED, events.STEP_CANCELLED),
        }[outcome.action]
        _finish(step, batch, data, status, event_type, now)


def _finish(
    step: Step, batch: _Batch, data: dict[str, Any], status: str, event_type: str, now: datetime
) -> None:
    step.status = status
    step.reason = str(data["reason"])
    step.finished_at = now
    batch.updates.append(step)
    batch.counts[status] += 1
    batch.events[step.store_id].append(
        events.campaign_event(
            cart=step.cart, type=event_type, data=data, now=now, key=f"{step.pk}:run:{status}"
        )
    )


def _failed(
    step: Step,
    batch: _Batch,
    data: dict[str, Any],
    error: str,
    now: datetime,
    *,
    permanent: bool = False,
) -> None:
    """A transient failure (the mail server refused or was down): retry with backoff, then give
    up and record it. A permanent one (the step cannot run) is recorded as final at once, with
    the reason in ``data`` (``bad_time``, ``error``)."""
    step.attempts += 1
    final = permanent or step.attempts >= MAX_ATTEMPTS
    data.update({"error": error[:500], "attempt": step.attempts, "final": final})
    if final:
        step.status = Step.Status.FAILED
        step.finished_at = now
    else:
        step.status = Step.Status.PENDING
        step.due_at = now + RETRY_BACKOFF * 2 ** (step.attempts - 1)
    step.reason = str(data["reason"]) if permanent else "failed"
    batch.updates.append(step)
    batch.counts["failed"] += 1
    batch.events[step.store_id].append(
        events.campaign_event(
            cart=step.cart,
            type=events.STEP_FAILED,
            data=data,
            now=now,
            key=f"{step.pk}:failed:{step.attempts}",
        )
    )


# An order cancels the cart's open steps, in the order's own transaction ----------------------

_CANCEL_OPEN = """
    UPDATE campaigns_step SET status = 'cancelled', reason = 'converted', finished_at = %s
    WHERE store_id = %s AND cart = ANY(%s) AND status IN ('pending', 'enqueued')
    RETURNING id, cart, tier_id, channel
"""


def _order_cancels_steps(reacting: Reacting) -> list[NewEvent]:
    if not reacting.source.trusted:  # the cart's fold refuses such orders already
        return []
    orders = [e for e in reacting.appended if e.type == "order.placed"]
    if not orders:
        return []
    now = max(e.occurred_at for e in orders)
    with connection.cursor() as cursor:
        cursor.execute(_CANCEL_OPEN, [now, reacting.store_id, sorted({e.cart for e in orders})])
        rows = cursor.fetchall()
    return [
        events.campaign_event(
            cart=cart,
            type=events.STEP_CANCELLED,
            now=now,
            key=f"{step_id}:cancelled",
            data={"step": step_id, "tier": tier_id, "channel": channel, "reason": "converted"},
        )
        for step_id, cart, tier_id, channel in rows
    ]


def order_reaction_register() -> None:
    append_reaction_register(types=["order.placed"], reaction=_order_cancels_steps)
