"""Concurrent delivery: many prepared messages in flight from one worker process.

A relay over the internet takes 50-300 ms a message; one connection sending one message after
another caps a worker at a few emails a second. ``deliver`` keeps up to
``CAMPAIGNS_SEND_CONCURRENCY`` messages in flight, each on a connection of its own (a thread per
connection, each with its own ``django.core.mail.get_connection()``, reused for the thread's
next messages), and at most ``CAMPAIGNS_SEND_PER_STORE`` of one store's, so one merchant's sale
neither takes every connection nor trips a provider's per-sender limit.

It works with any Django email backend (SMTP, anymail's provider APIs, locmem in tests) and
touches no database itself: the caller's ``before_send`` (the last plain-read check that the
order still wins) runs in the calling thread, right before a message is handed to a free
connection. It must not run inside a transaction: a transaction held across network calls holds
its locks for the whole conversation (../shared/PITFALLS.md); ``deliver`` refuses to.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import smtplib
import threading
from collections import Counter
from collections.abc import Callable, Sequence
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
    NOT_SENT = "not_sent"  # before_send said no (or raised: see error); nothing left the process


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


def deliver(
    items: Sequence[Outgoing],
    *,
    before_send: Callable[[Outgoing], bool] | None = None,
    concurrency: int | None = None,
    per_store: int | None = None,
) -> list[Delivered]:
    """Send ``items`` concurrently; one result per item, in their order. Each message is handed
    to a connection at most once, after ``before_send`` (if given) returned True for it. Never
    raises for a delivery problem. Raises InTransaction when the calling thread is inside
    ``transaction.atomic`` (outside tests' own wrapping transaction)."""
    if _in_transaction():
        raise InTransaction("deliver() must not run inside a transaction (it talks to the network)")
    if not items:
        return []
    limit = max(1, concurrency or settings.CAMPAIGNS_SEND_CONCURRENCY)
    store_limit = max(1, per_store or settings.CAMPAIGNS_SEND_PER_STORE)
    # No more threads (and connections) than can be busy at once: the per-store bound caps it.
    stores = len({item.store_id for item in items})
    workers = min(limit, len(items), store_limit * stores)
    return _Run(list(items), workers, store_limit, before_send).run()


def _in_transaction() -> bool:
    # pytest-django's ``db`` fixture (Django's TestCase) wraps each test in atomic blocks marked
    # ``_from_testcase``; those are not the caller's transactions.
    return connection.in_atomic_block and not all(
        getattr(block, "_from_testcase", False) for block in connection.atomic_blocks
    )


class _Run:
    """One ``deliver`` call: the calling thread dispatches, ``workers`` threads send."""

    def __init__(
        self,
        items: list[Outgoing],
        workers: int,
        per_store: int,
        before_send: Callable[[Outgoing], bool] | None,
    ) -> None:
        self.items = items
        self.workers = workers
        self.per_store = per_store
        self.before_send = before_send
        self.results: list[Delivered | None] = [None] * len(items)
        self.changed = threading.Condition()
        self.free = workers  # connections not sending (under self.changed)
        self.busy: Counter[int] = Counter()  # messages in flight per store (under self.changed)
        self.jobs: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    def run(self) -> list[Delivered]:
        threads = [
            threading.Thread(target=self._work, name=f"deliver-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        try:
            pending = list(range(len(self.items)))
            while pending:
                index = self._next(pending)
                pending.remove(index)
                self._dispatch(index)
        finally:
            for _ in threads:
                self.jobs.put(None)
            for thread in threads:
                thread.join()
        assert all(r is not None for r in self.results)
        return [r for r in self.results if r is not None]

    def _next(self, pending: list[int]) -> int:
        """Wait for a free connection and take the first pending message whose store may have
        one more in flight; both are counted as taken."""
        with self.changed:
            while True:
                if self.free:
                    for index in pending:
                        store_id = self.items[index].store_id
                        if self.busy[store_id] < self.per_store:
                            self.free -= 1
                            self.busy[store_id] += 1
                            return index
                self.changed.wait()

    def _release(self, index: int) -> None:
        with self.changed:
            self.free += 1
            self.busy[self.items[index].store_id] -= 1
            self.changed.notify_all()

    def _dispatch(self, index: int) -> None:
        item = self.items[index]
        if self.before_send is not None:
            try:
                go = self.before_send(item)
            except Exception as exc:  # a failed check is no permission to send
                log.exception("before_send failed for message %s", item.key)
                self.results[index] = Delivered(item, Outcome.NOT_SENT, error=_describe(exc))
                self._release(index)
                return
            if not go:
                self.results[index] = Delivered(item, Outcome.NOT_SENT)
                self._release(index)
                return
        self.jobs.put(index)

    def _work(self) -> None:
        mail: Any = None
        try:
            while (index := self.jobs.get()) is not None:
                item = self.items[index]
                try:
                    if mail is None:
                        mail = get_connection(fail_silently=False)
                    result, keep = _send(mail, item)
                except Exception as exc:  # the backend cannot even be made: try later
                    result, keep = _refused(item, exc, permanent=False), False
                if not keep and mail is not None:
                    _close(mail)
                    mail = None
                self.results[index] = result
                self._release(index)
        finally:
            if mail is not None:
                _close(mail)


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


def _close(mail: Any) -> None:
    with contextlib.suppress(Exception):
        mail.close()
