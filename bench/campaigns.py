"""Campaign steps benchmark: due email steps drained by one Celery worker to an SMTP sink, on
loopback and through a relay that takes --relay-ms to answer each message, next to one trivial
Celery task per step on the same broker and worker, in the same run.

    .venv/bin/python bench/campaigns.py [--carts N] [--rounds N] [--concurrency 1 2]
        [--rate STEPS_PER_S] [--relay-ms MS] [--relay-timeout S] [--unbatched N] [--keep-db]

Defaults: 10,000 carts, 3 rounds, concurrency 1 and 2, relay 150 ms. Small run: ``--carts 500
--rounds 1`` (~3 minutes on 2 cores while the relay phases hit their cap, as they do today).

What runs, all on loopback, each in a process group of its own (stopped on any exit, Ctrl-C too):
  - an SMTP sink: aiosmtpd on uvloop in a process of its own (this file with ``--sink``), so it
    does not compete with the measuring process for a GIL. It accepts every message, answers its
    DATA after the current delay (0 in the loopback phases, --relay-ms in the relay phases: the
    bench changes it with SIGUSR1 and a control file, and waits for the acknowledgement), and
    writes one line per message: answer time, arrival time, messages in flight at the sink,
    Message-ID, recipients. The Message-ID names the step (campaigns.emails.message_id);
  - one Celery worker, ``celery -A config worker --concurrency C --without-mingle
    --without-gossip --loglevel WARNING``, with ``DJANGO_DEBUG=0`` and Django's SMTP backend
    pointed at the sink (WARNING: at INFO the worker logs two lines per task, which slowed the
    one-task-per-step baseline by ~10%). It is started afresh for each round and concurrency and
    serves every phase of it, so the product and the baseline meet the same worker;
  - the real scheduler, ``manage.py run_scheduler``, during the lateness phase.

Isolation. The run creates its own PostgreSQL database on the development server (embedded under
var/ unless DATABASE_URL is set), migrates it, and drops it at the end; and it uses a Redis logical
database of its own on the development Redis (broker, scheduler lock, heartbeats, cache), flushed
at the end: enrolment and hand-out serve every store, so on the development database the bench's
scheduler would run other campaigns' steps, and a ``make run`` scheduler would take the bench's.

Set-up, through the services: carts are appended with ``events_append`` (250 carts, 500 events
per call): a ``cart.item_added`` (45.00 EUR) and a ``checkout.contact_captured`` with a distinct
address and ``consent.email = true``, both stamped a second before the append. One active
campaign (no holdout, no quiet hours, no caps) with inactivity 0 and one email tier due at
abandonment, and ``CampaignSettings`` (open and click tracking on). Enrolment measures idleness on
the server's clock (``CartState.seen_at``, issue 12): a cart backdated with an old ``occurred_at``
is not idle, so the bench's carts are abandoned the moment they are recorded and each phase
enrols its own with ``enrolment.abandoned_carts_enroll`` (the product's enrolment), their steps
due at once. (The bench used to backdate carts by 2-3 hours against a 30-minute inactivity; once
enrolment kept a high-water mark, a later phase's carts (3 hours old) were older than the mark
the previous lateness phase had left (~90 minutes) and were never enrolled: "0 carts enrolled,
expected 100".)

Each round, for each worker concurrency (1 and 2; the headline is 1, "one worker process"):
  1. loopback throughput: --carts steps all due, the sink answering at once. 100 warm-up steps
     first, untimed. The clock runs from ``steps.due_steps_enqueue`` (the real publisher: one
     ``campaigns.steps_run`` task per CAMPAIGNS_TASK_STEPS steps) until no step of the store is
     pending, enqueued or sending (polled every 20 ms through the partial indexes on those
     statuses), i.e. all committed.
  1b. unbatched (``--unbatched``, default carts/10): as 1, with CAMPAIGNS_TASK_STEPS = 1 in the
     publisher: what batching buys.
  2. baseline: the same number of trivial tasks (Celery's built-in ``celery.accumulate``), one
     ``.delay()`` each from this process, after 200 untimed ones; the clock runs until the
     broker's queue and unacked set are empty. Ratio = loopback steps/s / tasks/s, per round.
  3. relay: --carts more steps all due, the sink answering each message --relay-ms after it
     arrived. Emails/s = messages the sink answered between the hand-out and the moment every
     step was committed, over that time. Meanwhile a thread of this process appends one
     ``order.placed`` every 0.1 s (up to a tenth of the carts) for a cart of the batch being sent
     (a step not answered yet within CAMPAIGNS_TASK_STEPS ids of the step answered last) and
     times each append: the order-append latency while batches are sending.
  4. lateness: --carts more steps whose ``due_at`` the bench sets, after enrolment and before
     they can be handed out, to one every 1/--rate s from a second after the scheduler is up;
     the real scheduler hands them out (every CAMPAIGNS_ENQUEUE_SECONDS) through the relay.
     Lateness of a step = the sink's answer to its message - ``due_at`` (the relay has taken the
     email), and ``Step.finished_at - due_at``. p50 / p99 / max over all steps.
  A relay phase that is not done after the time the target (300 emails/s) would take plus
  --relay-timeout (30 s) is capped: the sink answers at once from then on so the rest drains, and
  the figures are lower bounds (emails/s counts what was answered before the cap; lateness counts
  every step, the rest sent faster than the relay would have).

Exactly once, every phase: the sink's messages are counted per Message-ID, i.e. per step. A step
without an order must be ``sent`` with exactly one message; a step whose cart got an order may be
sent (one message) or not (none); no step may have two. Messages naming no step of the run are
counted too (``unknown_messages``, must be 0).

The CPU of the worker (its process group), the sink, every PostgreSQL process (the server is
shared with whatever else runs), this process and the machine is reported for each phase.

The summary gives medians over rounds per concurrency; ratios are medians of each round's paired
ratio. Targets (issue 12), at concurrency 1: >= 300 emails/s through a 150 ms relay, lateness p99
<= 2 s at 150 due steps/s, every step exactly once, loopback steps/s >= 1x the trivial task rate,
order append p99 <= 50 ms. The last line printed is one JSON object with every figure (also saved
under bench/results/, which git ignores); ``settings`` holds the CAMPAIGNS_* settings the worker
ran with.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import logging
import os
import platform
import random
import re
import signal
import socket
import statistics
import sys
import tempfile
import threading
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

# Targets (issue 12), all in the same run.
RATIO_TARGET = 1.0  # loopback steps/s / trivial tasks/s
RELAY_EMAILS_TARGET = 300.0  # emails/s through the relay, one worker process
LATENESS_P99_TARGET_S = 2.0  # due -> sent through the relay, at --rate
ORDER_P99_TARGET_MS = 50.0  # an order.placed append while batches are sending
DEFAULT_CARTS = 10_000
DEFAULT_RATE = 150.0  # steps due per second in the lateness phase
DEFAULT_RELAY_MS = 150.0
DEFAULT_RELAY_TIMEOUT = 30.0
# The bench's campaign: abandoned as soon as the server recorded the cart, its one tier due at
# once (the admin form's minimum inactivity is 1 minute; the model takes 0). Enrolment measures
# idleness on the server's clock (CartState.seen_at), so carts backdated with an old occurred_at
# are not idle: a bench that wants steps due now must not wait for them to be.
INACTIVITY_MINUTES = 0
TIER_DELAY_MINUTES = 0
ORDER_INTERVAL_S = 0.1  # the order thread appends one order.placed this often
ORDER_SHARE = 0.1  # ... to at most this share of the phase's carts
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
    """Accept every message on 127.0.0.1:port; one line per message to ``out_path``.

    Each DATA is answered after the relay delay, read from ``<out_path>.control`` on SIGUSR1 and
    acknowledged in ``<out_path>.delay`` (0 at start: a loopback server answering at once)."""
    import asyncio

    from aiosmtpd.smtp import SMTP

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # every command at INFO otherwise
    out = open(out_path, "a", buffering=1)  # noqa: SIM115 - one line per write, closed below
    control, ack = Path(f"{out_path}.control"), Path(f"{out_path}.delay")
    state = {"delay": 0.0, "in_flight": 0}
    ack.write_text("0")

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            arrived = time.time()
            state["in_flight"] += 1
            in_flight = state["in_flight"]  # messages waiting for their answer, this one too
            try:
                raw = bytes(envelope.original_content or envelope.content)
                head = raw.split(b"\r\n\r\n", 1)[0]
                message_id = "-"
                for line in head.split(b"\r\n"):
                    if line[:11].lower() == b"message-id:":
                        message_id = line[11:].strip().decode(errors="replace")
                        break
                rcpts = ",".join(str(r) for r in envelope.rcpt_tos)
                if state["delay"] > 0:
                    await asyncio.sleep(state["delay"])  # the relay's processing time
            finally:
                state["in_flight"] -= 1
            out.write(f"{time.time():.6f} {arrived:.6f} {in_flight} {message_id} {rcpts}\n")
            return "250 OK"

    handler = Handler()

    def delay_change() -> None:
        text = control.read_text().strip()
        state["delay"] = float(text)
        ack.write_text(text)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="bench-sink"), "127.0.0.1", port
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, delay_change)
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
    answered: float  # Unix time the sink answered DATA (after the relay delay): "sent"
    arrived: float  # Unix time the message's data had arrived (before the delay)
    in_flight: int  # messages waiting at the sink for their answer when it arrived, itself too
    step_id: int | None
    message_id: str
    rcpts: str


class SinkReader:
    """The sink's output file, read incrementally (whole lines only); each reader its own."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset

    def read_new(self) -> list[Received]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].decode().splitlines():
            answered, arrived, in_flight, message_id, rcpts = [*line.split(" ", 4), "", ""][:5]
            match = MESSAGE_ID.match(message_id)
            out.append(
                Received(
                    float(answered),
                    float(arrived),
                    int(in_flight),
                    int(match[1]) if match else None,
                    message_id,
                    rcpts,
                )
            )
        return out


class Sink:
    """The sink process and its output file."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.path = Path(tempfile.mkstemp(prefix="bench-campaigns-sink-", suffix=".log")[1])
        cmd = [sys.executable, str(Path(__file__).resolve()), "--sink", str(self.port)]
        cmd += ["--sink-out", str(self.path)]
        self.process = Subprocess("smtp-sink", cmd, env)
        self.reader = SinkReader(self.path)
        self.delay = 0.0

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

    def set_delay(self, seconds: float, timeout: float = 10) -> None:
        """Answer each later DATA ``seconds`` after it arrived (a relay); returns once applied."""
        text = f"{seconds:.6f}"
        Path(f"{self.path}.control").write_text(text)
        os.kill(self.process.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        ack = Path(f"{self.path}.delay")
        while not (ack.exists() and ack.read_text().strip() == text):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SMTP sink did not take the delay {seconds} s")
            time.sleep(0.01)
        self.delay = seconds

    def read_new(self) -> list[Received]:
        """Messages that arrived since the last call."""
        return self.reader.read_new()

    def tail(self) -> SinkReader:
        """A reader of its own, from the messages answered after now."""
        return SinkReader(self.path, self.path.stat().st_size)

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        self.process.close()
        for path in (self.path, Path(f"{self.path}.control"), Path(f"{self.path}.delay")):
            path.unlink(missing_ok=True)


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
    """A fresh store with one active campaign: inactivity 0, one email tier due at abandonment,
    no holdout, quiet hours or caps."""
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


def carts_make(prefix: str, n: int) -> list[BenchCart]:
    """Carts whose last activity is now (their events' occurred_at is a second ago)."""
    at = datetime.now(UTC) - timedelta(seconds=1)
    return [BenchCart(f"{prefix}-{i}", f"{prefix}-{i}@example.com", at) for i in range(n)]


def carts_ready(store_id: int, prefix: str, n: int) -> dict[int, datetime]:
    """``n`` new carts appended and enrolled; their steps, all due now: {step id: due_at}."""
    carts = carts_make(prefix, n)
    carts_append(store_id, carts)
    return carts_enroll(store_id, carts)


_DUE_SET = """
    UPDATE campaigns_step AS s SET due_at = v.due_at
    FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, due_at)
    WHERE s.id = v.id AND s.status = 'pending'
"""


def steps_due_set(due: dict[int, datetime]) -> None:
    """Move pending steps' due times (the lateness plan); before anything hands them out."""
    from django.db import connection

    ids = sorted(due)
    with connection.cursor() as cursor:
        cursor.execute(_DUE_SET, [ids, [due[i] for i in ids]])
        if cursor.rowcount != len(ids):
            raise RuntimeError(f"{cursor.rowcount} of {len(ids)} steps were still pending")


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


# Each probe finds one row through the partial indexes on pending, enqueued and sending (leased)
# steps, so polling every 20 ms costs PostgreSQL next to nothing (a count over the store's steps
# was a sequential scan: 6 ms a probe at 40,000 steps, a third of a core).
_ANY_OPEN = """
    SELECT EXISTS (SELECT 1 FROM campaigns_step
                   WHERE status = 'pending' AND due_at IS NOT NULL AND store_id = %(store)s)
        OR EXISTS (SELECT 1 FROM campaigns_step
                   WHERE status = 'enqueued' AND enqueued_at IS NOT NULL AND store_id = %(store)s)
        OR EXISTS (SELECT 1 FROM campaigns_step
                   WHERE status = 'sending' AND store_id = %(store)s)
"""


def any_open_steps(store_id: int) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_ANY_OPEN, {"store": store_id})
        row = cursor.fetchone()
    return bool(row[0])


def wait_steps_done(
    store_id: int, worker: Worker, timeout: float, *, give_up: bool = False
) -> float | None:
    """Poll until no step of the store is open; the time.time() it was first seen so. After
    ``timeout``: None with ``give_up``, else an error."""
    deadline = time.monotonic() + timeout
    while True:
        if not any_open_steps(store_id):
            return time.time()
        worker.check()
        if time.monotonic() > deadline:
            if give_up:
                return None
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
    """What the sink (messages counted per Message-ID, i.e. per step) and the steps' rows say
    about a phase's steps. Steps whose cart got an order during the phase may be sent or
    cancelled, but never sent twice."""

    steps: int
    statuses: dict[str, int]
    messages: int  # sink messages naming one of the phase's steps
    duplicated: int  # steps with more than one message
    missing: int  # steps without an order, or sent, that have no message
    unexpected: int  # steps with a message whose status is neither sent nor (ordered) cancelled
    distinct_rcpts: int
    ordered: int  # steps whose cart got an order.placed during the phase
    ordered_sent: int  # ... of which a message went out

    @property
    def exactly_once(self) -> bool:
        return (
            self.duplicated == 0
            and self.missing == 0
            and self.unexpected == 0
            and self.distinct_rcpts == self.messages
        )


def delivery(
    step_ids: set[int], received: list[Received], ordered: frozenset[int] = frozenset()
) -> Delivery:
    """Every step exactly once: each step without an order ``sent`` with exactly one message;
    an ordered one sent with one message, or not sent (cancelled) with none."""
    from collections import Counter

    from campaigns.models import Step

    status = dict(Step.objects.filter(id__in=step_ids).values_list("id", "status"))
    per_step = Counter(r.step_id for r in received if r.step_id in step_ids)
    statuses = dict(Counter(status.values()))
    missing = unexpected = 0
    for step_id in step_ids:
        n, st = per_step.get(step_id, 0), status.get(step_id)
        if step_id in ordered:
            missing += st == "sent" and n == 0
            unexpected += n > 0 and st not in ("sent", "cancelled", "sending")
        else:
            missing += n == 0
            unexpected += st != "sent"
    mine = [r for r in received if r.step_id in step_ids]
    return Delivery(
        steps=len(step_ids),
        statuses=statuses,
        messages=len(mine),
        duplicated=sum(1 for n in per_step.values() if n > 1),
        missing=missing,
        unexpected=unexpected,
        distinct_rcpts=len({r.rcpts for r in mine}),
        ordered=len(ordered & step_ids),
        ordered_sent=sum(1 for s in ordered if per_step.get(s, 0) > 0),
    )


def delivery_figures(check: Delivery) -> dict[str, Any]:
    return {
        "exactly_once": check.exactly_once,
        "statuses": check.statuses,
        "sink_messages": check.messages,
        "duplicated": check.duplicated,
        "missing": check.missing,
        "unexpected": check.unexpected,
    }


@dataclass(slots=True)
class Context:
    store_id: int
    run: str
    carts: int
    rate: float
    unbatched: int
    relay_s: float
    relay_timeout: float
    task_steps: int
    redis: Any
    sink: Sink
    env: dict[str, str]
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


def sink_read(ctx: Context, due: dict[int, datetime] | set[int]) -> list[Received]:
    """The sink's new messages (a moment after the last commit); unknown ones are counted."""
    time.sleep(0.1)
    received = ctx.sink.read_new()
    ctx.unknown_messages += sum(1 for r in received if r.step_id not in due)
    return received


def phase_throughput(ctx: Context, worker: Worker, tag: str) -> dict[str, Any]:
    """All steps due at once, on loopback; one hand-out; until every step is committed."""
    from campaigns import clock, steps

    n = ctx.carts
    log(f"{tag}: throughput set-up, {n + WARMUP_STEPS} carts")
    due_warm = carts_ready(ctx.store_id, f"{tag}-w", WARMUP_STEPS)
    log(f"{tag}: warm-up, {WARMUP_STEPS} steps")
    assert steps.due_steps_enqueue(now=clock.now(), limit=WARMUP_STEPS) == WARMUP_STEPS
    wait_steps_done(ctx.store_id, worker, timeout=120)
    warm_delivery = delivery(set(due_warm), sink_read(ctx, due_warm))
    if not warm_delivery.exactly_once or warm_delivery.messages != WARMUP_STEPS:
        raise RuntimeError(f"warm-up steps not sent once each: {warm_delivery}")
    due = carts_ready(ctx.store_id, f"{tag}-t", n)

    log(f"{tag}: throughput, {n} steps")
    meter = cpu_meter(ctx, worker)
    meter.start()
    t0 = time.time()
    handed = steps.due_steps_enqueue(now=clock.now(), limit=n)
    handed_out = time.time()
    t1 = wait_steps_done(ctx.store_id, worker, timeout=max(120, n / 20))
    assert t1 is not None
    cpu = meter.stop()
    if handed != n:
        raise RuntimeError(f"{handed} steps handed out, expected {n}")
    received = sink_read(ctx, due)
    check = delivery(set(due), received)
    mine = sorted(r.answered for r in received if r.step_id in due)
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
        **delivery_figures(check),
        **cpu_figures(cpu, n),
    }


def phase_unbatched(ctx: Context, worker: Worker, tag: str) -> dict[str, Any]:
    """What batching buys: due steps handed out one per ``campaigns.steps_run`` task."""
    from django.test import override_settings

    from campaigns import clock, steps

    n = ctx.unbatched
    log(f"{tag}: unbatched, {n} steps, one per task")
    due = carts_ready(ctx.store_id, f"{tag}-u", n)
    meter = cpu_meter(ctx, worker)
    meter.start()
    t0 = time.time()
    with override_settings(CAMPAIGNS_TASK_STEPS=1):  # read by steps_publish in this process
        handed = steps.due_steps_enqueue(now=clock.now(), limit=n)
    t1 = wait_steps_done(ctx.store_id, worker, timeout=max(120, n / 5))
    assert t1 is not None
    cpu = meter.stop()
    if handed != n:
        raise RuntimeError(f"{handed} steps handed out, expected {n}")
    check = delivery(set(due), sink_read(ctx, due))
    return {
        "steps": n,
        "seconds": round(t1 - t0, 3),
        "steps_per_s": round(n / (t1 - t0), 1),
        **delivery_figures(check),
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


@dataclass(frozen=True, slots=True)
class Order:
    cart: str
    step_id: int
    committed: float  # time.time() once events_append returned (committed)
    ms: float  # how long the append took


class OrderAppender(threading.Thread):
    """Appends ``order.placed`` for carts of the batch being sent, one every ORDER_INTERVAL_S,
    timing each append (the shop's order waits for nothing the campaign holds, or it waits for
    the batch's commit). The batch being sent: the phase's steps not answered at the sink yet
    whose id is within a batch (CAMPAIGNS_TASK_STEPS) of the step the sink answered last (the
    first batch before any answer); steps are handed out in id order."""

    def __init__(self, ctx: Context, due: dict[int, datetime], budget: int) -> None:
        super().__init__(name="orders", daemon=True)
        self.store_id = ctx.store_id
        self.window = ctx.task_steps
        self.budget = budget
        self.reader = ctx.sink.tail()
        self.ids = sorted(due)
        from campaigns.models import Step

        self.carts = dict(Step.objects.filter(id__in=self.ids).values_list("id", "cart"))
        self.orders: list[Order] = []
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._answered: set[int] = set()
        self._last: int | None = None
        self._random = random.Random(0)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)

    def _pick(self) -> int | None:
        new = [r for r in self.reader.read_new() if r.step_id is not None]
        for r in new:
            self._answered.add(r.step_id)  # type: ignore[arg-type]
        if new:
            self._last = max(new, key=lambda r: r.answered).step_id
        ordered = {o.step_id for o in self.orders}
        if self._last is None:
            around = self.ids[: self.window]
        else:
            i = bisect.bisect_left(self.ids, self._last)
            around = self.ids[max(0, i - self.window) : i + self.window]
        candidates = [s for s in around if s not in self._answered and s not in ordered]
        return self._random.choice(candidates) if candidates else None

    def run(self) -> None:
        from django.db import connection

        from carts import services, sources

        try:
            while len(self.orders) < self.budget and not self._halt.wait(ORDER_INTERVAL_S):
                step_id = self._pick()
                if step_id is None:
                    continue
                cart = self.carts[step_id]
                data = {"order_id": f"o-{cart}", "total": 4500, "currency": "EUR"}
                event = _new_event("order.placed", cart, data, datetime.now(UTC))
                began = time.perf_counter()
                services.events_append(
                    store_id=self.store_id, events=[event], source=sources.Source.server("bench")
                )
                took = time.perf_counter() - began
                self.orders.append(Order(cart, step_id, time.time(), 1000 * took))
        except Exception as exc:  # reported with the figures; the phase goes on
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()


def relay_drain(ctx: Context, worker: Worker, tag: str) -> None:
    """After a capped relay phase: the sink answers at once again and the rest is sent."""
    log(f"{tag}: capped; the sink answers at once from now on, draining the rest")
    ctx.sink.set_delay(0)
    wait_steps_done(ctx.store_id, worker, timeout=max(300, ctx.carts / 20))


def phase_relay(ctx: Context, worker: Worker, tag: str) -> dict[str, Any]:
    """All steps due at once, through the relay; orders appended for carts being sent."""
    from campaigns import clock, steps

    n = ctx.carts
    log(f"{tag}: relay set-up, {n} carts")
    due = carts_ready(ctx.store_id, f"{tag}-r", n)
    ctx.sink.set_delay(ctx.relay_s)
    orders = OrderAppender(ctx, due, budget=max(1, int(n * ORDER_SHARE)))
    # The cap: the time the target rate would take, and the timeout.
    cap = n / RELAY_EMAILS_TARGET + ctx.relay_timeout
    log(f"{tag}: relay {1000 * ctx.relay_s:.0f} ms, {n} steps (gives up after {cap:.0f} s)")
    meter = cpu_meter(ctx, worker)
    meter.start()
    t0 = time.time()
    handed = steps.due_steps_enqueue(now=clock.now(), limit=n)
    orders.start()
    t1 = wait_steps_done(ctx.store_id, worker, timeout=cap, give_up=True)
    end = t1 if t1 is not None else time.time()
    cpu = meter.stop()
    orders.stop()
    if handed != n:
        raise RuntimeError(f"{handed} steps handed out, expected {n}")
    if t1 is None:
        relay_drain(ctx, worker, tag)
    ctx.sink.set_delay(0)
    received = sink_read(ctx, due)
    ordered = frozenset(o.step_id for o in orders.orders)
    check = delivery(set(due), received, ordered)
    mine = [r for r in received if r.step_id in due]
    in_window = sum(1 for r in mine if r.answered <= end)
    order_ms = [o.ms for o in orders.orders]
    arrived = {r.step_id: r.arrived for r in mine}
    return {
        "steps": n,
        "relay_ms": round(1000 * ctx.relay_s, 1),
        "seconds": round(end - t0, 3),
        "capped": t1 is None,
        "emails_in_window": in_window,
        "emails_per_s": round(in_window / (end - t0), 1),
        "max_in_flight": max((r.in_flight for r in mine), default=0),
        "orders": len(order_ms),
        # None when no order could be placed (JSON has no NaN).
        "order_p50_ms": round(pct(order_ms, 50), 1) if order_ms else None,
        "order_p99_ms": round(pct(order_ms, 99), 1) if order_ms else None,
        "order_max_ms": round(max(order_ms), 1) if order_ms else None,
        "order_errors": orders.errors[:3],
        "ordered_sent": check.ordered_sent,
        # Messages whose data reached the sink after their cart's order had committed.
        "sent_after_order": sum(
            1 for o in orders.orders if o.step_id in arrived and arrived[o.step_id] > o.committed
        ),
        **delivery_figures(check),
        **cpu_figures(cpu, in_window),
    }


def phase_lateness(ctx: Context, worker: Worker, tag: str) -> dict[str, Any]:
    """Steps due at a steady rate, handed out by the real scheduler, through the relay;
    lateness per step (due -> the relay's answer)."""
    from campaigns.models import Step

    n, rate = ctx.carts, ctx.rate
    window = n / rate
    log(f"{tag}: lateness set-up, {n} carts due at {rate:.0f}/s over {window:.1f} s")
    due = carts_ready(ctx.store_id, f"{tag}-l", n)
    steps_due_set(dict.fromkeys(due, datetime.now(UTC) + timedelta(days=1)))  # not yet
    scheduler = Scheduler(ctx.env)
    try:
        scheduler.start(ctx.redis)
        # The plan: the first step due a moment from now, then one every 1/rate s, in id order.
        first_due = datetime.now(UTC) + timedelta(seconds=1)
        plan = {s: first_due + timedelta(seconds=i / rate) for i, s in enumerate(sorted(due))}
        steps_due_set(plan)
        ctx.sink.set_delay(ctx.relay_s)
        margin = (first_due - datetime.now(UTC)).total_seconds()
        log(
            f"{tag}: scheduler up; relay {1000 * ctx.relay_s:.0f} ms; the first step is due in"
            f" {margin:.1f} s, the last in {margin + window:.1f} s"
        )
        meter = cpu_meter(ctx, worker, scheduler)
        time.sleep(max(0.0, margin - 0.2))
        meter.start()
        cap = margin + window + ctx.relay_timeout
        done = wait_steps_done(ctx.store_id, worker, timeout=cap, give_up=True)
        cpu = meter.stop()
        capped = done is None
        if done is None:
            relay_drain(ctx, worker, tag)
        t1 = done if done is not None else time.time()
    finally:
        scheduler.close()
        ctx.sink.set_delay(0)
    received = sink_read(ctx, due)
    check = delivery(set(due), received)
    answered = {r.step_id: r.answered for r in received if r.step_id in due}
    rows = list(Step.objects.filter(id__in=list(due)).values_list("id", "due_at", "finished_at"))
    finished = [(f - d).total_seconds() for _, d, f in rows if f is not None]
    at_sink = [answered[i] - d.timestamp() for i, d, _ in rows if i in answered]
    last_due = max(plan.values()).timestamp()
    return {
        "steps": n,
        "rate": rate,
        "relay_ms": round(1000 * ctx.relay_s, 1),
        "window_s": round(window, 2),
        "capped": capped,  # then the figures are lower bounds: the rest went out at once
        "lateness_p50_s": round(pct(at_sink, 50), 3),
        "lateness_p99_s": round(pct(at_sink, 99), 3),
        "lateness_max_s": round(max(at_sink, default=float("nan")), 3),
        "finished_p50_s": round(pct(finished, 50), 3),
        "finished_p99_s": round(pct(finished, 99), 3),
        "finished_max_s": round(max(finished, default=float("nan")), 3),
        "done_after_last_due_s": round(t1 - last_due, 3),
        "max_in_flight": max((r.in_flight for r in received if r.step_id in due), default=0),
        **delivery_figures(check),
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
        out["relay"] = phase_relay(ctx, worker, tag)
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
    t, b, rl, lt = m["throughput"], m["baseline"], m["relay"], m["lateness"]
    print(f"round {r + 1}/{rounds}, worker concurrency {concurrency}")
    print(
        f"  loopback   {t['steps_per_s']:>8.1f} steps/s  ({t['steps']} in {t['seconds']:.2f} s;"
        f" hand-out {t['hand_out_s']:.2f} s; sink {t['sink_msgs_per_s']:.0f} msgs/s;"
        f" exactly once: {t['exactly_once']})"
    )
    print(
        f"             CPU per step: worker {t['cpu_worker_ms']:.2f} ms, PostgreSQL"
        f" {t['cpu_postgres_ms']:.2f} ms, sink {t['cpu_sink_ms']:.2f} ms, bench"
        f" {t['cpu_bench_ms']:.2f} ms; machine {t['machine_cores']:.2f} cores busy"
    )
    print(
        f"  baseline   {b['tasks_per_s']:>8.1f} tasks/s  ({b['tasks']} in {b['seconds']:.2f} s;"
        f" publishing {b['publish_ms_per_task']:.2f} ms/task; CPU per task: worker"
        f" {b['cpu_worker_ms']:.2f} ms, bench {b['cpu_bench_ms']:.2f} ms)"
    )
    print(f"  ratio      {m['ratio']:>8.2f}x  (loopback steps/s / trivial tasks/s)")
    if "unbatched" in m:
        u = m["unbatched"]
        print(
            f"  unbatched  {u['steps_per_s']:>8.1f} steps/s  ({u['steps']} steps, one per task;"
            f" batching gains {m['batching_gain']:.2f}x; exactly once: {u['exactly_once']})"
        )
    capped = " CAPPED: a lower bound" if rl["capped"] else ""
    print(
        f"  relay      {rl['emails_per_s']:>8.1f} emails/s through a {rl['relay_ms']:.0f} ms relay"
        f"  ({rl['emails_in_window']} of {rl['steps']} in {rl['seconds']:.2f} s{capped};"
        f" at most {rl['max_in_flight']} in flight; exactly once: {rl['exactly_once']})"
    )
    print(
        f"  orders     append p50 {ms(rl['order_p50_ms'])} p99 {ms(rl['order_p99_ms'])}"
        f" max {ms(rl['order_max_ms'])}  ({rl['orders']} order.placed for carts being sent;"
        f" {rl['ordered_sent']} of those carts' emails went out, {rl['sent_after_order']}"
        f" started after the order committed)"
    )
    for error in rl["order_errors"]:
        print(f"             order thread: {error}")
    capped = " CAPPED: lower bounds" if lt["capped"] else ""
    print(
        f"  lateness   at {lt['rate']:.0f} steps/s through the relay:"
        f" p50 {lt['lateness_p50_s']:.3f} p99 {lt['lateness_p99_s']:.3f}"
        f" max {lt['lateness_max_s']:.3f} s{capped};"
        f" finished_at p99 {lt['finished_p99_s']:.3f} s; at most {lt['max_in_flight']} in"
        f" flight; exactly once: {lt['exactly_once']}",
        flush=True,
    )


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def median(values: Sequence[float | None]) -> float | None:
    """The median of the figures there are (None: none)."""
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def col(phase: str, key: str) -> list[float]:
        return [m[phase][key] for m in rounds]

    unbatched = all("unbatched" in m for m in rounds)
    phases = ("throughput", "unbatched", "relay", "lateness")
    return {
        "steps_per_s": median(col("throughput", "steps_per_s")),
        "baseline_tasks_per_s": median(col("baseline", "tasks_per_s")),
        "ratio": median([m["ratio"] for m in rounds]),
        "relay_emails_per_s": median(col("relay", "emails_per_s")),
        "relay_capped": any(col("relay", "capped")),
        "relay_max_in_flight": max(col("relay", "max_in_flight")),
        "order_p50_ms": median(col("relay", "order_p50_ms")),
        "order_p99_ms": median(col("relay", "order_p99_ms")),
        "order_max_ms": max(
            (v for v in col("relay", "order_max_ms") if v is not None), default=None
        ),
        "orders": sum(col("relay", "orders")),
        "sent_after_order": sum(col("relay", "sent_after_order")),
        "lateness_p50_s": median(col("lateness", "lateness_p50_s")),
        "lateness_p99_s": median(col("lateness", "lateness_p99_s")),
        "lateness_max_s": median(col("lateness", "lateness_max_s")),
        "lateness_capped": any(col("lateness", "capped")),
        "finished_p99_s": median(col("lateness", "finished_p99_s")),
        "sink_msgs_per_s": median(col("throughput", "sink_msgs_per_s")),
        "publish_ms_per_task": median(col("baseline", "publish_ms_per_task")),
        "cpu_worker_ms_per_step": median(col("throughput", "cpu_worker_ms")),
        "cpu_postgres_ms_per_step": median(col("throughput", "cpu_postgres_ms")),
        "cpu_sink_ms_per_step": median(col("throughput", "cpu_sink_ms")),
        "cpu_worker_ms_per_task": median(col("baseline", "cpu_worker_ms")),
        "cpu_worker_ms_per_relay_email": median(col("relay", "cpu_worker_ms")),
        "unbatched_steps_per_s": median(col("unbatched", "steps_per_s")) if unbatched else None,
        "batching_gain": median([m["batching_gain"] for m in rounds]) if unbatched else None,
        "exactly_once": all(m[p]["exactly_once"] for m in rounds for p in phases if p in m),
        "duplicated": sum(m[p]["duplicated"] for m in rounds for p in phases if p in m),
        "per_round": [
            {
                "steps_per_s": m["throughput"]["steps_per_s"],
                "baseline_tasks_per_s": m["baseline"]["tasks_per_s"],
                "ratio": m["ratio"],
                "relay_emails_per_s": m["relay"]["emails_per_s"],
                "order_p99_ms": m["relay"]["order_p99_ms"],
                "lateness_p99_s": m["lateness"]["lateness_p99_s"],
            }
            for m in rounds
        ],
    }


def targets_met(h: dict[str, Any], exactly_once: bool) -> dict[str, bool]:
    return {
        "relay_emails_per_s": h["relay_emails_per_s"] >= RELAY_EMAILS_TARGET,
        "lateness_p99_s": h["lateness_p99_s"] <= LATENESS_P99_TARGET_S,
        "exactly_once": exactly_once,
        "ratio": h["ratio"] >= RATIO_TARGET,
        "order_p99_ms": h["order_p99_ms"] is not None and h["order_p99_ms"] <= ORDER_P99_TARGET_MS,
    }


def print_summary(
    rounds: int, by_c: dict[int, dict[str, Any]], headline: int, met: dict[str, bool], relay: float
) -> None:
    print(f"\nmedians over {rounds} round(s)")
    print(
        f"  {'concurrency':<12} {'relay/s':>8} {'late p99':>9} {'order p99':>10}"
        f" {'steps/s':>8} {'tasks/s':>8} {'ratio':>6}  exactly once"
    )
    for c, s in by_c.items():
        mark = " (headline)" if c == headline else ""
        print(
            f"  {c:<12} {s['relay_emails_per_s']:>8.1f} {s['lateness_p99_s']:>8.3f}s"
            f" {ms(s['order_p99_ms']):>10} {s['steps_per_s']:>8.1f}"
            f" {s['baseline_tasks_per_s']:>8.1f} {s['ratio']:>5.2f}x  {s['exactly_once']}{mark}"
        )
    h = by_c[headline]

    def verdict(key: str) -> str:
        return "met" if met[key] else "MISSED"

    print(f"targets (concurrency {headline}, relay {1000 * relay:.0f} ms):")
    print(
        f"  emails/s through the relay >= {RELAY_EMAILS_TARGET:g}: {h['relay_emails_per_s']:.1f},"
        f" {verdict('relay_emails_per_s')}{' (capped)' if h['relay_capped'] else ''}"
    )
    print(
        f"  lateness p99 <= {LATENESS_P99_TARGET_S:g} s: {h['lateness_p99_s']:.3f} s,"
        f" {verdict('lateness_p99_s')}{' (capped)' if h['lateness_capped'] else ''}"
    )
    print(f"  every step exactly once (every phase, concurrency, round): {verdict('exactly_once')}")
    print(
        f"  loopback steps/s >= {RATIO_TARGET:g}x trivial tasks/s: {h['ratio']:.2f}x,"
        f" {verdict('ratio')}"
    )
    print(
        f"  order append p99 <= {ORDER_P99_TARGET_MS:g} ms while batches send:"
        f" {ms(h['order_p99_ms'])}, {verdict('order_p99_ms')}"
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
        "--relay-ms",
        type=float,
        default=DEFAULT_RELAY_MS,
        help="the sink answers each message this long after it arrived, in the relay and"
        " lateness phases (a relay's processing time; 0: loopback)",
    )
    parser.add_argument(
        "--relay-timeout",
        type=float,
        default=DEFAULT_RELAY_TIMEOUT,
        help="a relay phase gives up this long after the target would have finished it (s);"
        " the rest is then sent without the delay and the figures are lower bounds",
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
    if args.carts < 1 or args.rate <= 0 or args.relay_ms < 0:
        parser.error("--carts must be at least 1, --rate above 0, --relay-ms at least 0")

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
            relay_s=args.relay_ms / 1000,
            relay_timeout=args.relay_timeout,
            task_steps=settings.CAMPAIGNS_TASK_STEPS,
            redis=redis,
            sink=sink,
            env=env,
        )
        # The product's knobs as the worker sees them (the same settings, the same environment).
        campaign_settings = {
            name: getattr(settings, name)
            for name in dir(settings)
            if name.startswith("CAMPAIGNS_")
            and isinstance(getattr(settings, name), int | float | str)
            and name not in ("CAMPAIGNS_PUBLIC_URL",)
        }
        print(
            f"store #{store_id}; {args.carts} steps per phase; relay {args.relay_ms:.0f} ms;"
            f" lateness at {args.rate:.0f} steps/s; PostgreSQL {pg_version};"
            f" {os.cpu_count()} CPUs\n"
            + ", ".join(f"{k}={v}" for k, v in sorted(campaign_settings.items())),
            flush=True,
        )
        for r in range(args.rounds):
            for c in args.concurrency:
                m = measure(ctx, r, c)
                by_round[c].append(m)
                print_round(r, args.rounds, c, m)
        unknown = ctx.unknown_messages
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
    h = by_c[headline]
    exactly_once = all(s["exactly_once"] for s in by_c.values()) and unknown == 0
    met = targets_met(h, exactly_once)
    print_summary(args.rounds, by_c, headline, met, args.relay_ms / 1000)
    figures: dict[str, Any] = {
        "bench": "campaigns",
        "carts": args.carts,
        "relay_ms": args.relay_ms,
        "headline_concurrency": headline,
        "relay_emails_per_s": h["relay_emails_per_s"],
        "relay_capped": h["relay_capped"],
        "relay_max_in_flight": h["relay_max_in_flight"],
        "lateness_p50_s": h["lateness_p50_s"],
        "lateness_p99_s": h["lateness_p99_s"],
        "lateness_max_s": h["lateness_max_s"],
        "lateness_capped": h["lateness_capped"],
        "exactly_once": exactly_once,
        "steps_per_s": h["steps_per_s"],
        "baseline_tasks_per_s": h["baseline_tasks_per_s"],
        "ratio": h["ratio"],
        "order_p50_ms": h["order_p50_ms"],
        "order_p99_ms": h["order_p99_ms"],
        "order_max_ms": h["order_max_ms"],
        "orders": h["orders"],
        "targets": {
            "relay_emails_per_s": RELAY_EMAILS_TARGET,
            "lateness_p99_s": LATENESS_P99_TARGET_S,
            "ratio": RATIO_TARGET,
            "order_p99_ms": ORDER_P99_TARGET_MS,
        },
        "met": met,
        "by_concurrency": {str(c): s for c, s in by_c.items()},
        "lateness_rate": args.rate,
        "relay_timeout_s": args.relay_timeout,
        "rounds": args.rounds,
        "settings": campaign_settings,
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
