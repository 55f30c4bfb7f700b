"""Running campaigns: enqueue due steps, execute them exactly once (enrolment, which makes the
steps: campaigns/enrolment.py; the hooks recovery fills in: campaigns/extensions.py).

1. ``due_steps_enqueue`` (scheduler, several times a second): claims due steps with
   ``FOR UPDATE SKIP LOCKED`` and hands them to Celery in batches (``campaigns.tasks.steps_run``).
   Steps handed out long ago and never finished are handed out again.
2. ``steps_execute`` (the worker), never holding a transaction or a lock while talking to the
   network (docs/campaigns.md, "Leases"):
   a. claim: one short transaction marks the batch's ``enqueued`` steps (and ones whose lease ran
      out) ``sending`` under this worker's name until now + CAMPAIGNS_LEASE_SECONDS
      (``FOR UPDATE SKIP LOCKED``: a duplicate delivery or a racing worker gets none of them);
   b. decide each step (campaigns/rules.py) on plain reads and prepare its message (a
      discount's code in a short transaction), as delivery asks for the next message, so
      preparing the batch overlaps sending it;
   c. right before messages leave, decide again on the carts and suppressions as committed
      now (one round trip for the messages leaving together): an order committed by then
      cancels its step; then send, outside any transaction (campaigns/delivery.py);
   d. record outcomes (the steps' rows and their ``campaign.*`` events) as they come, a few
      dozen at a time, a store's in one short transaction, only where the lease is still
      ours; when that fails, one by one, so one step's failure never undoes another's.
   An order's own transaction cancels ``pending``/``enqueued`` steps; a ``sending`` one may
   have its message in flight: recorded as sent with reason ``in_flight_at_order``, never
   credited with the order (tests/e2e/test_campaign_races.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Max

from campaigns import clock, delivery, events, rules, senders
from campaigns.extensions import HOOKS
from campaigns.models import CampaignSettings, Step, Suppression
from carts import identity, metrics
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
# Takeover: a step whose lease ran out (its worker died, or stalled past it) is enqueued again.
# Its old worker, if it lives on, finds the step no longer ``sending`` under its name and
# records nothing; the step's Message-ID stays, so a provider can deduplicate a second send.
_CLAIM_EXPIRED = """
    WITH expired AS (
        SELECT id FROM campaigns_step
        WHERE status = 'sending' AND leased_until < clock_timestamp()
        ORDER BY leased_until
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
    UPDATE campaigns_step s SET status = 'enqueued', enqueued_at = %(now)s
    FROM expired WHERE s.id = expired.id
    RETURNING s.id
"""


def due_steps_enqueue(
    *, now: datetime, limit: int | None = None, publish: Callable[[list[int]], None] | None = None
) -> int:
    """Hand due steps (and steps handed out long ago and not finished, and steps whose lease ran
    out) to workers, in batches.

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
        cursor.execute(_CLAIM_EXPIRED, {"now": now, "limit": limit})
        redelivered += [row[0] for row in cursor.fetchall()]
        if redelivered:
            log.warning("handing out %d unfinished step(s) again", len(redelivered))
        claimed = sorted(ids + redelivered)
        if claimed:
            transaction.on_commit(lambda: publish(claimed))
    return len(claimed)


# 2. Execution ------------------------------------------------------------------------------------

# Claim the batch's steps still to run: enqueued ones, and ones whose lease ran out (their worker
# died mid-send). Leases are in real time by the database's clock, whatever the workers' clocks
# or the campaign clock's speed.
_CLAIM = """
    WITH mine AS (
        SELECT id FROM campaigns_step
        WHERE id = ANY(%(ids)s)
          AND (status = 'enqueued' OR (status = 'sending' AND leased_until < clock_timestamp()))
        ORDER BY id
        FOR UPDATE SKIP LOCKED)
    UPDATE campaigns_step s SET status = 'sending', lease_owner = %(me)s,
        leased_until = clock_timestamp() + make_interval(secs => %(lease)s)
    FROM mine WHERE s.id = mine.id
    RETURNING s.id
"""
# An outcome is recorded only by the worker that still holds the step's lease (one statement for
# a batch: the arrays run in parallel).
_RECORD = """
    UPDATE campaigns_step AS s SET status = v.status, reason = v.reason, due_at = v.due_at,
        attempts = v.attempts, finished_at = v.finished_at, message_id = v.message_id,
        leased_until = NULL
    FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::int[],
                %s::timestamptz[], %s::text[])
         AS v(id, status, reason, due_at, attempts, finished_at, message_id)
    WHERE s.id = v.id AND s.status = 'sending' AND s.lease_owner = %s
    RETURNING s.id
"""
# Outcomes of messages handed over are recorded this many at a time while the batch sends, or
# once the oldest waiting has waited this long (a slow relay answers a few a second): a worker
# killed mid-batch leaves unrecorded, to be sent again, only what it had on the wire and what was
# answered in its last _RECORD_WITHIN seconds.
_RECORD_EVERY = 32
_RECORD_WITHIN = 0.1
# Steps a worker will not get to within its lease go back to pending (due at once, unchanged).
_RELEASE = """
    UPDATE campaigns_step SET status = 'pending', leased_until = NULL
    WHERE id = ANY(%s) AND status = 'sending' AND lease_owner = %s
"""
_CARTS_LOCK = """
    SELECT token, status FROM carts_cartstate WHERE token = ANY(%s) AND store_id + 0 = %s
    ORDER BY token
    FOR UPDATE
"""


def worker_id() -> str:
    """Who holds a lease: host, process and a random part per batch (at most 64 characters)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def _lease_margin(lease: float) -> float:
    """How much of its lease a worker keeps unused: a message started later could still be
    talking to a stalled server when the lease runs out (a few EMAIL_TIMEOUTs: the data's reply,
    closing the connection), and another worker could then send it again."""
    timeout = float(getattr(settings, "EMAIL_TIMEOUT", None) or 10)
    return min(3 * timeout, lease / 2)


@dataclass(slots=True)
class _Result:
    """One step's outcome, to record: the step's new fields, its events, what to count."""

    step: Step
    count: str
    events: list[NewEvent] = field(default_factory=list)


@dataclass(slots=True)
class _Ready:
    """A step decided to send, its message (or on-site offer) prepared."""

    step: Step
    facts: rules.StepFacts  # what it was decided on (caps counted before it)
    prepared: senders.Prepared
    data: dict[str, Any]


def steps_execute(*, step_ids: Sequence[int], now: Callable[[], datetime]) -> dict[str, int]:
    """Run the given steps that are still enqueued (or whose lease ran out); each is claimed by one
    worker at a time. No transaction or lock is held while talking to the network: claim with a
    lease (commit), decide and send, and record outcomes in short transactions as they come,
    where the lease is still ours. Returns outcome counts."""
    me = worker_id()
    lease = float(settings.CAMPAIGNS_LEASE_SECONDS)
    started = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CLAIM, {"ids": list(step_ids), "me": me, "lease": lease})
        claimed = [row[0] for row in cursor.fetchall()]
    if not claimed:
        return {}
    deadline = started + lease - _lease_margin(lease)
    steps = list(
        Step.objects.filter(id__in=claimed, status=Step.Status.SENDING, lease_owner=me)
        .select_related("tier", "tier__campaign", "enrollment")
        .order_by("store_id", "cart", "tier__position")
    )
    pause = settings.CAMPAIGNS_PAUSE_BEFORE_SEND
    if pause:
        time.sleep(pause)  # tests kill the worker here (tests/e2e/test_campaign_worker.py)
    moment = now()
    # Plain reads: nothing is locked while the batch runs.
    states = _states_read({(s.store_id, s.cart) for s in steps})
    known = _known_read(steps)
    results: list[_Result] = []
    ready: dict[int, _Ready] = {}  # step id -> decided to send, in the batch's order

    def prepared() -> Iterator[delivery.Outgoing]:
        """Each step decided and its message prepared as delivery asks for the next one (so
        preparing overlaps sending); what sends no email is kept aside."""
        for step in steps:
            if time.monotonic() >= deadline:  # no time left to send it: another batch will
                released.append(step.pk)
                continue
            try:
                decided = _step_decide(step, states.get((step.store_id, step.cart)), known, moment)
            except Exception as exc:
                decided = _raised(step, exc, moment)
            if isinstance(decided, _Result):
                results.append(decided)
                continue
            if decided.prepared.message is not None and decided.prepared.coupon is not None:
                # Its code is made where the shop redeems it before the message may leave: a
                # network call (no transaction is open here), within the batch's lease.
                withheld_for_code = _code_publish(decided, moment)
                if withheld_for_code is not None:
                    known.sent_to_cart[(step.store_id, step.cart)] -= 1
                    results.append(withheld_for_code)
                    continue
                if time.monotonic() >= deadline:  # the platform took the time left
                    released.append(step.pk)
                    continue
            ready[step.pk] = decided
            if decided.prepared.message is not None:
                yield decided.prepared.outgoing(step)

    # The last check, right before messages leave: an order (or an unsubscribe) committed by
    # now wins; so does the lease's end. One round trip for the messages leaving together.
    withheld: dict[int, _Result] = {}
    released: list[int] = []

    def check(keys: Sequence[int]) -> list[bool]:
        if time.monotonic() >= deadline:
            released.extend(keys)
            return [False] * len(keys)
        ones = [ready[key] for key in keys]
        answers = []
        for one, again in zip(
            ones, _recheck([(o.step, o.facts) for o in ones], moment), strict=True
        ):
            if again.action == rules.SEND:
                answers.append(True)
                continue
            withheld[one.step.pk] = _decided(one.step, again, one.facts, moment)
            # A code issued for the message stays the cart's (its coupon row is written); an
            # on-site offer's decision is not recorded: it never reaches the browser.
            withheld[one.step.pk].events[:0] = _issued_codes(one.step, one.prepared.events)
            answers.append(False)
        return answers

    counts: dict[str, int] = defaultdict(int)

    def record(outcomes: list[_Result]) -> None:
        for result, recorded in _record_all(outcomes, me):
            if recorded is None:
                outcome = "unrecorded"
            elif not recorded:
                log.warning("campaign step %s: lease lost, outcome not recorded", result.step.pk)
                outcome = "lease_lost"
            else:
                outcome = result.count
            counts[outcome] += 1
            metrics.step_outcome(channel=result.step.channel, outcome=outcome)

    def sent(batch: list[delivery.Delivered]) -> None:
        """Messages handed over (or refused) are recorded as they come, a few dozen at a time
        and at most _RECORD_WITHIN seconds after their answer: a worker killed mid-batch leaves
        only its last ones to be sent again."""
        record(
            [
                _sent(ready[d.item.key], d, moment)
                for d in batch
                if d.item.key not in withheld and d.item.key not in released
            ]
        )

    delivery.deliver(
        prepared(),
        check=lambda items: check([item.key for item in items]),
        done=sent,
        done_every=_RECORD_EVERY,
        done_within=_RECORD_WITHIN,
    )
    # On-site offers leave after their record commits (recovery pushes the committed event).
    offers = [r for r in ready.values() if r.prepared.message is None]
    go: dict[int, bool] = {}
    try:
        go = dict(zip([r.step.pk for r in offers], check([r.step.pk for r in offers]), strict=True))
    except Exception as exc:
        results.extend(_raised(one.step, exc, moment) for one in offers)
    for key, one in ready.items():
        if key in withheld:
            results.append(withheld[key])
        elif go.get(key):
            results.append(_sent(one, None, moment))

    if released:
        with connection.cursor() as cursor:
            cursor.execute(_RELEASE, [released, me])
            counts["released"] += cursor.rowcount
        log.warning("lease nearly out: %d step(s) released for another batch", len(released))
    record(results)
    return dict(counts)


def _states_read(carts: set[tuple[int, str]]) -> dict[tuple[int, str], CartState]:
    by_store: dict[int, list[str]] = defaultdict(list)
    for store_id, cart in carts:
        by_store[store_id].append(cart)
    states: dict[tuple[int, str], CartState] = {}
    for store_id, tokens in by_store.items():
        rows = CartState.objects.filter(store_id=store_id, token__in=tokens)
        for row in rows.defer("features", "reasons"):  # large; read only for discount amounts
            states[(store_id, row.token)] = row
    return states


def _record_all(results: list[_Result], me: str) -> list[tuple[_Result, bool | None]]:
    """Record outcomes: each store's in one short transaction (_record_many); when that fails,
    each outcome in a transaction of its own, so one step's failure never undoes another's.
    Per outcome: True recorded, False lease lost (another worker took the step), None not
    recorded (logged; the step stays leased and another worker takes it after the lease)."""
    by_store: dict[int, list[_Result]] = defaultdict(list)
    for result in results:
        by_store[result.step.store_id].append(result)
    out: list[tuple[_Result, bool | None]] = []
    for store_id, group in by_store.items():
        try:
            out.extend(_record_many(store_id, group, me))
            continue
        except Exception:
            if len(group) > 1:
                log.exception("recording %d outcomes together failed: one by one", len(group))
            else:
                log.exception("could not record campaign step %s", group[0].step.pk)
                out.append((group[0], None))
                continue
        for result in group:
            try:
                out.extend(_record_many(store_id, [result], me))
            except Exception:
                log.exception("could not record campaign step %s", result.step.pk)
                out.append((result, None))
    return out


def _record_many(store_id: int, group: list[_Result], me: str) -> list[tuple[_Result, bool]]:
    """Write one store's outcomes (the steps' fields and their events) in one short
    transaction, those whose lease is still ours; the others (another worker took them) are
    written nothing.

    The carts are locked first, in token order, as every append locks them (then the steps):
    an order that committed before this finds its cart's steps still ``sending`` and leaves
    them; this then sees the cart converted (_at_order)."""
    carts = sorted({r.step.cart for r in group})
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CARTS_LOCK, [carts, store_id])
        converted = {token for token, status in cursor.fetchall() if status == rules.CONVERTED}
        group = [_at_order(r) if r.step.cart in converted else r for r in group]
        steps = [r.step for r in group]
        cursor.execute(
            _RECORD,
            [
                [s.pk for s in steps],
                [s.status for s in steps],
                [s.reason for s in steps],
                [s.due_at for s in steps],
                [s.attempts for s in steps],
                [s.finished_at for s in steps],
                [s.message_id for s in steps],
                me,
            ],
        )
        mine = {row[0] for row in cursor.fetchall()}
        appending = [e for r in group if r.step.pk in mine for e in r.events]
        if appending:
            events_append(store_id=store_id, events=appending, source=Source.system("campaigns"))
    return [(r, r.step.pk in mine) for r in group]


def _at_order(result: _Result) -> _Result:
    """The outcome of a step whose cart converted while it ran. A message that had left is
    recorded as sent with reason ``in_flight_at_order`` (never credited with the order); an
    on-site offer, which reaches the browser only from its committed event
    (recovery/offer_push.py), is cancelled instead and never shown. Anything else is as it was.
    Applying it twice changes nothing more."""
    step = result.step
    if step.status != Step.Status.SENT:  # nothing left (or will): the order simply won
        return result
    if step.channel == "onsite":
        assert step.finished_at is not None
        step.message_id = ""
        data = events.step_data(step, "converted")
        cancelled = _finish(
            step, data, Step.Status.CANCELLED, events.STEP_CANCELLED, step.finished_at
        )
        cancelled.events[:0] = _issued_codes(step, result.events)
        return cancelled
    step.reason = events.IN_FLIGHT_AT_ORDER
    for event in result.events:
        if event.type == events.STEP_SENT:
            event.data["reason"] = events.IN_FLIGHT_AT_ORDER
    return result


@dataclass(frozen=True, slots=True)
class _Known:
    """What a batch reads once for all its steps; the counts grow as its steps decide to send."""

    stores: dict[int, Store]
    settings: dict[int, CampaignSettings]
    suppressed: dict[tuple[int, str], set[str]]
    sent_to_cart: dict[tuple[int, str], int]
    last_email: dict[tuple[int, str], datetime]


def _known_read(steps: list[Step]) -> _Known:
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
    return _Known(stores, store_settings, suppressed, sent_to_cart, last_email)


# The cart columns a step's decision reads (rules.StepFacts), in _RECHECK's order.
_CART_FACTS = ("status", "item_count", "seen_at", "score", "email", "consent", "timezone")


def _cart_facts(state: Any) -> dict[str, Any]:
    """What a step's decision reads of its cart (rules.StepFacts), from the cart's state (a
    CartState, or a row of _CART_FACTS by name); no cart (None) reads as an empty active one."""
    if state is None:
        values: dict[str, Any] = {"status": "active", "item_count": 0, "seen_at": None}
        values.update(score=None, email="", consent={}, timezone="")
        return values
    get = state.get if isinstance(state, dict) else lambda name: getattr(state, name)
    seen_at, consent = get("seen_at"), get("consent")
    return {
        **{name: get(name) for name in _CART_FACTS},
        "seen_at": clock.at(seen_at) if seen_at else None,
        "consent": json.loads(consent) if isinstance(consent, str | bytes) else consent,
    }


def _facts(step: Step, state: CartState | None, known: _Known) -> rules.StepFacts:
    campaign = step.tier.campaign
    cfg = known.settings.get(step.store_id) or CampaignSettings(store_id=step.store_id)
    return rules.StepFacts(
        channel=step.channel,
        tier_min_score=step.tier.min_score,
        delay_minutes=step.tier.delay_minutes,
        **_cart_facts(state),
        inactivity_minutes=campaign.inactivity_minutes,
        holdout=step.enrollment.holdout,
        cart_cap=campaign.cart_cap,
        shopper_cap_hours=campaign.shopper_cap_hours,
        quiet_start=campaign.quiet_start,
        quiet_end=campaign.quiet_end,
        store_timezone=cfg.timezone,
        legal_basis=cfg.email_legal_basis,
        suppressions=frozenset(known.suppressed.get((step.store_id, step.shopper), ())),
        sent_to_cart=known.sent_to_cart[(step.store_id, step.cart)],
        last_email_to_shopper=(
            known.last_email.get((step.store_id, step.shopper)) if step.shopper else None
        ),
    )


# The last check's one round trip for the messages leaving together: each cart's decision
# columns and its shopper's suppressions (raw SQL: per step, the ORM queries it replaces cost
# more worker CPU than the rest of a step).
_RECHECK = """
    SELECT v.i, c.status, c.item_count, c.seen_at, c.score, c.email, c.consent, c.timezone,
           ARRAY(SELECT s.kind FROM campaigns_suppression s
                 WHERE s.store_id = v.store AND s.shopper = v.shopper AND v.shopper <> '')
    FROM unnest(%s::int[], %s::bigint[], %s::text[], %s::text[]) AS v(i, store, cart, shopper)
    LEFT JOIN carts_cartstate c ON c.token = v.cart AND c.store_id = v.store
"""


def _recheck(steps: Sequence[tuple[Step, rules.StepFacts]], now: datetime) -> list[rules.Outcome]:
    """The decisions again, on the carts and the shoppers' suppressions as committed right now
    (plain reads, no lock, one round trip): the last check before messages leave. An order
    committed before it cancels its cart's steps."""
    if not steps:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            _RECHECK,
            [
                list(range(len(steps))),
                [s.store_id for s, _ in steps],
                [s.cart for s, _ in steps],
                [s.shopper for s, _ in steps],
            ],
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    outcomes = []
    for i, (_, facts) in enumerate(steps):
        *columns, kinds = rows[i]
        row = dict(zip(_CART_FACTS, columns, strict=True))
        cart = _cart_facts(None if row["status"] is None else row)  # None: no such cart
        fresh = dataclasses.replace(facts, **cart, suppressions=frozenset(kinds or ()))
        outcomes.append(rules.step_decide(fresh, now))
    return outcomes


def _issued_codes(step: Step, prepared: list[NewEvent]) -> list[NewEvent]:
    """Of a prepared step's events, those that stay when it is not sent after all: a code issued
    for it (its coupon row is written) stays the cart's. An email's prepared events are all
    codes; an on-site offer's decision goes (it never reaches the browser)."""
    if step.channel != "onsite":
        return list(prepared)
    return [e for e in prepared if e.type == events.COUPON_ISSUED]


def _raised(step: Step, exc: Exception, now: datetime) -> _Result:
    """A step that raised (a bug, data no rule foresaw) is failed with its error, alone."""
    log.error("campaign step %s (cart %s) failed", step.pk, step.cart, exc_info=exc)
    # The database failing under it says nothing about the step: retried like a refused send.
    # Anything else would fail again: failed for good.
    transient = isinstance(exc, (OperationalError, InterfaceError))
    data = events.step_data(step, "failed" if transient else "error")
    return _failed(step, data, f"{type(exc).__name__}: {exc}", now, permanent=not transient)


def _code_publish(one: _Ready, now: datetime) -> _Result | None:
    """None when the message's code may be sent (made on the store's platform, or no platform
    makes the store's codes); else the step's outcome: retried later with the step's backoff
    while the platform fails transiently (``platform_pending``), failed for good when it
    refused the code (``platform_refused``). The issued code's events stay either way."""
    if HOOKS.code_publish is None:
        return None
    step, coupon = one.step, one.prepared.coupon
    assert coupon is not None
    try:
        state = HOOKS.code_publish(coupon, now)
    except Exception as exc:
        result = _raised(step, exc, now)
        result.events[:0] = _issued_codes(step, one.prepared.events)
        return result
    if state.usable:
        return None
    data = dict(one.data, reason=state.reason)
    if state.transient and state.retry_at is not None:
        # Waiting on the platform: deferred to its retry time, without using the step's own
        # attempts (the code's attempts bound the wait: integrations, INTEGRATIONS_CODE_ATTEMPTS).
        result = _deferred(step, data, max(state.retry_at, now), now)
    else:
        error = state.error or state.reason
        result = _failed(step, data, error, now, permanent=not state.transient)
    result.events[:0] = _issued_codes(step, one.prepared.events)
    return result


def _step_decide(
    step: Step, state: CartState | None, known: _Known, now: datetime
) -> _Result | _Ready:
    """Decide one step on plain reads; one that sends gets its message prepared (a short
    transaction: a code issued for a message that then fails to render is undone with it)."""
    facts = _facts(step, state, known)
    outcome = rules.step_decide(facts, now)
    if outcome.action != rules.SEND:
        return _decided(step, outcome, facts, now)
    assert state is not None
    cfg = known.settings.get(step.store_id) or CampaignSettings(store_id=step.store_id)
    # A discount's code (and an on-site offer's record) is written here: undone with it when the
    # rest fails. A plain email writes nothing, and gets no transaction.
    writes = step.channel != "email"
    with transaction.atomic() if writes else contextlib.nullcontext():
        prepared = senders.step_render(
            store=known.stores[step.store_id], settings=cfg, step=step, cart=state, now=now
        )
    data = events.step_data(step, outcome.reason)
    if prepared.skipped is not None:
        data["reason"] = prepared.skipped
        result = _finish(step, data, Step.Status.SKIPPED, events.STEP_SKIPPED, now)
        result.events[:0] = prepared.events
        return result
    # Counted as sent for the batch's later steps (caps), as it is about to be.
    known.sent_to_cart[(step.store_id, step.cart)] += 1
    if step.channel in rules.EMAIL_CHANNELS and step.shopper:
        known.last_email[(step.store_id, step.shopper)] = now
    return _Ready(step, facts, prepared, data)


def _sent(one: _Ready, delivered: delivery.Delivered | None, now: datetime) -> _Result:
    """The outcome of a step whose message was handed over (``delivered``), or whose on-site
    offer is to be pushed (None)."""
    step, data = one.step, one.data
    if delivered is not None and delivered.outcome is not delivery.Outcome.SENT:
        if delivered.permanent:
            data["reason"] = "refused"
        error = delivered.error or str(delivered.outcome)
        result = _failed(step, data, error, now, permanent=delivered.permanent)
        result.events[:0] = one.prepared.events
        return result
    step.message_id = one.prepared.message_id
    data["message_id"] = one.prepared.message_id
    data.update(one.prepared.data)
    result = _finish(step, data, Step.Status.SENT, events.STEP_SENT, now)
    result.events[:0] = one.prepared.events
    return result


def _decided(step: Step, outcome: rules.Outcome, facts: rules.StepFacts, now: datetime) -> _Result:
    """A decision that sends nothing: deferred, failed for good, skipped, suppressed, cancelled."""
    data = events.step_data(step, outcome.reason)
    if outcome.action == rules.DEFER:
        assert outcome.until is not None
        return _deferred(step, data, outcome.until, now)
    if outcome.action == rules.FAIL:
        error = f"{outcome.reason}: a time beyond the calendar (last activity seen {facts.seen_at})"
        return _failed(step, data, error, now, permanent=True)
    status, event_type = {
        rules.SKIP: (Step.Status.SKIPPED, events.STEP_SKIPPED),
        rules.SUPPRESS: (Step.Status.SUPPRESSED, events.STEP_SUPPRESSED),
        rules.CANCEL: (Step.Status.CANCELLED, events.STEP_CANCELLED),
    }[outcome.action]
    return _finish(step, data, status, event_type, now)


def _deferred(step: Step, data: dict[str, Any], until: datetime, now: datetime) -> _Result:
    """Not now: the step is due again at ``until`` (its attempts unchanged)."""
    step.status = Step.Status.PENDING
    step.reason = str(data["reason"])
    step.due_at = until
    data["until"] = until.isoformat()
    event = events.campaign_event(
        cart=step.cart,
        type=events.STEP_DEFERRED,
        data=data,
        now=now,
        key=f"{step.pk}:{until.isoformat()}",
    )
    return _Result(step, "deferred", [event])


def _finish(
    step: Step, data: dict[str, Any], status: str, event_type: str, now: datetime
) -> _Result:
    step.status = status
    step.reason = str(data["reason"])
    step.finished_at = now
    event = events.campaign_event(
        cart=step.cart, type=event_type, data=data, now=now, key=f"{step.pk}:run:{status}"
    )
    return _Result(step, status, [event])


def _failed(
    step: Step,
    data: dict[str, Any],
    error: str,
    now: datetime,
    *,
    permanent: bool = False,
) -> _Result:
    """A transient failure (the mail server refused or was down): retry with backoff, then give
    up and record it. A permanent one (the step cannot run) is recorded as final at once, with
    the reason in ``data`` (``bad_time``, ``error``)."""
    step.attempts += 1
    final = permanent or step.attempts >= MAX_ATTEMPTS
    # The server's answer names the recipient: stored without it (carts.identity).
    error = identity.addresses_redacted(error)[:500]
    data.update({"error": error, "attempt": step.attempts, "final": final})
    if final:
        step.status = Step.Status.FAILED
        step.finished_at = now
    else:
        step.status = Step.Status.PENDING
        step.due_at = now + RETRY_BACKOFF * 2 ** (step.attempts - 1)
    step.reason = str(data["reason"]) if permanent else "failed"
    event = events.campaign_event(
        cart=step.cart,
        type=events.STEP_FAILED,
        data=data,
        now=now,
        key=f"{step.pk}:failed:{step.attempts}",
    )
    return _Result(step, "failed", [event])


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
    if rows:
        by_channel = Counter(channel for _, _, _, channel in rows)

        def count_cancelled() -> None:  # once the order (and the cancellations) committed
            for channel, count in by_channel.items():
                metrics.step_outcome(channel=channel, outcome="cancelled", count=count)

        transaction.on_commit(count_cancelled)
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
