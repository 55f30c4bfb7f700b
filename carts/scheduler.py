"""The periodic-job scheduler: one active instance at a time, the others standing by.

The active instance holds a Redis lock with a TTL and renews it every tick; a standby polls the
lock and takes over when it is released (clean stop: within a tick) or expires (crash: within the
TTL). While active, it writes the scheduler heartbeat that GET /healthz reads and runs the jobs
registered with :func:`register`, typically from an ``AppConfig.ready()``.

Jobs run one after another in the scheduler's loop, so they must be short: enqueue work, do not do
it. The lock is renewed before each job, but a job that outlasts the TTL lets a standby take over
while it still runs; jobs must therefore be idempotent, like every task (STYLE.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
from redis.exceptions import LockError, LockNotOwnedError

from carts import metrics

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "health:scheduler"  # read by config.health
HEARTBEAT_EVERY = 5.0
HEARTBEAT_TTL = 120  # an old heartbeat disappears rather than lingering forever
LOCK_KEY = "scheduler:lock"
RELEASED_SUFFIX = (
    ":released"  # who last gave the lock up cleanly (a take-over after it is no expiry)
)
LOCK_TTL = 15.0
TICK = 0.25  # campaigns enqueue due steps every 0.25 s (bench/campaigns.py: lateness)


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    every_seconds: float
    fn: Callable[[], object]


_registry: dict[str, Job] = {}


def register(name: str, every_seconds: float, fn: Callable[[], object]) -> None:
    """Run ``fn()`` every ``every_seconds`` on the active scheduler (first when it activates)."""
    if every_seconds <= 0:
        raise ValueError(f"every_seconds must be positive, not {every_seconds!r}")
    known = _registry.get(name)
    if known is not None and known.fn is not fn:
        raise ValueError(f"a scheduler job named {name!r} is already registered")
    _registry[name] = Job(name, float(every_seconds), fn)


def registered() -> list[Job]:
    return list(_registry.values())


def client(url: str | None = None) -> redis.Redis:
    if url is None:
        from django.conf import settings

        url = settings.REDIS_URL
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def write_heartbeat(conn: redis.Redis, key: str = HEARTBEAT_KEY) -> None:
    conn.set(key, repr(time.time()), ex=HEARTBEAT_TTL)


class Scheduler:
    """Seeks or holds the lock, then runs what is due; :meth:`run` loops until ``stop`` is set."""

    def __init__(
        self,
        *,
        conn: redis.Redis,
        jobs: Sequence[Job] = (),
        lock_key: str = LOCK_KEY,
        lock_ttl: float = LOCK_TTL,
        heartbeat_key: str = HEARTBEAT_KEY,
        heartbeat_every: float = HEARTBEAT_EVERY,
        tick: float = TICK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if tick >= lock_ttl / 2:
            raise ValueError("the tick must be well under the lock TTL, or the lock lapses")
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.active = False
        self.tick = tick
        self._conn = conn
        self._lock_key = lock_key
        self._lock = conn.lock(lock_key, timeout=lock_ttl, thread_local=False)
        heartbeat = Job("heartbeat", heartbeat_every, lambda: write_heartbeat(conn, heartbeat_key))
        self._jobs = [heartbeat, *jobs]
        self._due: dict[str, float] = {}
        self._clock = clock
        self._standby_logged = False
        self._owner_seen: str | None = None  # the other holder we stood by for

    def run(self, stop: threading.Event) -> None:
        log.info("scheduler %s starting (%d job(s))", self.identity, len(self._jobs))
        try:
            while not stop.is_set():
                self.step()
                stop.wait(self.tick)
        finally:
            self.release()
            log.info("scheduler %s stopped", self.identity)

    def step(self) -> None:
        """One turn: keep (or seek) the lock, then run every job that is due."""
        try:
            if not self._hold_lock():
                return
            for job in self._jobs:
                if self._clock() < self._due.get(job.name, float("-inf")):
                    continue
                if not self._renew():
                    return
                self._run(job)
                self._due[job.name] = self._clock() + job.every_seconds
        except redis.RedisError as exc:
            # Whether we still hold the lock is unknown; run nothing until Redis answers again.
            if self.active:
                log.warning("redis unavailable (%s); standing by until it answers", exc)
            self.active = False

    def release(self) -> None:
        """Give the lock up (on a clean stop) so a standby takes over within one tick."""
        if not self.active:
            return
        self.active = False
        # If it expired or was taken over, there is nothing of ours to release.
        with contextlib.suppress(LockError, redis.RedisError):
            self._lock.release()
            self._conn.set(self._lock_key + RELEASED_SUFFIX, self.identity, ex=60)

    def _hold_lock(self) -> bool:
        if self.active:
            return self._renew()
        if not self._lock.acquire(blocking=False, token=self.identity):
            raw = self._conn.get(self._lock_key)
            owner = raw.decode() if isinstance(raw, bytes) else raw
            if owner != self.identity:
                self._owner_seen = owner
                if not self._standby_logged:
                    log.info("standby: the scheduler lock is held by %s", owner)
                    self._standby_logged = True
                return False
            # Our own lock from before a Redis outage: carry on holding it.
            self._lock.local.token = self.identity.encode()
            if not self._renew_owned():
                return False
        self.active = True
        self._standby_logged = False
        self._due.clear()  # on (re)activation every job is due at once
        log.info("active: scheduler %s holds the lock", self.identity)
        self._count_take_over()
        return True

    def _count_take_over(self) -> None:
        """A take-over from a holder that did not give the lock up cleanly is a lease expiry
        (``cartrecovery_lease_expiries_total{lease="scheduler"}``)."""
        seen, self._owner_seen = self._owner_seen, None
        if seen is None:
            return
        raw = self._conn.get(self._lock_key + RELEASED_SUFFIX)
        released = raw.decode() if isinstance(raw, bytes) else raw
        if released != seen:
            log.warning("the scheduler lock of %s expired; %s took over", seen, self.identity)
            metrics.lease_expired("scheduler")

    def _renew(self) -> bool:
        if self._renew_owned():
            return True
        log.warning("scheduler %s lost the lock; standing by", self.identity)
        self.active = False
        return False

    def _renew_owned(self) -> bool:
        try:
            self._lock.reacquire()
        except LockNotOwnedError:
            return False
        return True

    def _run(self, job: Job) -> None:
        try:
            job.fn()
        except Exception:
            log.exception("scheduler job %s failed", job.name)
