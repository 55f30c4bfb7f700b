"""Campaign steps benchmark: due email steps drained by one Celery worker to an SMTP sink, next to
one trivial Celery task per step on the same broker and worker, in the same run.

    .venv/bin/python bench/campaigns.py [--carts N] [--rounds N] [--concurrency 1 2]
        [--rate STEPS_PER_S] [--unbatched N] [--keep-db]

Defaults: 10,000 carts, 3 rounds, concurrency 1 and 2 (~15 minutes on 2 cores). Smoke test:
``--carts 500 --rounds 1`` (~35 s).

What runs, all on loopback, each in a process group of its own (stopped on any exit, Ctrl-C too):
  - an SMTP sink: aiosmtpd on uvloop in a process of its own (this file with ``--sink``), so it
    does not compete with the measuring process for a GIL. It accepts every message and writes
    one line per message: arrival time, Message-ID, recipients. The Message-ID names the step
    (campaigns.emails.message_id), which gives each step's arrival at the sink;
  - one Celery worker, ``celery -A config worker --concurrency C --without-mingle
    --without-gossip --loglevel WARNING``, with ``DJANGO_DEBUG=0`` and Django's SMTP backend
    pointed at the sink. WARNING, not INFO as in ``make run``: at INFO the worker logs two lines
    per task (received, succeeded), which slowed the one-task-per-step baseline by ~10% here and
    the batched steps by next to nothing, so the ratio would flatter the product. It is started
    afresh for each round and concurrency, and serves every phase of that round (below), so the
    product and the baseline meet the same worker;
  - the real scheduler, ``manage.py run_scheduler``, during the lateness phase.

Isolation. The run creates its own PostgreSQL database on the development server (embedded under
var/ unless DATABASE_URL is set), migrates it, and drops it at the end; and it uses a Redis logical
database of its own on the development Redis (broker, scheduler lock, heartbeats, cache), flushed
at the end. Not the development database, because enrolment (``abandoned_carts_enroll``) and
hand-out (``due_steps_enqueue``) serve every store: on the development database the bench's
scheduler would enrol the abandoned carts of every other active campaign (7,197 of them, in 49
campaigns, when this was written) and its worker would run their steps; and a ``make run``
scheduler there would take the bench's due steps. Not just another queue, because
``steps_publish`` always publishes to the default one. The broker, the worker, the scheduler and
the publisher in this process all use that database (``REDIS_URL``), and one fresh store holds
the run's carts.

Set-up, through the services: carts are appended with ``events_append`` (250 carts, 500 events
per call): a ``cart.item_added`` (45.00 EUR) and, last, a ``checkout.contact_captured`` with a
distinct address and ``consent.email = true``. One active campaign (inactivity 30 min, no
holdout, no quiet hours, no shopper cap, no cart cap) with one email tier 60 minutes after
abandonment, and ``CampaignSettings`` (defaults: open and click tracking on). Steps are made by
``enrolment.abandoned_carts_enroll``. The tier's delay is 60 min rather than 0 so that the lateness
phase can have steps due in the future with their carts already enrolled: a cart whose last
activity was at ``t - 90 min`` is abandoned now and its step is due at ``t``.

Each round, for each worker concurrency (1 and 2; the headline is 1, "drained by one worker"):
  1. throughput: ``--carts`` carts abandoned two hours ago, all steps due. 100 warm-up steps (due
     earlier) are handed out and drained first, untimed. Then the clock starts, this process calls
     ``steps.due_steps_enqueue`` with the real publisher (``steps_publish``: one
     ``campaigns.steps_run`` task per CAMPAIGNS_TASK_STEPS = 50 steps), and the clock stops when
     no step of the store is pending or enqueued any more (polled every 20 ms through the partial
     indexes on those statuses), i.e. all committed. Steps/s = steps / that time. Every step must
     be ``sent``, and the sink must have received exactly one message per step (distinct
     Message-IDs and recipients).
  1b. unbatched (``--unbatched``, default carts/10): as 1, but the publisher in this process runs
     with CAMPAIGNS_TASK_STEPS = 1, so each step is a ``campaigns.steps_run`` task of its own: what
     batching buys, as a second ratio (steps/s batched / unbatched).
  2. baseline: the same number of trivial tasks, one per step, each published the normal way
     (one ``.delay(step_id)`` per task, from this process, over the same broker) and drained by
     the same worker: Celery's built-in ``celery.accumulate``, which returns its arguments, so
     no bench code has to be imported into the worker. 200 untimed warm-up tasks first. The
     clock runs from the first ``.delay()`` until the broker's queue and its unacked set are both
     empty (twice in a row, 20 ms apart). Ratio = steps/s / tasks/s, paired within the round.
  3. lateness: ``--carts`` more carts whose steps come due at a steady ``--rate`` (default 150
     steps/s, under half of what one worker drains here, ~345/s; so 67 s for 10,000 steps),
     handed out by the real scheduler process (every CAMPAIGNS_ENQUEUE_SECONDS = 0.25 s) to the
     same worker. The rate is fixed rather than derived from the throughput, so runs compare.
     The first step is due a few seconds after the scheduler is up (a lead planned from the
     measured set-up rate; the run stops with an error if the set-up overran it). Lateness of a
     step = its message's arrival at the sink - ``Step.due_at`` (the headline: the email has
     reached the mail server), and ``Step.finished_at - due_at`` (``finished_at`` is the time the
     worker took at the start of the step's batch, inside its transaction: it leaves out the
     batch's own sending). p50 / p99 / max over all steps; the same exactly-once checks.

The CPU of the worker (its process group), the sink, every PostgreSQL process (the server is
shared with whatever else runs), this process and the machine is reported for each phase.

The summary gives medians over rounds per concurrency; ratios are medians of each round's paired
ratio. Targets (issue 5): steps/s >= 3x the baseline's tasks/s, and lateness p99 <= 2 s. The last
line printed is one JSON object with every figure (also saved under bench/results/, which git
ignores). ``--carts 500 --rounds 1`` is a smoke test (well under a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import (  # noqa: E402
    Subprocess,
    database_create,
    database_drop,
    database_url_with_name,
    databases_drop_stale,
    django_setup,
    free_port,
    git_head,
    log,
    redis_client,
    redis_db_claim,
    redis_url_with_db,
    results_print,
)

RATIO_TARGET = 3.0
LATENESS_P99_TARGET_S = 2.0
DEFAULT_CARTS = 10_000
DEFAULT_RATE = 150.0  # steps due per second in the lateness phase
INACTIVITY_MINUTES = 30
TIER_DELAY_MINUTES = 60
CARTS_PER_APPEND = 250
WARMUP_STEPS = 100
WARMUP_TASKS = 200
POLL_SECONDS = 0.02
DB_PREFIX = "bench_campaigns_"
PUBLIC_URL = "http://bench.local"
TRIVIAL_TASK = "celery.accumulate"  # built in: returns its arguments
QUEUE = "celery"  # the default queue; kombu keeps priorities 3, 6, 9 in keys of their own
QUEUE_KEYS = (QUEUE, *(f"{QUEUE}\x06\x16{p}" for p in (3, 6, 9)))
UNACKED_KEY = "unacked"
MESSAGE_ID = re.compile(r"<step-(\d+)\.\d+@")


# The SMTP sink (a process of its own: this file with --sink) -------------------------------------


def sink_serve(port: int, out_path: str) -> int:
    """Accept every message on 127.0.0.1:port; one line per message to ``out_path``."""
    import asyncio

    from aiosmtpd.smtp import SMTP

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # every command at INFO otherwise
    out = open(out_path, "a", buffering=1)  # noqa: SIM115 - one line per write, closed below

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            arrived = time.time()
            raw = bytes(envelope.original_content or envelope.content)
            head = raw.split(b"\r\n\r\n", 1)[0]
            message_id = "-"
            for line in head.split(b"\r\n"):
                if line[:11].lower() == b"message-id:":
                    message_id = line[11:].strip().decode(errors="replace")
                    break
            rcpts = ",".join(str(r) for r in envelope.rcpt_tos)
            out.write(f"{arrived:.6f} {message_id} {rcpts}\n")
            return "250 OK"

    handler = Handler()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="bench-sink"), "127.0.0.1", port
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    try:
        import uvloop

        uvloop.run(serve())
    finally:
        out.close()
    return 0


@dataclass(frozen=True, slots=True)
class Received:
    arrived: float  # Unix time at the sink
    step_id: int | None
    rcpts: str


class Sink:
    """The sink process and its output file, read incrementally."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.path = Path(tempfile.mkstemp(prefix="bench-campaigns-sink-", suffix=".log")[1])
        cmd = [sys.executable, str(Path(__file__).resolve()), "--sink", str(self.port)]
        cmd += ["--sink-out", str(self.path)]
        self.process = Subprocess("smtp-sink", cmd, env)
        self._offset = 0

    def start(self, timeout: float = 30) -> None:
        self.process.start()
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.exited()
            if code is not None:
                raise RuntimeError(f"the SMTP sink exited with {code}:\n{self.process.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(512).startswith(b"220"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SMTP sink is not up after {timeout}s")
            time.sleep(0.05)

    def read_new(self) -> list[Received]:
        """Messages that arrived since the last call (whole lines only)."""
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        out = []
        for line in data[:end].decode().splitlines():
            arrived, message_id, rcpts = [*line.split(" ", 2), "", ""][:3]
            match = MESSAGE_ID.match(message_id)
            out.append(Received(float(arrived), int(match[1]) if match else None, rcpts))
        return out

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        self.process.close()
        self.path.unlink(missing_ok=True)


# CPU accounting from /proc -----------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()  # from field 3 (state) on


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of the processes, with their children already reaped."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / CLK_TCK


def group_pids(pgid: int) -> list[int]:
    out = []
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None and int(fields[2]) == pgid:
            out.append(pid)
    return out


def postgres_pids() -> list[int]:
    out = []
    for pid in _pids():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                out.append(pid)
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


class CpuMeter:
    """CPU seconds of named process sets between start() and stop()."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self._start: dict[str, float] = {}
        self._machine: tuple[int, int] = (0, 0)
        self._self = 0.0
        self._wall = 0.0

    def start(self) -> None:
        self._start = {name: cpu_seconds(f()) for name, f in self.groups.items()}
        self._machine = machine_ticks()
        t = os.times()
        self._self = t.user + t.system
        self._wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        out = {
            name: cpu_seconds(f()) - self._start.get(name, 0.0) for name, f in self.groups.items()
        }
        t = os.times()
        out["bench"] = t.user + t.system - self._self
        busy, total = machine_ticks()
        wall = time.monotonic() - self._wall
        share = (busy - self._machine[0]) / max(1, total - self._machine[1])
        out["machine_cores"] = share * (os.cpu_count() or 1)  # cores busy on average
        out["wall"] = wall
        return out


# Set-up through the services ---------------------------------------------------------------------


def store_and_campaign() -> int:
    """A fresh store with one active campaign: one email tier, TIER_DELAY_MINUTES after
    abandonment, no holdout, quiet hours or caps."""
    from decimal import Decimal

    from campaigns.models import Campaign, CampaignSettings, Tier
    from carts import services

    now = datetime.now(UTC)
    store_id = services.store_create(name=f"bench campaigns {now:%Y-%m-%d %H:%M:%S}").store_id
    CampaignSettings.objects.create(store_id=store_id, email_from="Bench shop <shop@example.com>")
    campaign = Campaign.objects.create(
        store_id=store_id,
        name="Bench recovery",
        active=True,
        activated_at=now - timedelta(days=1),
        holdout_share=Decimal("0"),
        inactivity_minutes=INACTIVITY_MINUTES,
        quiet_start=None,
        quiet_end=None,
        shopper_cap_hours=0,
        cart_cap=0,
    )
    Tier.objects.create(
        campaign=campaign,
        position=1,
        channel=Tier.Channel.EMAIL,
        delay_minutes=TIER_DELAY_MINUTES,
        min_score=0.0,
        subject_template="Your cart at {{ store_name }} is waiting",
    )
    return store_id


@dataclass(frozen=True, slots=True)
class BenchCart:
    token: str
    email: str
    last_activity: datetime


def _new_event(type_name: str, cart: str, data: dict[str, Any], at: datetime) -> Any:
    from carts import event_types, services

    version, payload = event_types.validate(type_name, None, data)
    return services.NewEvent(
        event_id=uuid.uuid4(),
        cart=cart,
        type=type_name,
        schema_version=version,
        occurred_at=at,
        data=payload,
    )


def carts_append(store_id: int, carts: Sequence[BenchCart]) -> None:
    """Each cart: an item, then its contact (with consent to email) at ``last_activity``."""
    from carts import services, sources

    for i in range(0, len(carts), CARTS_PER_APPEND):
        events = []
        for cart in carts[i : i + CARTS_PER_APPEND]:
            item = {
                "sku": "SKU-1",
                "name": "Running shoes",
                "quantity": 1,
                "unit_price": 4500,
                "currency": "EUR",
                "category": "shoes",
            }
            contact = {"email": cart.email, "consent": {"email": True}}
            at = cart.last_activity
            events.append(
                _new_event("cart.item_added", cart.token, item, at - timedelta(minutes=2))
            )
            events.append(_new_event("checkout.contact_captured", cart.token, contact, at))
        services.events_append(
            store_id=store_id, events=events, source=sources.Source.server("bench")
        )


def carts_enroll(store_id: int, carts: Sequence[BenchCart]) -> dict[int, datetime]:
    """Enrol the carts (the product's enrolment); their steps: {step id: due_at}."""
    from campaigns import clock, enrolment
    from campaigns.models import Step

    enrolled = enrolment.abandoned_carts_enroll(now=clock.now(), limit=len(carts))
    if enrolled != len(carts):
        raise RuntimeError(f"{enrolled} carts enrolled, expected {len(carts)}")
    tokens = [c.token for c in carts]
    due = dict(Step.objects.filter(store_id=store_id, cart__in=tokens).values_list("id", "due_at"))
    if len(due) != len(carts):
        raise RuntimeError(f"{len(due)} steps for {len(carts)} carts")
    return due


def carts_make(prefix: str, last_activity: Callable[[int], datetime], n: int) -> list[BenchCart]:
    return [
        BenchCart(f"{prefix}-{i}", f"{prefix}-{i}@example.com", last_activity(i)) for i in range(n)
    ]


# Processes ---------------------------------------------------------------------------------------


class Worker:
    """``celery -A config worker``; ready once its consumer writes the worker heartbeat."""

    def __init__(self, *, concurrency: int, env: dict[str, str], name: str) -> None:
        self.concurrency = concurrency
        cmd = [
            sys.executable, "-m", "celery", "-A", "config", "worker",
            "--loglevel", "WARNING", "--concurrency", str(concurrency),
            "--without-mingle", "--without-gossip", "--hostname", f"{name}@%h",
        ]  # fmt: skip
        self.process = Subprocess("worker", cmd, env)

    def start(self, redis: Any, timeout: float = 60) -> None:
        from config.health import WORKER_HEARTBEAT_KEY

        redis.delete(WORKER_HEARTBEAT_KEY)
        self.process.start()
        _wait_for_key(redis, WORKER_HEARTBEAT_KEY, self.process, timeout)

    def pids(self) -> list[int]:
        return group_pids(self.process.pid) if self.process.proc is not None else []

    def check(self) -> None:
        code = self.process.exited()
        if code is not None:
            raise RuntimeError(f"the worker exited with {code}:\n{self.process.output()}")

    def close(self) -> None:
        self.process.close()


class Scheduler:
    """``manage.py run_scheduler``; ready once it holds the lock and wrote its heartbeat."""

    def __init__(self, env: dict[str, str]) -> None:
        cmd = [sys.executable, "manage.py", "run_scheduler"]
        self.process = Subprocess("scheduler", cmd, env)

    def start(self, redis: Any, timeout: float = 60) -> None:
        from carts.scheduler import HEARTBEAT_KEY

        redis.delete(HEARTBEAT_KEY)
        self.process.start()
        _wait_for_key(redis, HEARTBEAT_KEY, self.process, timeout)

    def pids(self) -> list[int]:
        return group_pids(self.process.pid) if self.process.proc is not None else []

    def close(self) -> None:
        self.process.close()


def _wait_for_key(redis: Any, key: str, process: Subprocess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not redis.exists(key):
        code = process.exited()
        if code is not None:
            raise RuntimeError(f"{process.name} exited with {code}:\n{process.output()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} not ready after {timeout}s:\n{process.output()}")
        time.sleep(0.05)


def child_env(*, database_url: str, redis_url: str, sink_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DJANGO_DEBUG="0",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(sink_port),
        CAMPAIGNS_PUBLIC_URL=PUBLIC_URL,
    )
    return env


# Measurement -------------------------------------------------------------------------------------


# Each probe finds one row through the partial indexes on pending and enqueued steps, so polling
# every 20 ms costs PostgreSQL next to nothing (a count over the store's steps was a sequential
# scan: 6 ms a probe at 40,000 steps, a third of a core).
_ANY_OPEN = """
    SELECT EXISTS (SELECT 1 FROM campaigns_step
                   WHERE status = 'pending' AND due_at IS NOT NULL AND store_id = %(store)s)
        OR EXISTS (SELECT 1 FROM campaigns_step
                   WHERE status = 'enqueued' AND enqueued_at IS NOT NULL AND store_id = %(store)s)
"""


def any_open_steps(store_id: int) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_ANY_OPEN, {"store": store_id})
        row = cursor.fetchone()
    return bool(row[0])


def wait_steps_done(store_id: int, worker: Worker, timeout: float) -> float:
    """Poll until no step of the store is open; the time.time() it was first seen so."""
    deadline = time.monotonic() + timeout
    while True:
        if not any_open_steps(store_id):
            return time.time()
        worker.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"steps still open after {timeout:.0f}s")
        time.sleep(POLL_SECONDS)


def broker_backlog(redis: Any) -> int:
    """Messages waiting in the default queue plus those delivered and not yet acked."""
    pipe = redis.pipeline(transaction=False)
    for key in QUEUE_KEYS:
        pipe.llen(key)
    pipe.hlen(UNACKED_KEY)
    return int(sum(pipe.execute()))


def wait_broker_drained(redis: Any, worker: Worker, timeout: float) -> float:
    """Poll until the queue and the unacked set are empty twice in a row; the first time seen."""
    deadline = time.monotonic() + timeout
    first: float | None = None
    while True:
        if broker_backlog(redis) == 0:
            if first is not None:
                return first
            first = time.time()
        else:
            first = None
        worker.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{broker_backlog(redis)} tasks left after {timeout:.0f}s")
        time.sleep(POLL_SECONDS)


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


@dataclass(slots=True)
class Delivery:
    """What the sink and the steps' rows say about a phase's steps."""

    sent: int
    statuses: dict[str, int]
    messages: int  # sink messages naming one of the phase's steps
    distinct_steps: int
    distinct_rcpts: int

    def exactly_once(self, n: int) -> bool:
        return (
            self.sent == n
            and self.messages == n
            and self.distinct_steps == n
            and self.distinct_rcpts == n
        )


def delivery(step_ids: set[int], received: list[Received]) -> Delivery:
    from django.db.models import Count

    from campaigns.models import Step

    statuses = {
        row["status"]: row["n"]
        for row in Step.objects.filter(id__in=step_ids)
        .values("status")
        .annotate(n=Count("id"))
        .order_by()
    }
    mine = [r for r in received if r.step_id in step_ids]
    return Delivery(
        sent=statuses.get("sent", 0),
        statuses=statuses,
        messages=len(mine),
        distinct_steps=len({r.step_id for r in mine}),
        distinct_rcpts=len({r.rcpts for r in mine}),
    )


@dataclass(slots=True)
class Context:
    store_id: int
    run: str
    carts: int
    rate: float
    unbatched: int
    redis: Any
    sink: Sink
    env: dict[str, str]
    setup_carts_per_s: float = 0.0
    unknown_messages: int = 0


def cpu_meter(ctx: Context, worker: Worker, scheduler: Scheduler | None = None) -> CpuMeter:
    groups: dict[str, Callable[[], list[int]]] = {
        "worker": worker.pids,
        "sink": lambda: [ctx.sink.pid],
        "postgres": postgres_pids,
    }
    if scheduler is not None:
        groups["scheduler"] = scheduler.pids
    return CpuMeter(groups)


def cpu_figures(cpu: dict[str, float], per: int) -> dict[str, float]:
    """CPU in ms per step (or task) for each process set, and the machine's busy cores."""
    out = {
        f"cpu_{name}_ms": round(1000 * seconds / max(1, per), 3)
        for name, seconds in cpu.items()
        if name not in ("machine_cores", "wall")
    }
    out["machine_cores"] = round(cpu["machine_cores"], 2)
    return out


def phase_throughput(ctx: Context, worker: Worker, tag: str) -> dict[str, Any]:
    """All steps due at once; one hand-out; until every step is committed."""
    from campaigns import clock, steps

    n = ctx.carts
    now = datetime.now(UTC)
    # Warm-up carts went idle earlier, so their steps are due first and handed out alone.
    warm = carts_make(f"{tag}-w", lambda i: now - timedelta(hours=3, seconds=i), WARMUP_STEPS)
    timed = carts_make(f"{tag}-t", lambda i: now - timedelta(hours=2, seconds=i / 1000), n)
    log(f"{tag}: throughput set-up, {n + WARMUP_STEPS} carts")
    began = time.monotonic()
    carts_append(ctx.store_id, warm + timed)
    # Enrolment takes the longest-idle carts first: the warm-up carts, then (below) the others.
    due_warm = carts_enroll(ctx.store_id, warm)
    setup_s = time.monotonic() - began

    log(f"{tag}: warm-up, {WARMUP_STEPS} steps")
    assert steps.due_steps_enqueue(now=clock.now(), limit=WARMUP_STEPS) == WARMUP_STEPS
    wait_steps_done(ctx.store_id, worker, timeout=120)
    time.sleep(0.1)
    warm_delivery = delivery(set(due_warm), ctx.sink.read_new())
    if not warm_delivery.exactly_once(WARMUP_STEPS):
        raise RuntimeError(f"warm-up steps not sent once each: {warm_delivery}")

    began = time.monotonic()
    due = carts_enroll(ctx.store_id, timed)
    setup_s += time.monotonic() - began
    ctx.setup_carts_per_s = (n + WARMUP_STEPS) / setup_s
    log(f"{tag}: set up at {ctx.setup_carts_per_s:.0f} carts/s")

    log(f"{tag}: throughput, {n} steps")
    meter = cpu_meter(ctx, worker)
    meter.start()
    t0 = time.time()
    handed = steps.due_steps_enqueue(now=clock.now(), limit=n)
    handed_out = time.time()
    t1 = wait_steps_done(ctx.store_id, worker, timeout=max(120, n / 20))
    cpu = meter.stop()
    if handed != n:
        raise RuntimeError(f"{handed} steps handed out, expected {n}")
    time.sleep(0.1)
    received = ctx.sink.read_new()
    check = delivery(set(due), received)
    mine = sorted(r.arrived for r in received if r.step_id in due)
    ctx.unknown_messages += sum(1 for r in received if r.step_id not in due)
    seconds = t1 - t0
    return {
        "steps": n,
        "seconds": round(seconds, 3),
        "steps_per_s": round(n / seconds, 1),
        "hand_out_s": round(handed_out - t0, 3),
        # The sink's view: from the first message to the last (leaves out the hand-out and the
        # last batch's commit).
        "sink_msgs_per_s": round(len(mine) / max(1e-9, mine[-1] - mine[0]), 1) if mine else 0,
        "first_message_s": round(mine[0] - t0, 3) if mine else None,
        "exactly_once": check.exactly_once(n),
        "statuses": check.statuses,
        "sink_messages": check.messages,
        **cpu_figures(cpu, n),
    }


def phase_unbatched(ctx: Context, worker: Worker, tag: str) -> dict[str, Any]:
    """What batching buys: due steps handed out one per ``campaigns.steps_run`` task."""
    from django.test import override_settings

    from campaigns import clock, steps

    n = ctx.unbatched
    now = datetime.now(UTC)
    carts = carts_make(f"{tag}-u", lambda i: now - timedelta(hours=2, seconds=i / 1000), n)
    log(f"{tag}: unbatched, {n} steps, one per task")
    carts_append(ctx.store_id, carts)
    due = carts_enroll(ctx.store_id, carts)
    meter = cpu_meter(ctx, worker)
    meter.start()
    t0 = time.time()
    with override_settings(CAMPAIGNS_TASK_STEPS=1):  # read by steps_publish in this process
        handed = steps.due_steps_enqueue(now=clock.now(), limit=n)
    t1 = wait_steps_done(ctx.store_id, worker, timeout=max(120, n / 5))
    cpu = meter.stop()
    if handed != n:
        raise RuntimeError(f"{handed} steps handed out, expected {n}")
    time.sleep(0.1)
    received = ctx.sink.read_new()
    check = delivery(set(due), received)
    ctx.unknown_messages += sum(1 for r in received if r.step_id not in due)
    return {
        "steps": n,
        "seconds": round(t1 - t0, 3),
        "steps_per_s": round(n / (t1 - t0), 1),
        "exactly_once": check.exactly_once(n),
        "statuses": check.statuses,
        **cpu_figures(cpu, n),
    }


def phase_baseline(ctx: Context, worker: Worker, tag: str) -> dict[str, Any]:
    """One trivial task per step, one ``.delay()`` each, drained by the same worker."""
    from config.celery import app

    task = app.tasks[TRIVIAL_TASK]
    n = ctx.carts
    log(f"{tag}: baseline warm-up")
    for i in range(WARMUP_TASKS):
        task.delay(i)
    wait_broker_drained(ctx.redis, worker, timeout=120)
    log(f"{tag}: baseline, {n} trivial tasks")
    meter = cpu_meter(ctx, worker)
    meter.start()
    t0 = time.time()
    for i in range(n):
        task.delay(i)
    published = time.time()
    t1 = wait_broker_drained(ctx.redis, worker, timeout=max(120, n / 20))
    cpu = meter.stop()
    seconds = t1 - t0
    return {
        "tasks": n,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(n / seconds, 1),
        "publish_s": round(published - t0, 3),
        "publish_ms_per_task": round(1000 * (published - t0) / n, 3),
        **cpu_figures(cpu, n),
    }


def phase_lateness(ctx: Context, worker: Worker, tag: str) -> dict[str, Any]:
    """Steps due at a steady rate, handed out by the real scheduler; lateness per step."""
    from campaigns.models import Step

    n, rate = ctx.carts, ctx.rate
    window = n / rate
    idle = timedelta(minutes=INACTIVITY_MINUTES + TIER_DELAY_MINUTES)
    # The first step comes due after the set-up (planned from the rate measured in the
    # throughput phase), the scheduler's start (a Django process: ~2-3 s here) and a margin.
    lead = 1.3 * n / max(1.0, ctx.setup_carts_per_s) + 4
    first_due = datetime.now(UTC) + timedelta(seconds=lead)
    carts = carts_make(f"{tag}-l", lambda i: first_due + timedelta(seconds=i / rate) - idle, n)
    log(f"{tag}: lateness set-up, {n} carts due at {rate:.0f}/s over {window:.1f} s")
    carts_append(ctx.store_id, carts)
    due = carts_enroll(ctx.store_id, carts)
    scheduler = Scheduler(ctx.env)
    try:
        scheduler.start(ctx.redis)
        margin = (min(due.values()) - datetime.now(UTC)).total_seconds()
        if margin < 0.5:
            raise RuntimeError(
                f"the set-up overran its plan: the first step was due {-margin:.1f} s ago"
            )
        log(
            f"{tag}: scheduler up; the first step is due in {margin:.1f} s,"
            f" the last in {margin + window:.1f} s"
        )
        meter = cpu_meter(ctx, worker, scheduler)
        time.sleep(max(0.0, margin - 0.2))
        meter.start()
        t1 = wait_steps_done(ctx.store_id, worker, timeout=window + margin + 300)
        cpu = meter.stop()
    finally:
        scheduler.close()
    time.sleep(0.1)
    received = ctx.sink.read_new()
    check = delivery(set(due), received)
    ctx.unknown_messages += sum(1 for r in received if r.step_id not in due)
    arrival = {r.step_id: r.arrived for r in received if r.step_id in due}
    rows = list(Step.objects.filter(id__in=list(due)).values_list("id", "due_at", "finished_at"))
    finished = [(f - d).total_seconds() for _, d, f in rows if f is not None]
    at_sink = [arrival[i] - d.timestamp() for i, d, _ in rows if i in arrival]
    last_due = max(due.values()).timestamp()
    return {
        "steps": n,
        "rate": rate,
        "window_s": round(window, 2),
        "lateness_p50_s": round(pct(at_sink, 50), 3),
        "lateness_p99_s": round(pct(at_sink, 99), 3),
        "lateness_max_s": round(max(at_sink, default=float("nan")), 3),
        "finished_p50_s": round(pct(finished, 50), 3),
        "finished_p99_s": round(pct(finished, 99), 3),
        "finished_max_s": round(max(finished, default=float("nan")), 3),
        "done_after_last_due_s": round(t1 - last_due, 3),
        "exactly_once": check.exactly_once(n),
        "statuses": check.statuses,
        "sink_messages": check.messages,
        **cpu_figures(cpu, n),
    }


def worker_tail(worker: Worker) -> str:
    out = worker.process.output().strip()
    return f"--- worker output ---\n{out}" if out else ""


def measure(ctx: Context, r: int, concurrency: int) -> dict[str, Any]:
    tag = f"{ctx.run}-r{r + 1}-c{concurrency}"
    worker = Worker(concurrency=concurrency, env=ctx.env, name=f"bench-{tag}")
    try:
        log(f"{tag}: starting the worker (concurrency {concurrency})")
        worker.start(ctx.redis)
        out: dict[str, Any] = {"throughput": phase_throughput(ctx, worker, tag)}
        if ctx.unbatched:
            out["unbatched"] = phase_unbatched(ctx, worker, tag)
        out["baseline"] = phase_baseline(ctx, worker, tag)
        out["lateness"] = phase_lateness(ctx, worker, tag)
        steps_per_s = out["throughput"]["steps_per_s"]
        out["ratio"] = round(steps_per_s / out["baseline"]["tasks_per_s"], 3)
        if ctx.unbatched:
            out["batching_gain"] = round(steps_per_s / out["unbatched"]["steps_per_s"], 3)
        output = worker.process.output().strip()
        if output:
            out["worker_output"] = output[-2000:]
        return out
    except Exception:
        print(worker_tail(worker), file=sys.stderr)
        raise
    finally:
        worker.close()


# Output ------------------------------------------------------------------------------------------


def print_round(r: int, rounds: int, concurrency: int, m: dict[str, Any]) -> None:
    t, b, lt = m["throughput"], m["baseline"], m["lateness"]
    print(f"round {r + 1}/{rounds}, worker concurrency {concurrency}")
    print(
        f"  steps      {t['steps_per_s']:>8.1f}/s  ({t['steps']} in {t['seconds']:.2f} s;"
        f" hand-out {t['hand_out_s']:.2f} s; sink {t['sink_msgs_per_s']:.0f} msgs/s;"
        f" exactly once: {t['exactly_once']})"
    )
    print(
        f"             CPU per step: worker {t['cpu_worker_ms']:.2f} ms, PostgreSQL"
        f" {t['cpu_postgres_ms']:.2f} ms, sink {t['cpu_sink_ms']:.2f} ms, bench"
        f" {t['cpu_bench_ms']:.2f} ms; machine {t['machine_cores']:.2f} cores busy"
    )
    print(
        f"  baseline   {b['tasks_per_s']:>8.1f}/s  ({b['tasks']} in {b['seconds']:.2f} s;"
        f" publishing {b['publish_ms_per_task']:.2f} ms/task)"
    )
    print(
        f"             CPU per task: worker {b['cpu_worker_ms']:.2f} ms, bench"
        f" {b['cpu_bench_ms']:.2f} ms; machine {b['machine_cores']:.2f} cores busy"
    )
    print(f"  ratio      {m['ratio']:>8.2f}x  (steps/s / trivial tasks/s)")
    if "unbatched" in m:
        u = m["unbatched"]
        print(
            f"  unbatched  {u['steps_per_s']:>8.1f}/s  ({u['steps']} steps, one per task; batching"
            f" gains {m['batching_gain']:.2f}x; worker {u['cpu_worker_ms']:.2f} ms/step;"
            f" exactly once: {u['exactly_once']})"
        )
    print(
        f"  lateness   at {lt['rate']:.0f} steps/s: sink p50 {lt['lateness_p50_s']:.3f}"
        f" p99 {lt['lateness_p99_s']:.3f} max {lt['lateness_max_s']:.3f} s;"
        f" finished_at p50 {lt['finished_p50_s']:.3f} p99 {lt['finished_p99_s']:.3f}"
        f" max {lt['finished_max_s']:.3f} s; exactly once: {lt['exactly_once']}"
    )
    print(
        f"             CPU per step: worker {lt['cpu_worker_ms']:.2f} ms, scheduler"
        f" {lt['cpu_scheduler_ms']:.2f} ms, PostgreSQL {lt['cpu_postgres_ms']:.2f} ms;"
        f" machine {lt['machine_cores']:.2f} cores busy",
        flush=True,
    )


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def col(phase: str, key: str) -> list[float]:
        return [m[phase][key] for m in rounds]

    unbatched = all("unbatched" in m for m in rounds)
    return {
        "steps_per_s": median(col("throughput", "steps_per_s")),
        "baseline_tasks_per_s": median(col("baseline", "tasks_per_s")),
        "ratio": median([m["ratio"] for m in rounds]),
        "lateness_p50_s": median(col("lateness", "lateness_p50_s")),
        "lateness_p99_s": median(col("lateness", "lateness_p99_s")),
        "lateness_max_s": median(col("lateness", "lateness_max_s")),
        "finished_p50_s": median(col("lateness", "finished_p50_s")),
        "finished_p99_s": median(col("lateness", "finished_p99_s")),
        "sink_msgs_per_s": median(col("throughput", "sink_msgs_per_s")),
        "publish_ms_per_task": median(col("baseline", "publish_ms_per_task")),
        "cpu_worker_ms_per_step": median(col("throughput", "cpu_worker_ms")),
        "cpu_postgres_ms_per_step": median(col("throughput", "cpu_postgres_ms")),
        "cpu_sink_ms_per_step": median(col("throughput", "cpu_sink_ms")),
        "cpu_worker_ms_per_task": median(col("baseline", "cpu_worker_ms")),
        "unbatched_steps_per_s": median(col("unbatched", "steps_per_s")) if unbatched else None,
        "batching_gain": median([m["batching_gain"] for m in rounds]) if unbatched else None,
        "exactly_once": all(
            m["throughput"]["exactly_once"]
            and m["lateness"]["exactly_once"]
            and m.get("unbatched", {}).get("exactly_once", True)
            for m in rounds
        ),
        "per_round": [
            {
                "steps_per_s": m["throughput"]["steps_per_s"],
                "baseline_tasks_per_s": m["baseline"]["tasks_per_s"],
                "ratio": m["ratio"],
                "lateness_p99_s": m["lateness"]["lateness_p99_s"],
            }
            for m in rounds
        ],
    }


def print_summary(rounds: int, by_c: dict[int, dict[str, Any]], headline: int) -> None:
    print(f"\nmedians over {rounds} round(s)")
    print(
        f"  {'concurrency':<12} {'steps/s':>8} {'tasks/s':>8} {'ratio':>6}"
        f" {'late p50':>9} {'late p99':>9} {'late max':>9} {'fin p99':>8}  exactly once"
    )
    for c, s in by_c.items():
        mark = " (headline)" if c == headline else ""
        print(
            f"  {c:<12} {s['steps_per_s']:>8.1f} {s['baseline_tasks_per_s']:>8.1f}"
            f" {s['ratio']:>5.2f}x {s['lateness_p50_s']:>8.3f}s {s['lateness_p99_s']:>8.3f}s"
            f" {s['lateness_max_s']:>8.3f}s {s['finished_p99_s']:>7.3f}s"
            f"  {s['exactly_once']}{mark}"
        )
    h = by_c[headline]
    print(
        f"targets (concurrency {headline}): steps/s >= {RATIO_TARGET:g}x the baseline's:"
        f" {h['ratio']:.2f}x, {'met' if h['ratio'] >= RATIO_TARGET else 'MISSED'};"
        f" lateness p99 <= {LATENESS_P99_TARGET_S:g} s: {h['lateness_p99_s']:.3f} s,"
        f" {'met' if h['lateness_p99_s'] <= LATENESS_P99_TARGET_S else 'MISSED'}"
    )


# Main --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--carts", type=int, default=DEFAULT_CARTS, help="steps per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 2], help="worker concurrencies (1 2)"
    )
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="steps due per second (lateness)"
    )
    parser.add_argument(
        "--unbatched",
        type=int,
        help="steps handed out one per task, to show what batching buys (default carts/10; 0: off)",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the run's database")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)  # the sink process
    parser.add_argument("--sink-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink is not None:
        return sink_serve(args.sink, args.sink_out)

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    commit = git_head()  # at the start: others may commit while a long run goes on
    headline = 1 if 1 in args.concurrency else args.concurrency[0]

    # The development servers (embedded unless the URLs are set; this process holds a lease).
    from config import env as config_env

    services = config_env.services()
    db_name = f"{DB_PREFIX}{os.getpid()}_{run}"
    databases_drop_stale(services.database_url, DB_PREFIX)
    redis_db = redis_db_claim(services.redis_url, run, bench="campaigns")
    database_url = database_url_with_name(services.database_url, db_name)
    redis_url = redis_url_with_db(services.redis_url, redis_db)
    log(f"run {run}: database {db_name}, Redis database {redis_db}")
    database_create(services.database_url, db_name)
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=redis_url, DJANGO_DEBUG="0")
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    redis = redis_client(redis_url)
    sink: Sink | None = None
    by_round: dict[int, list[dict[str, Any]]] = {c: [] for c in args.concurrency}
    try:
        log("migrating the run's database")
        django_setup()
        from django.conf import settings
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            pg_version = cursor.fetchone()[0]
        store_id = store_and_campaign()
        sink = Sink(dict(os.environ, PYTHONUNBUFFERED="1"))
        sink.start()
        env = child_env(database_url=database_url, redis_url=redis_url, sink_port=sink.port)
        ctx = Context(
            store_id=store_id,
            run=run,
            carts=args.carts,
            rate=args.rate,
            unbatched=args.carts // 10 if args.unbatched is None else args.unbatched,
            redis=redis,
            sink=sink,
            env=env,
        )
        print(
            f"store #{store_id}; {args.carts} steps per phase; lateness at {args.rate:.0f} steps/s;"
            f" CAMPAIGNS_TASK_STEPS={settings.CAMPAIGNS_TASK_STEPS},"
            f" CAMPAIGNS_ENQUEUE_SECONDS={settings.CAMPAIGNS_ENQUEUE_SECONDS};"
            f" PostgreSQL {pg_version}; {os.cpu_count()} CPUs",
            flush=True,
        )
        for r in range(args.rounds):
            for c in args.concurrency:
                m = measure(ctx, r, c)
                by_round[c].append(m)
                print_round(r, args.rounds, c, m)
        unknown = ctx.unknown_messages
        task_steps = settings.CAMPAIGNS_TASK_STEPS
    finally:
        if sink is not None:
            sink.close()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with contextlib.suppress(Exception):
            redis.flushdb()
            redis.close()
        if args.keep_db:
            log(f"kept database {db_name}")
        else:
            with contextlib.suppress(Exception):
                database_drop(services.database_url, db_name)

    by_c = {c: summarise(rounds) for c, rounds in by_round.items()}
    print_summary(args.rounds, by_c, headline)
    h = by_c[headline]
    figures: dict[str, Any] = {
        "bench": "campaigns",
        "carts": args.carts,
        "headline_concurrency": headline,
        "steps_per_s": h["steps_per_s"],
        "baseline_tasks_per_s": h["baseline_tasks_per_s"],
        "ratio": h["ratio"],
        "lateness_p50_s": h["lateness_p50_s"],
        "lateness_p99_s": h["lateness_p99_s"],
        "lateness_max_s": h["lateness_max_s"],
        "targets": {"ratio": RATIO_TARGET, "lateness_p99_s": LATENESS_P99_TARGET_S},
        "met": {
            "ratio": h["ratio"] >= RATIO_TARGET,
            "lateness_p99_s": h["lateness_p99_s"] <= LATENESS_P99_TARGET_S,
            "exactly_once": all(s["exactly_once"] for s in by_c.values()) and unknown == 0,
        },
        "by_concurrency": {str(c): s for c, s in by_c.items()},
        "lateness_rate": args.rate,
        "rounds": args.rounds,
        "task_steps": task_steps,
        "unknown_messages": unknown,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": pg_version,
        "commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
    }

    results_print("campaigns", figures)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: processes stopped, database dropped", file=sys.stderr)
        sys.exit(130)
