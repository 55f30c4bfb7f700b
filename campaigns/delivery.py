"""Concurrent delivery: many prepared messages in flight from one worker process.

A relay over the internet takes 50-300 ms a message; one connection sending one message after
another caps a worker at a few emails a second. ``deliver`` keeps up to
``CAMPAIGNS_SEND_CONCURRENCY`` messages in flight (the bound for the process's one email backend,
the provider), at most ``CAMPAIGNS_SEND_PER_STORE`` of one store's, so one merchant's sale
neither takes every connection nor trips a provider's per-sender limit; with
``CAMPAIGNS_SEND_RATE`` set, at most that many messages a second leave the process (a provider's
sending-rate quota, divided among the worker processes).

Each message in flight has a sending thread and a connection of its own
(``django.core.mail.get_connection()``: SMTP, anymail's provider APIs, locmem in tests). Threads
and their connections belong to the process, not to one call: they are started as they are
first needed and kept for the next batches, so a batch does not pay a connection's set-up (a TLS
handshake with a provider) per message or per batch. A connection idle for more than
``CAMPAIGNS_SEND_IDLE_SECONDS`` is closed and opened again before its next message (servers
drop idle connections), and a kept one that fails its next message (dropped meanwhile) is
replaced at once and the message tried once more on the new one. Changing the email settings
(tests do) starts a new set.

``deliver`` touches no database itself: the caller's ``check`` (the last plain-read check that
the order still wins) runs in the calling thread, right before messages are handed to free
connections, for as many messages as there are free connections at that moment (one round trip
for all of them; one at a time when the relay is the bottleneck, more when the caller is). It
must not run inside a transaction: a transaction held across network calls holds its locks for
the whole conversation (../shared/PITFALLS.md); ``deliver`` refuses to.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import connection

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to send; ``key`` is the caller's (a step id)."""

    key: int
    store_id: int
    message: EmailMessage


class Outcome(StrEnum):
    SENT = "sent"  # the server (or provider) accepted it
    REFUSED = "refused"  # the server refused it or could not be reached: see error, permanent
    NOT_SENT = "not_sent"  # the check said no (or raised: see error); nothing left the process


@dataclass(frozen=True, slots=True)
class Delivered:
    item: Outgoing
    outcome: Outcome
    error: str = ""
    # REFUSED: the server answered 5xx for the message (or the provider refused its recipients):
    # sending it again will not help. False: a 4xx, a lost connection, a timeout: try later.
    permanent: bool = False
    provider_id: str = ""  # the provider's id for the message (anymail), when it gives one


class InTransaction(RuntimeError):
    """``deliver`` was called inside a transaction."""


# The last check: given the messages about to leave, whether each may (True) or not (False).
Check = Callable[[Sequence[Outgoing]], Sequence[bool]]
# Results as they come: called in the calling thread with results not reported before.
Done = Callable[[list["Delivered"]], None]
# How often the calling thread wakes, while it waits, to report results to ``done``.
_REPORT_SECONDS = 0.05


def deliver(
    items: Iterable[Outgoing],
    *,
    check: Check | None = None,
    done: Done | None = None,
    done_every: int = 1,
    done_within: float | None = None,
    concurrency: int | None = None,
    per_store: int | None = None,
) -> list[Delivered]:
    """Send ``items`` concurrently; one result per item, in their order. Each message is handed
    to a connection at most once, after ``check`` (if given) allowed it. Never raises for a
    delivery problem. Raises InTransaction when the calling thread is inside
    ``transaction.atomic`` (outside tests' own wrapping transaction).

    ``items`` may be a generator that prepares each message as it is asked for: it is asked for
    the next one while every connection is busy (or the messages already prepared wait for
    their store's turn), so preparing the batch overlaps sending it. It runs in the calling
    thread and must not leave a transaction open across its ``yield``.

    ``done``, if given, gets the results as they come, in the calling thread, once
    ``done_every`` of them are waiting or, with ``done_within``, once the oldest of them has
    waited that many seconds (and the last ones before ``deliver`` returns): each result exactly
    once. The step runner records outcomes there, so a worker killed mid-batch has all it sent
    recorded but the messages answered in its last ``done_within`` seconds (and those still on
    the wire): a slow relay or a slow batch no longer leaves up to ``done_every`` - 1 of them
    unrecorded. An exception from it is logged; sending goes on."""
    if in_transaction():
        raise InTransaction("deliver() must not run inside a transaction (it talks to the network)")
    rate = float(settings.CAMPAIGNS_SEND_RATE)
    pool = _pool(max(1, concurrency or settings.CAMPAIGNS_SEND_CONCURRENCY), rate)
    store_limit = max(1, per_store or settings.CAMPAIGNS_SEND_PER_STORE)
    return _Run(pool, iter(items), store_limit, check, done, done_every, done_within).run()


def in_transaction() -> bool:
    """Whether the caller holds a transaction (network calls must not: integrations too)."""
    # pytest-django's ``db`` fixture (Django's TestCase) wraps each test in atomic blocks marked
    # ``_from_testcase``; those are not the caller's transactions.
    return connection.in_atomic_block and not all(
        getattr(block, "_from_testcase", False) for block in connection.atomic_blocks
    )


# The process's senders ---------------------------------------------------------------------------

_SETTINGS = (
    "EMAIL_BACKEND",
    "EMAIL_HOST",
    "EMAIL_PORT",
    "EMAIL_HOST_USER",
    "EMAIL_HOST_PASSWORD",
    "EMAIL_USE_TLS",
    "EMAIL_USE_SSL",
    "EMAIL_TIMEOUT",
    "EMAIL_SSL_KEYFILE",
    "EMAIL_SSL_CERTFILE",
    "ANYMAIL",
)
_pools_lock = threading.Lock()
_current: _Pool | None = None


def _pool(size: int, rate: float) -> _Pool:
    """The process's senders for the email settings in force, this size and rate (a forked
    child, such as a Celery worker's, starts its own)."""
    global _current
    key = (os.getpid(), size, rate, repr([getattr(settings, name, None) for name in _SETTINGS]))
    with _pools_lock:
        if _current is None or _current.key != key:
            if _current is not None and _current.key[0] == os.getpid():
                _current.close()
            _current = _Pool(key, size, rate)
        return _current


def senders_close() -> None:
    """Close the process's connections (at exit; tests)."""
    global _current
    with _pools_lock:
        if _current is not None and _current.key[0] == os.getpid():
            _current.close()
        _current = None


atexit.register(senders_close)


class _Pool:
    """Up to ``size`` sending threads, each with its connection, and what bounds the messages
    handed to them (across every run using it): ``free`` connections, ``busy`` messages per
    store, and, when ``rate`` is set, a token bucket of ``rate`` messages a second (at most a
    tenth of a second's worth at once: no second sees much more than ``rate``)."""

    def __init__(self, key: tuple[Any, ...], size: int, rate: float = 0.0) -> None:
        self.key = key
        self.size = size
        self.rate = rate
        self.burst = max(1.0, rate / 10)  # a tenth of a second's worth at once
        self.tokens = self.burst  # (under self.changed)
        self.refilled = time.monotonic()
        self.changed = threading.Condition()
        self.free = size  # slots not taken (under self.changed)
        self.busy: Counter[int] = Counter()  # in flight per store (under self.changed)
        self.idle: list[_Sender] = []  # started and waiting for a job (under self.changed)
        self.senders: list[_Sender] = []

    def take(
        self,
        items: Sequence[Outgoing],
        pending: list[int],
        per_store: int,
        *,
        wait: float | None,
    ) -> list[int]:
        """Take as many pending messages as there are free slots and their stores have room
        for (in order); each is counted as in flight. ``wait``: 0 takes what is free now (maybe
        none); None waits for at least one (unless none is pending); seconds wait at most that
        long for one."""
        deadline = None if wait is None else time.monotonic() + wait
        with self.changed:
            while True:
                self._refill()
                taken: list[int] = []
                for index in pending:
                    if self.free == 0 or (self.rate and self.tokens < 1):
                        break
                    store_id = items[index].store_id
                    if self.busy[store_id] < per_store:
                        self.free -= 1
                        self.busy[store_id] += 1
                        if self.rate:
                            self.tokens -= 1
                        taken.append(index)
                left = None if deadline is None else deadline - time.monotonic()
                if taken or not pending or (left is not None and left <= 0):
                    return taken
                # Woken by a released slot, or when the next token is due.
                token = (1 - self.tokens) / self.rate if self.rate else None
                self.changed.wait(min(t for t in (left, token, 3600.0) if t is not None))

    def _refill(self) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now

    def release(self, store_id: int) -> None:
        with self.changed:
            self.free += 1
            self.busy[store_id] -= 1
            self.changed.notify_all()

    def submit(self, job: tuple[_Run, int]) -> None:
        """Give a job to an idle sender (a taken slot guarantees one exists or may start)."""
        with self.changed:
            if self.idle:
                sender = self.idle.pop()
            else:
                sender = _Sender(self, len(self.senders))
                self.senders.append(sender)
        sender.give(job)

    def done(self, sender: _Sender) -> None:
        with self.changed:
            self.idle.append(sender)

    def close(self) -> None:
        with self.changed:
            senders = list(self.senders)
        for sender in senders:
            sender.give(None)


class _Sender:
    """One sending thread and its connection, kept across runs."""

    def __init__(self, pool: _Pool, number: int) -> None:
        self.pool = pool
        self.jobs: list[tuple[_Run, int] | None] = []
        self.ready = threading.Condition()
        self.mail: Any = None
        self.used_at = 0.0
        self.thread = threading.Thread(target=self._work, name=f"deliver-{number}", daemon=True)
        self.thread.start()

    def give(self, job: tuple[_Run, int] | None) -> None:
        with self.ready:
            self.jobs.append(job)
            self.ready.notify()

    def _next(self) -> tuple[_Run, int] | None:
        with self.ready:
            while not self.jobs:
                self.ready.wait()
            return self.jobs.pop(0)

    def _work(self) -> None:
        try:
            while (job := self._next()) is not None:
                run, index = job
                item = run.items[index]
                result = self._send(item)
                self.pool.done(self)  # idle before the slot is free: a taken slot finds it
                run.finish(index, result)
                self.pool.release(item.store_id)
        finally:
            self._close()

    def _send(self, item: Outgoing) -> Delivered:
        idle = float(settings.CAMPAIGNS_SEND_IDLE_SECONDS)
        if self.mail is not None and time.monotonic() - self.used_at > idle:
            self._close()  # the server may have dropped it meanwhile
        reused = self.mail is not None
        result, keep = self._try(item)
        if reused and not keep and result.outcome is Outcome.REFUSED and not result.permanent:
            # A kept connection the server dropped (or that broke) fails its next command: once
            # more on a new one. (A message the server took before dropping the connection may
            # arrive twice, with the same Message-ID: as the step's own retry would send it.)
            result, keep = self._try(item)
        self.used_at = time.monotonic()
        if not keep:
            self._close()
        return result

    def _try(self, item: Outgoing) -> tuple[Delivered, bool]:
        try:
            if self.mail is None:
                mail = get_connection(fail_silently=False)
                # Opened here, the backend keeps it open after send_messages (it closes only
                # a connection it opened itself) until _close.
                mail.open()
                self.mail = mail
            result, keep = _send(self.mail, item)
        except Exception as exc:  # the backend cannot even be made: try later
            result, keep = _refused(item, exc, permanent=False), False
        if not keep:
            self._close()
        return result, keep

    def _close(self) -> None:
        if self.mail is not None:
            with contextlib.suppress(Exception):
                self.mail.close()
            self.mail = None


class _Run:
    """One ``deliver`` call: the calling thread prepares (pulls from ``source``), checks,
    dispatches and reports results to ``done``; the pool's senders send."""

    def __init__(
        self,
        pool: _Pool,
        source: Iterator[Outgoing],
        per_store: int,
        check: Check | None,
        done: Done | None = None,
        done_every: int = 1,
        done_within: float | None = None,
    ) -> None:
        self.pool = pool
        self.source: Iterator[Outgoing] | None = source  # None once exhausted
        self.per_store = per_store
        self.check = check
        self.done = done
        self.done_every = max(1, done_every)
        self.done_within = done_within
        self.items: list[Outgoing] = []
        self.results: list[Delivered | None] = []
        self.finished = threading.Condition()
        self.left = 0  # results still to come (under self.finished)
        self.unreported: list[int] = []  # results not given to done yet (under self.finished)
        self.oldest = 0.0  # when the first of them finished (monotonic; under self.finished)
        self.error: Exception | None = None  # raised by source

    def run(self) -> list[Delivered]:
        pending: list[int] = []
        while True:
            self._report(self.done_every)
            # Prepare as many as there are free connections, so that one check asks about
            # all that leave together; then, while messages are still to be prepared, take
            # only what can leave now and prepare the next one otherwise (ahead of the
            # connections' turn); once all are prepared, wait for room.
            if self.source is not None and len(pending) < self.pool.free:
                self._pull(pending)
                continue
            taken = self.pool.take(
                self.items,
                pending,
                self.per_store,
                wait=0 if self.source is not None else self._nap(),
            )
            if not taken:
                if self.source is not None:
                    self._pull(pending)
                elif not pending:
                    break  # all handed over
                continue
            gone = set(taken)
            pending = [i for i in pending if i not in gone]
            for index, go in zip(taken, self._allowed(taken), strict=True):
                if go is True:
                    self.pool.submit((self, index))
                    continue
                error = "" if go is False else go
                self.finish(index, Delivered(self.items[index], Outcome.NOT_SENT, error=error))
                self.pool.release(self.items[index].store_id)
        while True:
            with self.finished:
                if not self.left:
                    break
                self.finished.wait(self._nap())
            self._report(self.done_every)
        self._report(1)
        if self.error is not None:  # the caller's bug, raised once what left has its result
            raise self.error
        return [r for r in self.results if r is not None]

    def _nap(self) -> float | None:
        """How long the calling thread may wait before it must report (None: no ``done``, only
        the results wake it): every _REPORT_SECONDS, sooner when the oldest unreported result
        turns ``done_within`` old before that."""
        if self.done is None:
            return None
        with self.finished:
            if self.done_within is None or not self.unreported:
                return _REPORT_SECONDS
            due = self.oldest + self.done_within - time.monotonic()
        return min(_REPORT_SECONDS, max(0.005, due))

    def _report(self, at_least: int) -> None:
        """Give ``done`` the results that finished since the last time, once there are
        ``at_least`` of them or the oldest has waited ``done_within`` seconds."""
        if self.done is None:
            return
        with self.finished:
            if not self.unreported:
                return
            overdue = (
                self.done_within is not None and time.monotonic() - self.oldest >= self.done_within
            )
            if len(self.unreported) < at_least and not overdue:
                return
            batch, self.unreported = self.unreported, []
        try:
            self.done([r for i in batch if (r := self.results[i]) is not None])
        except Exception:  # the caller's to handle; sending goes on
            log.exception("reporting %d delivery result(s) failed", len(batch))

    def _pull(self, pending: list[int]) -> None:
        assert self.source is not None
        try:
            item = next(self.source, None)
        except Exception as exc:
            self.error = exc
            item = None
        if item is None:
            self.source = None
            return
        with self.finished:
            self.items.append(item)
            self.results.append(None)
            self.left += 1
        pending.append(len(self.items) - 1)

    def _allowed(self, taken: list[int]) -> list[bool | str]:
        """The check's answer per message (an error's description when it failed: no
        permission to send)."""
        if self.check is None:
            return [True] * len(taken)
        try:
            answers = list(self.check([self.items[i] for i in taken]))
            if len(answers) != len(taken):
                raise ValueError(f"the check answered {len(answers)} of {len(taken)} messages")
        except Exception as exc:
            log.exception("the check before sending failed for %d message(s)", len(taken))
            return [_describe(exc)] * len(taken)
        return [bool(a) for a in answers]

    def finish(self, index: int, result: Delivered) -> None:
        with self.finished:
            self.results[index] = result
            self.left -= 1
            if not self.unreported:
                self.oldest = time.monotonic()
            self.unreported.append(index)
            self.finished.notify_all()


def _send(mail: Any, item: Outgoing) -> tuple[Delivered, bool]:
    """Send one message on ``mail``; the result and whether the connection is still good."""
    try:
        sent = mail.send_messages([item.message])
    except smtplib.SMTPRecipientsRefused as exc:
        # smtplib resets the transaction (RSET) after refused recipients: the connection stays.
        codes = [code for code, _ in exc.recipients.values()]
        permanent = bool(codes) and all(500 <= code < 600 for code in codes)
        return _refused(item, exc, permanent=permanent), True
    except smtplib.SMTPAuthenticationError as exc:  # our configuration, not the message
        return _refused(item, exc, permanent=False), False
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        return _refused(item, exc, permanent=500 <= exc.smtp_code < 600), True
    except smtplib.SMTPResponseException as exc:
        return _refused(item, exc, permanent=500 <= exc.smtp_code < 600), False
    except Exception as exc:  # lost connection, timeout, a provider's API error, a bug
        return _refused(item, exc, permanent=_anymail_refused(exc)), False
    if not sent:
        return _refused(item, "the backend sent nothing (no recipients?)", permanent=True), True
    status = getattr(item.message, "anymail_status", None)
    provider_id = getattr(status, "message_id", None)
    provider_id = "" if provider_id is None else str(provider_id)
    return Delivered(item, Outcome.SENT, provider_id=provider_id), True


def _anymail_refused(exc: Exception) -> bool:
    # The provider refused every recipient (invalid, bounced before, suppressed at the
    # provider): permanent. Its other API errors (429, 5xx, a wrong key) are retried.
    try:
        from anymail.exceptions import AnymailRecipientsRefused
    except ImportError:  # pragma: no cover - anymail is a dependency
        return False
    return isinstance(exc, AnymailRecipientsRefused)


def _refused(item: Outgoing, exc: Exception | str, *, permanent: bool) -> Delivered:
    error = exc if isinstance(exc, str) else _describe(exc)
    return Delivered(item, Outcome.REFUSED, error=error, permanent=permanent)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
