"""Exit-intent offers benchmark: the shopper websocket against a raw websocket echo, same run.

    .venv/bin/python bench/exit_intent.py [--quick] [--rounds N] [--clients N] [--seconds S]
        [--interval S] [--sequential N] [--workers N] [--profile] [--no-ack]
        [--server-env NAME=VALUE ...] [--app MODULE:ATTR]

Two servers on loopback, both up for the whole run:
  - the baseline: a raw ``websockets`` echo server (one process, uvloop, the library's defaults,
    permessage-deflate included as with uvicorn) that sends every message straight back;
  - the product: ``uvicorn config.asgi:application`` as ``make run`` starts it (2 workers,
    ``DB_POOL_SIZE=8``, ``--lifespan off``), with DEBUG off, LOG_LEVEL=WARNING, no access log and
    ``RECOVERY_SERVER_TIMING=1``: each offer frame then carries ``server_ms``, the consumer's time
    from receiving the exit intent to sending the offer (thread-pool wait, validation, round trip
    1 of the append, scoring and the decision; the offer leaves before the commit).

The product side is a fresh store (``store_create``, ``store_origins_add`` with
``http://bench.local``) with an active campaign without holdout whose on-site tier offers a
message to any cart worth at least 0.01, without cooldown: every exit intent on a cart with an
item gets an offer. (Until issue 13 the tier offered 10% with a code; since then a discount's code
is a coupon, one per cart, and its offer waits at least an hour on the same cart, so a client's
second exit intent would get none.) A product client does what the storefront snippet does: ``POST
/api/v1/shopper-sessions`` (publishable key, no cart: a new one is minted, ``Origin``) for a ticket,
opens ``/ws/v1/shopper/``, sends ``hello``, waits for ``welcome``, sends one ``cart.item_added`` and
waits for its ``appended``, then sends exit intents (``shopper.exit_intent``, a fresh uuid4 id,
``occurred_at`` now, trigger ``mouse_leave``; 181 bytes). The time measured is from just before an
exit intent is sent until its ``offer`` frame arrives (the offer comes first, then ``appended`` once
the decision has committed: reported apart as "appended"). Every offer is acked (``{"type": "ack",
"offer": id}``, untimed). An echo client sends the same message and times its echo.

Scenarios, each against both servers, interleaved in every round (echo_1, product_1, echo_n,
product_n), ``--rounds`` times (3; 2 with ``--quick``):
  - ``*_1``: one client, ``--sequential`` exit intents one after the other (500; 150 with
    ``--quick``). After each offer and appended, the product client acks, sends a ``ping`` and
    waits for the ``pong``: a consumer handles one message at a time, so the ack's append never
    delays the next timed exit intent. It takes a new cart (ticket, socket, hello, item: untimed)
    every 20 exit intents, since a real cart sees a few and the ack looks up the cart's events.
  - ``*_n``: ``--clients`` (200) connected clients, each sending exit intents open-loop at jittered
    times for ``--seconds`` (20; 5 with ``--quick``): the first at a uniform offset within one
    ``--interval`` (1 s), then gaps uniform in [0.5, 1.5] intervals. That is ~200 exit intents/s in
    all, plus as many acks. It is a peak rate, not an average one: the snippet sends at most one
    exit intent per page view, after a minimum dwell, so 200 exit intents a second is a store with
    thousands of shoppers online; 200 sockets each sending once a second is the brief's
    stress point. Sends never wait for answers (no coordinated omission), and their lateness
    against the schedule is reported as a check on the client. The rate reported is answers per
    second of the send window.
    Then all product sockets are closed at once (PITFALLS.md: a mass disconnect exhausted the
    Redis pool): the run reports tracebacks, ``MaxConnectionsError`` and ERROR lines in the
    server's output from then on, and the channel-layer group members left in Redis (the
    consumer suppresses a failed ``group_discard``, so that is where one would show).

Sockets the server drops (close code, e.g. 1006) and server tracebacks are counted in every
scenario; the whole uvicorn output is saved next to the JSON when it is not empty.

All clients run in this one asyncio process (uvloop). Each scenario reports its CPU (under 10% of
a core at 200 clients), its event-loop lag and send lateness, so a client-side bottleneck would
show; and the CPU of the servers, of every PostgreSQL process and of the machine.

``--profile`` (opt-in: it perturbs the figures a little) also times the server's stages, by
running uvicorn on ``exit_intent:profiled_application``: config.asgi's application with timers
monkeypatched around the consumer's thread-pool calls, the append's round trips and commit, and
the offer's hand-over to the event loop (product code is not changed). And it samples the server's
PostgreSQL sessions every 10 ms (pg_stat_activity, pg_locks; PGAPPNAME names them): the mean
number in each state, and what a session holding its store's log head (docs/adr/0003) is doing.

What-if runs, never the default: ``--no-ack`` (clients do not ack offers), ``--server-env`` (e.g.
a settings overlay: ``PYTHONPATH=dir`` and ``DJANGO_SETTINGS_MODULE=overlay``) and ``--app`` (a
wrapper application from that PYTHONPATH). They are recorded in the JSON. docs/benchmarks.md has
the results and the what-ifs tried.

The summary gives medians over rounds (counts: totals); ratios are medians of each round's paired
ratio. Targets: server-side p99 (``server_ms``) <= 5 ms at 200 clients; client-observed p99 at
200 clients <= 3x the echo p99 of the same round; product p50 with one client <= 2 ms. The last
line printed is one JSON object with every figure (also saved under bench/results/, which git
ignores).

Each full run adds about 27,000 events to the development database (per round: 500 sequential
and ~4,000 paced exit intents, each with its ``recovery.offer_decided``, and one item per cart;
acks are kept in Redis, not the log; ``--quick`` about 5,000). The log is append-only, so
they stay (``make clean`` removes var/). Without DATABASE_URL / REDIS_URL it uses
the embedded servers under var/ (see config.embedded).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import http.client
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import Subprocess, django_setup, free_port, git_head, pct  # noqa: E402
from config.devrun import WEB_ENV, WEB_WORKERS  # noqa: E402 - needs the project on sys.path

ORIGIN = "http://bench.local"
SESSIONS_PATH = "/api/v1/shopper-sessions"
WS_PATH = "/ws/v1/shopper/"
SERVER_P99_TARGET_MS = 5.0
CLIENT_P99_RATIO_TARGET = 3.0
SINGLE_P50_TARGET_MS = 2.0
PER_CART = 20  # exit intents per cart in the sequential scenario
SETUP_CONCURRENCY = 20  # clients opening sessions at once while a scenario sets up
DRAIN_SECONDS = 15.0  # how long to wait for answers after the send window
# The last line of a traceback in the server's output: "module.Error: message".
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception)\b.*$")
SCENARIOS = ("echo_1", "product_1", "echo_n", "product_n")


# Messages ----------------------------------------------------------------------------------------


def dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"))


def exit_intent() -> tuple[str, str]:
    """A fresh exit-intent event message and its id."""
    event_id = str(uuid.uuid4())
    event = {
        "id": event_id,
        "type": "shopper.exit_intent",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {"trigger": "mouse_leave"},
    }
    return dumps({"type": "event", "event": event}), event_id


def item_added() -> str:
    event = {
        "id": str(uuid.uuid4()),
        "type": "cart.item_added",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {
            "sku": "BENCH-1",
            "name": "Bench jacket",
            "quantity": 1,
            "unit_price": 8900,
            "currency": "EUR",
            "category": "jackets",
            "url": "http://bench.local/p/bench-1",
        },
    }
    return dumps({"type": "event", "event": event})


def log_findings(text: str) -> dict[str, Any]:
    """Errors in a stretch of the server's output (LOG_LEVEL=WARNING, no access log)."""
    exceptions: dict[str, int] = {}
    for line in text.splitlines():
        if EXCEPTION_LINE.match(line):
            key = line[:160]
            exceptions[key] = exceptions.get(key, 0) + 1
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "max_connections_errors": text.count("MaxConnectionsError"),
        "redis_timeouts": text.count("Timeout reading from"),
        "error_lines": sum(1 for ln in text.splitlines() if re.search(r"\bERROR\b", ln)),
        "exceptions": exceptions,
    }


# Measurement -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)  # ms, client-observed
    server_ms: list[float] = field(default_factory=list)  # ms, from the offer frames
    appended_ms: list[float] = field(default_factory=list)  # ms, client-observed, product only
    sent: int = 0
    errors: int = 0  # error frames, unexpected frames, failed sockets
    missing: int = 0  # sent, never answered
    seconds: float = 0.0  # the send window (paced) or the timed loop (sequential)
    wall: float = 0.0  # the time CPU is counted over
    late_ms: list[float] = field(default_factory=list)  # paced sends after their scheduled time
    loop_lag_ms: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # seconds of CPU during the scenario
    dropped: list[int | None] = field(default_factory=list)  # close codes of sockets lost
    server_log: dict[str, Any] = field(default_factory=dict)  # errors in uvicorn's output
    disconnect: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None

    @property
    def rate(self) -> float:
        """Answers per second of the window."""
        return len(self.latencies) / self.seconds if self.seconds else math.nan

    def cpu_share(self, key: str) -> float:
        """CPU of ``key`` as a share of one core during the window (NaN under 2 s: the kernel
        counts CPU time in 10 ms ticks)."""
        return self.cpu.get(key, math.nan) / self.wall if self.wall >= 2 else math.nan


class LoopLag:
    """Samples how late the event loop wakes a 5 ms sleeper: the client process's own delay."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            self.samples.append((time.perf_counter() - t - 0.005) * 1000)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


class CpuMeter:
    """CPU seconds used by this process, the servers' process trees, every PostgreSQL process on
    the machine (other sessions' included) and the whole machine."""

    def __init__(self, servers: dict[str, int]) -> None:
        self.servers = servers
        self.procs: dict[str, list[Any]] = {}

    def refresh(self) -> None:
        """Find the servers' processes (uvicorn's workers are children of its supervisor)."""
        import psutil

        for name, pid in self.servers.items():
            root = psutil.Process(pid)
            self.procs[name] = [root, *root.children(recursive=True)]

    def snapshot(self) -> dict[str, Any]:
        import psutil

        def used(proc: Any) -> float:
            times = proc.cpu_times()
            return float(times.user + times.system)

        out: dict[str, Any] = {"client": time.process_time()}
        for name, procs in self.procs.items():
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += used(proc)
            out[name] = total
        postgres: dict[int, float] = {}
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] == "postgres":
                with contextlib.suppress(psutil.Error):
                    postgres[proc.pid] = used(proc)
        out["postgres"] = postgres
        machine = psutil.cpu_times()
        out["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return out

    @staticmethod
    def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        out = {k: after[k] - before[k] for k in before if k != "postgres"}
        # Backends that ended in between are lost; new ones count from zero.
        out["postgres"] = sum(
            t - before["postgres"].get(pid, 0.0) for pid, t in after["postgres"].items()
        )
        return out


# Clients -----------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


def session_open(port: int, publishable_key: str) -> tuple[str, str]:
    """``POST /api/v1/shopper-sessions`` as the snippet does for a new cart (the publishable key
    opens only carts its sessions minted); the ticket and the cart."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = dumps({"publishable_key": publishable_key}).encode()
        conn.request(
            "POST",
            SESSIONS_PATH,
            body=body,
            headers={"Content-Type": "application/json", "Origin": ORIGIN},
        )
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if response.status != 201:
        raise BenchError(f"POST {SESSIONS_PATH}: {response.status} {payload[:300]!r}")
    answer = json.loads(payload)
    return str(answer["ticket"]), str(answer["cart"])


class Client:
    """One socket: to the echo server, or a shopper's socket to the product."""

    def __init__(self, url: str, *, product: bool, ack: bool = True) -> None:
        self.url = url
        self.product = product
        self.ack = ack
        self.ws: Any = None
        self.cart = ""

    async def open_echo(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, open_timeout=30)

    async def open_product(self, port: int, publishable_key: str) -> None:
        from websockets.asyncio.client import connect
        from websockets.typing import Origin

        ticket, self.cart = await asyncio.to_thread(session_open, port, publishable_key)
        self.ws = await connect(self.url, origin=Origin(ORIGIN), open_timeout=30)
        await self.ws.send(dumps({"type": "hello", "ticket": ticket}))
        welcome = json.loads(await self.ws.recv())
        if welcome.get("type") != "welcome":
            raise BenchError(f"expected welcome, got {welcome}")
        await self.ws.send(item_added())
        appended = json.loads(await self.ws.recv())
        if appended.get("type") != "appended":
            raise BenchError(f"expected the item's appended, got {appended}")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    @property
    def close_code(self) -> int | None:
        """The close code the server sent (None: none, e.g. the connection was cut)."""
        return None if self.ws is None else self.ws.close_code

    async def sequential_one(self, result: Result) -> None:
        """One timed exit intent, then (product) the untimed ack and a ping/pong barrier."""
        ws = self.ws
        message, event_id = exit_intent()
        t = time.perf_counter()
        await ws.send(message)
        result.sent += 1
        if not self.product:
            raw = await ws.recv()
            elapsed = time.perf_counter() - t
            if json.loads(raw)["event"]["id"] != event_id:
                raise BenchError("echo of another message")
            result.latencies.append(elapsed * 1000)
            return
        # The offer and the event's appended, in either order (docs/websocket.md: the offer
        # leaves as soon as it is decided, before the commit that appended confirms).
        offer: dict[str, Any] | None = None
        appended = False
        while offer is None or not appended:
            raw = await ws.recv()
            now = time.perf_counter()
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "offer" and offer is None:
                offer = frame
                result.latencies.append((now - t) * 1000)
                result.server_ms.append(float(frame["server_ms"]))
            elif kind == "appended" and frame.get("id") == event_id and not appended:
                appended = True
                result.appended_ms.append((now - t) * 1000)
            else:
                raise BenchError(f"unexpected frame after an exit intent: {frame}")
        if self.ack:
            await ws.send(dumps({"type": "ack", "offer": offer["id"]}))
        await ws.send(dumps({"type": "ping"}))
        pong = json.loads(await ws.recv())
        if pong.get("type") != "pong":
            raise BenchError(f"expected pong, got {pong}")

    async def paced(
        self, result: Result, *, start: float, seconds: float, interval: float, rng: random.Random
    ) -> None:
        """Exit intents at jittered times from ``start`` for ``seconds``, answers read apart.

        A socket's frames come in the order of its messages (a consumer handles one at a time),
        so each offer answers the oldest exit intent still waiting for one, and likewise for
        appended frames, whichever of the two comes first. A socket the server drops stops
        sending; what it had sent and not seen answered counts as missing.
        """
        from websockets.exceptions import ConnectionClosed

        ws = self.ws
        waiting_offer: collections.deque[float] = collections.deque()  # send times
        waiting_appended: collections.deque[tuple[str, float]] = collections.deque()
        echoes: dict[str, float] = {}
        counts = {"sent": 0, "answered": 0}
        sending_done = False
        settled = asyncio.Event()  # everything sent was answered, or the socket is gone

        def answered(t_sent: float, now: float) -> None:
            result.latencies.append((now - t_sent) * 1000)
            counts["answered"] += 1
            if sending_done and counts["answered"] >= counts["sent"]:
                settled.set()

        async def reader() -> None:
            try:
                async for raw in ws:
                    now = time.perf_counter()
                    frame = json.loads(raw)
                    kind = frame.get("type")
                    if not self.product:
                        t_sent = echoes.pop(frame["event"]["id"], None)
                        if t_sent is None:
                            result.errors += 1
                        else:
                            answered(t_sent, now)
                    elif kind == "offer" and waiting_offer:
                        result.server_ms.append(float(frame["server_ms"]))
                        answered(waiting_offer.popleft(), now)
                        if self.ack:
                            await ws.send(dumps({"type": "ack", "offer": frame["id"]}))
                    elif kind == "appended" and waiting_appended:
                        event_id, t_sent = waiting_appended.popleft()
                        if frame.get("id") != event_id:
                            result.errors += 1
                        result.appended_ms.append((now - t_sent) * 1000)
                    else:  # errors, offer.withdrawn, anything unexpected
                        result.errors += 1
            except ConnectionClosed:
                pass
            settled.set()  # the socket is closed: nothing more will come

        reading = asyncio.create_task(reader())
        try:
            at = start + rng.uniform(0, interval)
            end = start + seconds
            while at < end and not reading.done():
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                result.late_ms.append(max(0.0, time.perf_counter() - at) * 1000)
                message, event_id = exit_intent()
                t = time.perf_counter()
                if self.product:
                    waiting_offer.append(t)
                    waiting_appended.append((event_id, t))
                else:
                    echoes[event_id] = t
                try:
                    await ws.send(message)
                except ConnectionClosed:
                    break
                counts["sent"] += 1
                result.sent += 1
                at += rng.uniform(0.5, 1.5) * interval
            sending_done = True
            if counts["answered"] >= counts["sent"]:
                settled.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), timeout=DRAIN_SECONDS)
            result.missing += counts["sent"] - counts["answered"]
            if reading.done():
                result.dropped.append(self.close_code)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading


async def gather_limited(factories: Sequence[Callable[[], Awaitable[None]]], limit: int) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Awaitable[None]]) -> None:
        async with semaphore:
            await factory()

    await asyncio.gather(*(one(f) for f in factories))


@dataclass(slots=True)
class Plan:
    rounds: int
    sequential: int
    clients: int
    seconds: float
    interval: float
    ack: bool = True


@dataclass(slots=True)
class Context:
    plan: Plan
    run: str
    echo_url: str
    product_url: str
    port: int
    publishable_key: str
    store_id: int
    cpu: CpuMeter
    server: Subprocess
    rng: random.Random
    database_url: str
    profile_dir: Path | None = None


@contextlib.contextmanager
def profiling(ctx: Context, result: Result) -> Iterator[None]:
    """With --profile, the server's stage timings and PostgreSQL's samples for this stretch."""
    if ctx.profile_dir is None:
        yield
        return
    since = time.time()
    with PgSampler(ctx.database_url) as sampler:
        yield
    until = time.time()
    time.sleep(0.6)  # the workers flush their records every 0.25 s
    records = profile_records(ctx.profile_dir, since, until)
    result.profile = {"server": profile_summary(records), "postgres": sampler.summary()}


async def run_sequential(ctx: Context, name: str, *, product: bool, n: int) -> Result:
    """One client, one exit intent at a time; a product client takes a new cart every PER_CART.

    CPU is counted over the whole loop, the product's session set-ups included (one every 20
    exit intents: a ticket, a handshake, a hello and an item).
    """
    from websockets.exceptions import ConnectionClosed

    result = Result(name)
    url = ctx.product_url if product else ctx.echo_url
    client: Client | None = None
    log_mark = ctx.server.log_size()
    before = ctx.cpu.snapshot()
    t0 = time.perf_counter()
    with LoopLag() as lag, profiling(ctx, result) if product else contextlib.nullcontext():
        try:
            for i in range(n):
                if client is None or (product and i % PER_CART == 0):
                    if client is not None:
                        await client.close()
                    client = Client(url, product=product, ack=ctx.plan.ack)
                    if product:
                        await client.open_product(ctx.port, ctx.publishable_key)
                    else:
                        await client.open_echo()
                try:
                    await client.sequential_one(result)
                except ConnectionClosed:
                    result.dropped.append(client.close_code)
                    result.missing += 1
                    client = None  # a new socket (and cart) for the next one
        finally:
            if client is not None:
                await client.close()
        result.loop_lag_ms = lag.samples
    result.seconds = result.wall = time.perf_counter() - t0
    result.cpu = CpuMeter.delta(before, ctx.cpu.snapshot())
    result.server_log = log_findings(ctx.server.log_text(log_mark))
    return result


async def run_paced(ctx: Context, name: str, *, product: bool) -> Result:
    plan = ctx.plan
    result = Result(name)
    url = ctx.product_url if product else ctx.echo_url
    clients = [Client(url, product=product, ack=plan.ack) for _ in range(plan.clients)]
    log_mark = ctx.server.log_size()
    try:
        if product:
            await gather_limited(
                [functools.partial(c.open_product, ctx.port, ctx.publishable_key) for c in clients],
                SETUP_CONCURRENCY,
            )
        else:
            await gather_limited([c.open_echo for c in clients], SETUP_CONCURRENCY)
        rngs = [random.Random(ctx.rng.random()) for _ in clients]
        start = time.perf_counter() + 0.2
        with LoopLag() as lag, profiling(ctx, result) if product else contextlib.nullcontext():
            before, counted_from = ctx.cpu.snapshot(), time.perf_counter()
            await asyncio.gather(
                *(
                    c.paced(
                        result, start=start, seconds=plan.seconds, interval=plan.interval, rng=r
                    )
                    for c, r in zip(clients, rngs, strict=True)
                )
            )
            # The rate is over the send window; CPU shares until the last answer.
            result.cpu = CpuMeter.delta(before, ctx.cpu.snapshot())
            result.wall = time.perf_counter() - counted_from
            result.loop_lag_ms = lag.samples
        result.seconds = plan.seconds
        result.server_log = log_findings(ctx.server.log_text(log_mark))
        if product:
            result.disconnect = await mass_disconnect(ctx, clients)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return result


def group_keys(ctx: Context, carts: Sequence[str]) -> list[bytes]:
    """The channel layer's Redis keys of these carts' groups."""
    from channels.layers import get_channel_layer

    from recovery.live import cart_group

    layer = get_channel_layer()
    assert layer is not None
    return [layer._group_key(cart_group(ctx.store_id, cart)) for cart in carts]  # type: ignore[attr-defined]


def group_members(keys: Sequence[bytes]) -> int:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.zcard(key)
        return int(sum(pipe.execute()))
    finally:
        client.close()


async def mass_disconnect(ctx: Context, clients: Sequence[Client]) -> dict[str, Any]:
    """Close every socket at once; then look for errors in the server's output and in Redis.

    Every socket is in its cart's channel-layer group (a Redis sorted set) while open; the
    consumer leaves it on disconnect, and suppresses a failure to (PITFALLS.md: the pool ran out
    under a mass disconnect), so a failed ``group_discard`` shows only as a member left behind.
    """
    live = [c for c in clients if c.ws is not None and c.close_code is None]
    keys = group_keys(ctx, [c.cart for c in live])
    members_before = await asyncio.to_thread(group_members, keys)
    log_mark = ctx.server.log_size()
    t = time.perf_counter()
    outcomes = await asyncio.gather(*(c.close() for c in live), return_exceptions=True)
    close_seconds = time.perf_counter() - t
    await asyncio.sleep(2.0)  # let the server run its disconnect handlers
    members_after = await asyncio.to_thread(group_members, keys)
    found = log_findings(ctx.server.log_text(log_mark))
    client_errors = sum(1 for o in outcomes if isinstance(o, BaseException))
    return {
        "clients": len(live),
        "close_seconds": round(close_seconds, 3),
        "client_errors": client_errors,
        "members_before": members_before,
        "members_left": members_after,
        **found,
        "clean": not found["tracebacks"]
        and not found["error_lines"]
        and members_after == 0
        and members_before == len(live)
        and not client_errors,
    }


async def warm_up(ctx: Context) -> None:
    """First messages pay for imports, the scorer, pools: keep them out of the figures."""
    clients = [Client(ctx.product_url, product=True) for _ in range(20)]
    await gather_limited(
        [functools.partial(c.open_product, ctx.port, ctx.publishable_key) for c in clients],
        SETUP_CONCURRENCY,
    )
    scratch = Result("warm")
    for _ in range(5):
        await asyncio.gather(*(c.sequential_one(scratch) for c in clients))
    await asyncio.gather(*(c.close() for c in clients))
    echo = Client(ctx.echo_url, product=False)
    await echo.open_echo()
    for _ in range(50):
        await echo.sequential_one(scratch)
    await echo.close()


async def measure_round(ctx: Context) -> dict[str, Result]:
    plan = ctx.plan
    out: dict[str, Result] = {}
    out["echo_1"] = await run_sequential(ctx, "echo_1", product=False, n=plan.sequential)
    out["product_1"] = await run_sequential(ctx, "product_1", product=True, n=plan.sequential)
    out["echo_n"] = await run_paced(ctx, "echo_n", product=False)
    out["product_n"] = await run_paced(ctx, "product_n", product=True)
    return out


# Servers -----------------------------------------------------------------------------------------


def check_alive(server: Subprocess) -> None:
    code = server.exited()
    if server.proc is None or code is not None:
        raise BenchError(f"{server.name} exited with {code}:\n{server.output()}")


def wait_http(server: Subprocess, port: int, *, probes: int, timeout: float = 60) -> None:
    """Until ``probes`` preflights of the sessions endpoint have been answered."""
    deadline = time.monotonic() + timeout
    ready = 0
    while ready < probes:
        check_alive(server)
        if time.monotonic() > deadline:
            raise BenchError(f"{server.name} not ready after {timeout}s:\n{server.output()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("OPTIONS", SESSIONS_PATH, headers={"Origin": ORIGIN})
            status = conn.getresponse().status
            conn.close()
            if status >= 300:
                raise BenchError(f"OPTIONS {SESSIONS_PATH}: {status}\n{server.output()}")
            ready += 1
        except OSError:
            time.sleep(0.1)


def wait_tcp(server: Subprocess, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        check_alive(server)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{server.name} not listening after {timeout}s") from None
            time.sleep(0.05)


def echo_server(port: int) -> None:
    """The baseline: every message straight back (``--echo-server``, run as a subprocess)."""
    import uvloop
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", port):
            await asyncio.Future()

    uvloop.run(main())


def product_env() -> dict[str, str]:
    from django.conf import settings

    env = dict(os.environ)
    env.update(WEB_ENV)  # the web server's settings in `make run` (connection pool)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        # The URLs of the servers this process already holds a lease on: the server processes
        # need no lease of their own, and a run against external servers works the same way.
        DATABASE_URL=settings.SERVICES.database_url,
        REDIS_URL=settings.SERVICES.redis_url,
        DJANGO_DEBUG="0",
        LOG_LEVEL="WARNING",
        RECOVERY_SERVER_TIMING="1",
        PYTHONUNBUFFERED="1",
        # Thousands of shoppers from one address (this machine): the per-address and per-store
        # limits are off; each socket's message limit stays on, as shipped (docs/security.md).
        RATE_LIMIT_SHOPPER_SESSION_IP="",
        RATE_LIMIT_SHOPPER_SESSION_STORE="",
        RATE_LIMIT_OFFERS_IP="",
        RATE_LIMIT_WS_CONNECT_IP="",
    )
    return env


# Profiling (--profile) ------------------------------------------------------------------------
#
# Opt-in, because it perturbs what it measures a little (tens of microseconds a message, and a
# query on PostgreSQL every 10 ms). Two views:
#  - inside the server: uvicorn runs ``exit_intent:profiled_application`` (this module, with
#    bench/ on PYTHONPATH), which is config.asgi's application with timers wrapped around the
#    consumer's stages by monkeypatching (product code is not changed). Each worker appends one
#    JSON line per database call of a consumer to PROFILE_DIR/<pid>.jsonl;
#  - inside PostgreSQL: a thread samples pg_stat_activity and pg_locks for the server's
#    connections (application_name, through PGAPPNAME) every 10 ms.

PROFILE_ENV = "BENCH_EXIT_INTENT_PROFILE_DIR"
APP_NAME = "bench-exit-intent"
# The stages timed in the server, in ms (see _install_profile).
STAGES = (
    "queue",  # submitted to the thread pool -> running in a pool thread
    "thread",  # the service call in the thread, all of it
    "thread_cpu",  # the CPU that thread used meanwhile (time.thread_time)
    "validate",  # recovery.live.events_in
    "connect",  # Django's ensure_connection: a connection from the pool
    "append_tx",  # carts.append._append: round trips 1 and 2 and the Python in between
    "rt1",  # its round trip 1 (cart rows: create, lock; existing ids)
    "rt2",  # its round trip 2 (cart states, the store's log head, the insert)
    "to_commit",  # round trip 2 done -> COMMIT sent: Python (and GIL waits) under the log's lock
    "commit_rt",  # the COMMIT round trip (WAL flush); the log's lock is released with it
    "commit",  # events_append minus _append and connect: the two above, the on-commit hint
    "hint",  # the on-commit hint (a Redis PUBLISH), part of commit
    "offer_loop_delay",  # the offer frame handed to the event loop -> the loop runs it
    "offer_send",  # the loop sending the offer frame
    "resume",  # the thread done -> the consumer's coroutine runs again
)

ACK_STAGES = ("queue", "thread", "thread_cpu", "rt2", "to_commit", "commit_rt")


def _install_profile(out_dir: str) -> None:
    """Wrap timers around the consumer's stages in this (uvicorn worker) process."""
    import threading

    import psycopg
    from channels.db import database_sync_to_async

    from carts import append
    from recovery import consumers, live

    local = threading.local()
    path = Path(out_dir) / f"{os.getpid()}.jsonl"
    sink = path.open("a", buffering=1 << 16)
    lock = threading.Lock()

    def emit(record: dict[str, Any]) -> None:
        with lock:
            sink.write(dumps(record) + "\n")

    def flush_forever() -> None:
        while True:
            time.sleep(0.25)
            with lock:
                sink.flush()

    threading.Thread(target=flush_forever, daemon=True).start()

    def add(stage: str, seconds: float) -> None:
        record = getattr(local, "record", None)
        if record is not None:
            record[stage] = record.get(stage, 0.0) + seconds * 1000

    def timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                add(stage, time.perf_counter() - t)

        return wrapper

    live.events_in = timed("validate", live.events_in)  # type: ignore[attr-defined]
    live.events_append = timed("append_total", live.events_append)  # type: ignore[attr-defined]
    append._append = timed("append_tx", append._append)  # type: ignore[attr-defined]
    append._publish_hint = timed("hint", append._publish_hint)  # type: ignore[attr-defined]

    from django.db.backends.postgresql.base import DatabaseWrapper

    DatabaseWrapper.ensure_connection = timed("connect", DatabaseWrapper.ensure_connection)  # type: ignore[method-assign]

    pipeline = psycopg.Connection.pipeline

    @contextlib.contextmanager
    def timed_pipeline(self: Any) -> Any:
        t = time.perf_counter()
        with pipeline(self) as p:
            yield p
        record = getattr(local, "record", None)
        if record is not None:
            record["_pipeline_end"] = end = time.perf_counter()
            n = record["pipelines"] = record.get("pipelines", 0) + 1
            if n <= 2:
                record[f"rt{n}"] = (end - t) * 1000

    psycopg.Connection.pipeline = timed_pipeline  # type: ignore[assignment,method-assign]

    commit = DatabaseWrapper.commit

    def timed_commit(self: Any) -> None:
        record = getattr(local, "record", None)
        start = time.perf_counter()
        if record is not None and "_pipeline_end" in record:
            record["to_commit"] = (start - record.pop("_pipeline_end")) * 1000
        try:
            commit(self)
        finally:
            if record is not None:
                record["commit_rt"] = (time.perf_counter() - start) * 1000

    DatabaseWrapper.commit = timed_commit  # type: ignore[method-assign]

    run_threadsafe = asyncio.run_coroutine_threadsafe

    def timed_run_threadsafe(coro: Any, loop: Any) -> Any:
        record = getattr(local, "record", None)
        handed = time.perf_counter()

        async def run() -> Any:
            start = time.perf_counter()
            try:
                return await coro
            finally:
                if record is not None:
                    record["offer_loop_delay"] = (start - handed) * 1000
                    record["offer_send"] = (time.perf_counter() - start) * 1000

        return run_threadsafe(run(), loop)

    asyncio.run_coroutine_threadsafe = timed_run_threadsafe

    lag_started = [False]

    async def loop_lag() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            emit({"t": time.time(), "loop_lag": (time.perf_counter() - t - 0.01) * 1000})

    def profiled_db(fn: Callable[..., Any]) -> Callable[..., Any]:
        def in_thread(record: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            record["queue"] = (start - record.pop("_submitted")) * 1000
            cpu = time.thread_time()
            local.record = record
            try:
                return fn(*args, **kwargs)
            finally:
                local.record = None
                record["thread_cpu"] = (time.thread_time() - cpu) * 1000
                record["_done"] = time.perf_counter()
                record["thread"] = (record["_done"] - start) * 1000

        call = database_sync_to_async(in_thread, thread_sensitive=False)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not lag_started[0]:
                lag_started[0] = True
                asyncio.get_running_loop().create_task(loop_lag())
            raw = kwargs.get("raw")
            kind = raw.get("type") if isinstance(raw, dict) else None
            record: dict[str, Any] = {
                "t": time.time(),
                "fn": fn.__name__,
                "event": kind,
                "_submitted": time.perf_counter(),
            }
            try:
                return await call(record, *args, **kwargs)
            finally:
                done = record.pop("_done", None)
                if done is not None:
                    record["resume"] = (time.perf_counter() - done) * 1000
                if "append_total" in record and "append_tx" in record:
                    record["commit"] = (
                        record["append_total"] - record["append_tx"] - record.get("connect", 0.0)
                    )
                emit(record)

        return wrapper

    consumers._db = profiled_db  # type: ignore[attr-defined]


def __getattr__(name: str) -> Any:
    """``exit_intent:profiled_application`` for uvicorn in --profile runs."""
    if name != "profiled_application":
        raise AttributeError(name)
    from config.asgi import application

    _install_profile(os.environ[PROFILE_ENV])
    globals()[name] = application
    return application


def profile_records(out_dir: Path, since: float, until: float) -> list[dict[str, Any]]:
    records = []
    for path in out_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if since <= record["t"] <= until:
                    records.append(record)
    return records


def profile_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage p50 / p99 / mean (ms) of the exit intents; acks and the servers' loop lag."""
    exits = [
        r
        for r in records
        if r.get("fn") == "shopper_event_append" and r.get("event") == "shopper.exit_intent"
    ]
    exits = [r for r in exits if "offer_loop_delay" in r] or exits
    acks = [r for r in records if r.get("fn") == "offer_reaction_record"]
    out: dict[str, Any] = {"exit_intents": len(exits), "acks": len(acks)}
    for stage in STAGES:
        values = [float(r[stage]) for r in exits if stage in r]
        if values:
            out[stage] = {
                "p50": round(pct(values, 50), 3),
                "p99": round(pct(values, 99), 3),
                "mean": round(statistics.fmean(values), 3),
            }
    for stage in ACK_STAGES:
        values = [float(r[stage]) for r in acks if stage in r]
        if values:
            out[f"ack_{stage}"] = {
                "p50": round(pct(values, 50), 3),
                "p99": round(pct(values, 99), 3),
                "mean": round(statistics.fmean(values), 3),
            }
    lags = [float(r["loop_lag"]) for r in records if "loop_lag" in r]
    if lags:
        out["server_loop_lag"] = {
            "p50": round(pct(lags, 50), 3),
            "p99": round(pct(lags, 99), 3),
            "mean": round(statistics.fmean(lags), 3),
        }
    return out


PG_SAMPLE = """
SELECT a.state, a.wait_event_type, a.wait_event,
       -- Its last statement moved a store's log head, and its transaction is still open: it holds
       -- the head's row lock (docs/adr/0003) until it commits.
       (a.query LIKE '%%INSERT INTO carts_loghead%%'
        AND a.state IN ('active', 'idle in transaction')) AS holds_advisory
FROM pg_stat_activity a
WHERE a.application_name = %s AND a.pid <> pg_backend_pid()
"""


class PgSampler:
    """Samples what the server's PostgreSQL sessions are doing, every 10 ms, in a thread.

    The mean number of sessions in each state is, by Little's law, the rate of transactions
    times the time each spends in that state.
    """

    def __init__(self, url: str) -> None:
        import threading

        self.url = url
        self.samples = 0
        self.counts: dict[str, float] = {}
        self.holder: dict[str, float] = {}  # what the session holding the log's lock is doing
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def label(state: str | None, wait_type: str | None, wait: str | None) -> str:
        if state == "active":
            return f"active, waiting {wait_type}:{wait}" if wait_type else "active, running"
        if state == "idle in transaction":
            return "idle in transaction (the app's turn)"
        return state or "unknown"

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(PG_SAMPLE, [APP_NAME]).fetchall()
                self.samples += 1
                held = False
                for state, wait_type, wait, holds in rows:
                    key = self.label(state, wait_type, wait)
                    self.counts[key] = self.counts.get(key, 0.0) + 1
                    if holds:
                        held = True
                        self.holder[key] = self.holder.get(key, 0.0) + 1
                if not held:
                    self.holder["(not held)"] = self.holder.get("(not held)", 0.0) + 1
                time.sleep(0.01)

    def __enter__(self) -> PgSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        n = max(self.samples, 1)
        return {
            "samples": self.samples,
            "mean_sessions": {
                k: round(v / n, 3) for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1])
            },
            "log_head_holder": {
                k: round(v / n, 3) for k, v in sorted(self.holder.items(), key=lambda kv: -kv[1])
            },
        }


def print_profile(name: str, profile: dict[str, Any], answers_per_second: float) -> None:
    server = profile.get("server", {})
    print(
        f"    profile {name}: {server.get('exit_intents', 0)} exit intents,"
        f" {server.get('acks', 0)} acks timed in the server (ms: p50 / p99 / mean)"
    )
    for stage in (*STAGES, *(f"ack_{s}" for s in ACK_STAGES), "server_loop_lag"):
        if stage in server:
            s = server[stage]
            print(f"      {stage:<18} {s['p50']:8.2f} {s['p99']:8.2f} {s['mean']:8.2f}")
    pg = profile.get("postgres")
    if pg:
        print(
            f"      PostgreSQL sessions of the server, mean number in each state"
            f" ({pg['samples']} samples; / {answers_per_second:.0f} exit intents/s ="
            " ms per exit intent, its ack included):"
        )
        for key, value in pg["mean_sessions"].items():
            per = value / answers_per_second * 1000 if answers_per_second else math.nan
            print(f"        {key:<48} {value:6.2f}  ({per:6.2f} ms)")
        print("      a store's log head: share of samples by what its holder is doing")
        for key, value in pg["log_head_holder"].items():
            print(f"        {key:<48} {value:6.1%}")


# Setup -------------------------------------------------------------------------------------------


def store_for_bench() -> tuple[int, str]:
    """A fresh store allowing the bench origin, with an offer for every exit intent."""
    from campaigns.models import Campaign, Tier
    from carts import services
    from carts.models import Store

    creds = services.store_create(name=f"bench exit intent {datetime.now(UTC):%Y-%m-%d %H:%M:%S}")
    store = Store.objects.get(pk=creds.store_id)
    services.store_origins_add(store=store, origins=[ORIGIN])
    campaign = Campaign.objects.create(
        store=store, name="bench exit intent", active=True, holdout_share=0
    )
    Tier.objects.create(
        campaign=campaign,
        channel="onsite",
        min_score=0,
        min_cart_value=1,
        # A message offer: a discount's code is a coupon, one per cart, and its offer waits at
        # least an hour on the same cart (issue 13), so only a message can answer every exit
        # intent of a client's cart.
        offer_kind="message",
        headline="Before you go",
        cooldown_hours=0,
    )
    return creds.store_id, creds.publishable_key


def count_events(store_id: int) -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT type, count(*) FROM carts_cartevent WHERE store_id = %s GROUP BY type",
            [store_id],
        )
        rows = cursor.fetchall()
    connection.close()
    return {str(t): int(n) for t, n in rows}


# Reporting ---------------------------------------------------------------------------------------


def fmt(x: float, width: int = 7, digits: int = 2) -> str:
    return f"{'-':>{width}}" if math.isnan(x) else f"{x:>{width}.{digits}f}"


def share(x: float, width: int = 5) -> str:
    return f"{'-':>{width}}" if math.isnan(x) else f"{x:>{width}.0%}"


COUNTS = ("sent", "answered", "missing", "errors", "dropped", "tracebacks", "redis_timeouts")


def round_figures(res: Result) -> dict[str, float]:
    """One scenario of one round as flat figures (NaN where they do not apply)."""
    server = "product" if res.name.startswith("product") else "echo"
    answered = len(res.latencies)
    fig = {
        "p50_ms": pct(res.latencies, 50),
        "p99_ms": pct(res.latencies, 99),
        "server_p50_ms": pct(res.server_ms, 50),
        "server_p99_ms": pct(res.server_ms, 99),
        "appended_p50_ms": pct(res.appended_ms, 50),
        "appended_p99_ms": pct(res.appended_ms, 99),
        "rate": res.rate if res.name.endswith("_n") else math.nan,
        "sent": float(res.sent),
        "answered": float(answered),
        "missing": float(res.missing),
        "errors": float(res.errors),
        "dropped": float(len(res.dropped)),
        "tracebacks": float(res.server_log.get("tracebacks", 0)) if server == "product" else 0.0,
        "redis_timeouts": float(res.server_log.get("redis_timeouts", 0))
        if server == "product"
        else 0.0,
        "client_cpu": res.cpu_share("client"),
        "server_cpu": res.cpu_share(server),
        "postgres_cpu": res.cpu_share("postgres") if server == "product" else math.nan,
        "machine_cpu": res.cpu_share("machine"),
        "server_cpu_ms_per_exit": res.cpu.get(server, math.nan) * 1000 / answered
        if answered
        else math.nan,
        "postgres_cpu_ms_per_exit": res.cpu.get("postgres", math.nan) * 1000 / answered
        if answered and server == "product"
        else math.nan,
        "loop_lag_p99_ms": pct(res.loop_lag_ms, 99),
        "late_p99_ms": pct(res.late_ms, 99),
    }
    return fig


def print_round(plan: Plan, r: int, results: dict[str, Result]) -> None:
    print(f"round {r + 1}/{plan.rounds}")
    for name in SCENARIOS:
        res = results[name]
        f = round_figures(res)
        line = f"  {name:<10} p50 {fmt(f['p50_ms'])}  p99 {fmt(f['p99_ms'])} ms"
        if res.server_ms:
            line += (
                f"  server p50 {fmt(f['server_p50_ms'], 6)} p99 {fmt(f['server_p99_ms'], 6)}"
                f"  appended p50 {fmt(f['appended_p50_ms'], 6)} p99"
                f" {fmt(f['appended_p99_ms'], 7)}"
            )
        line += f"  {len(res.latencies):>5} answers"
        if name.endswith("_n"):
            line += f" {f['rate']:5.1f}/s (late p99 {f['late_p99_ms']:.1f} ms)"
        line += (
            f"  CPU client {share(f['client_cpu'])} server {share(f['server_cpu'])}"
            f" pg {share(f['postgres_cpu'])} machine {share(f['machine_cpu'])}"
            f"  loop lag p99 {f['loop_lag_p99_ms']:.1f} ms"
        )
        if res.errors or res.missing or res.dropped:
            line += (
                f"  ERRORS: {res.errors} error frames, {res.missing} unanswered,"
                f" {len(res.dropped)} sockets dropped"
                f" (close codes {sorted(set(map(str, res.dropped)))})"
            )
        print(line)
        if res.profile is not None:
            print_profile(name, res.profile, f["answered"] / res.wall if res.wall else math.nan)
        if res.server_log.get("tracebacks"):
            print(f"    server output: {res.server_log['tracebacks']} tracebacks")
            for text, count in list(res.server_log["exceptions"].items())[:5]:
                print(f"      {count} x {text}")
    d = results["product_n"].disconnect
    if d is not None:
        print(
            f"  mass disconnect: {d['clients']} sockets closed at once"
            f" in {d['close_seconds']:.2f} s,"
            f" {d['client_errors']} client errors; server output: {d['tracebacks']} tracebacks,"
            f" {d['max_connections_errors']} MaxConnectionsError, {d['error_lines']} ERROR lines;"
            f" group members in Redis {d['members_before']} before, {d['members_left']} after"
            f" -> {'clean' if d['clean'] else 'NOT CLEAN'}"
        )
        for text, count in list(d["exceptions"].items())[:5]:
            print(f"      {count} x {text}")
    sys.stdout.flush()


def summarise(plan: Plan, rounds: list[dict[str, Result]]) -> dict[str, Any]:
    """Medians over rounds (counts: totals); ratios as medians of each round's paired ratio."""
    summary: dict[str, Any] = {}
    per_round = [{name: round_figures(r[name]) for name in SCENARIOS} for r in rounds]
    for name in SCENARIOS:
        for key in per_round[0][name]:
            values = [fr[name][key] for fr in per_round if not math.isnan(fr[name][key])]
            if not values:
                continue
            if key in COUNTS:
                summary[f"{name}_{key}"] = int(sum(values))
            else:
                digits = 3 if key.endswith("cpu") else 2
                summary[f"{name}_{key}"] = round(statistics.median(values), digits)
        summary[f"{name}_p99_ms_rounds"] = [round(fr[name]["p99_ms"], 2) for fr in per_round]
    summary["product_1_p50_ms_rounds"] = [round(fr["product_1"]["p50_ms"], 2) for fr in per_round]
    summary["product_n_server_p99_ms_rounds"] = [
        round(fr["product_n"]["server_p99_ms"], 2) for fr in per_round
    ]
    ratios_n = [fr["product_n"]["p99_ms"] / fr["echo_n"]["p99_ms"] for fr in per_round]
    ratios_1 = [fr["product_1"]["p50_ms"] / fr["echo_1"]["p50_ms"] for fr in per_round]
    summary["p99_ratio_n"] = round(statistics.median(ratios_n), 2)
    summary["p99_ratio_n_rounds"] = [round(x, 2) for x in ratios_n]
    summary["p50_ratio_1"] = round(statistics.median(ratios_1), 2)
    summary["p50_ratio_1_rounds"] = [round(x, 2) for x in ratios_1]
    disconnects = [d for r in rounds if (d := r["product_n"].disconnect) is not None]
    summary["mass_disconnect_clean"] = bool(disconnects) and all(d["clean"] for d in disconnects)
    for key in ("tracebacks", "max_connections_errors", "error_lines", "members_left"):
        summary[f"mass_disconnect_{key}"] = sum(int(d[key]) for d in disconnects)
    summary["mass_disconnect_members_before"] = [d["members_before"] for d in disconnects]
    summary["mass_disconnect_client_errors"] = sum(d["client_errors"] for d in disconnects)
    summary["mass_disconnect_close_seconds"] = [d["close_seconds"] for d in disconnects]
    summary["server_p99_ok"] = summary["product_n_server_p99_ms"] <= SERVER_P99_TARGET_MS
    summary["client_p99_ratio_ok"] = summary["p99_ratio_n"] <= CLIENT_P99_RATIO_TARGET
    summary["single_p50_ok"] = summary["product_1_p50_ms"] <= SINGLE_P50_TARGET_MS
    return summary


def print_summary(plan: Plan, s: dict[str, Any]) -> None:
    n = plan.clients
    print(
        f"\nmedians over {plan.rounds} rounds ({n} clients, each ~1 exit intent every"
        f" {plan.interval:g} s)"
    )
    print(
        f"  {'':<10} {'p50':>7} {'p99':>7} {'srv p50':>7} {'srv p99':>7} {'app p50':>7}"
        f" {'app p99':>7} {'rate/s':>7} {'client':>6} {'server':>6} {'pg':>5} {'machine':>7}"
        f" {'srv ms/exit':>11} {'pg ms/exit':>10}"
    )
    for name in SCENARIOS:

        def g(key: str, name: str = name) -> float:
            return float(s.get(f"{name}_{key}", math.nan))

        print(
            f"  {name:<10} {fmt(g('p50_ms'))} {fmt(g('p99_ms'))} {fmt(g('server_p50_ms'))}"
            f" {fmt(g('server_p99_ms'))} {fmt(g('appended_p50_ms'))} {fmt(g('appended_p99_ms'))}"
            f" {fmt(g('rate'), 7, 1)} {share(g('client_cpu'), 6)} {share(g('server_cpu'), 6)}"
            f" {share(g('postgres_cpu'))} {share(g('machine_cpu'), 7)}"
            f" {fmt(g('server_cpu_ms_per_exit'), 11)} {fmt(g('postgres_cpu_ms_per_exit'), 10)}"
        )
    print(
        "  ms; p50/p99 client-observed (product: to the offer frame), srv = server_ms, app = to"
        " the appended frame;\n  CPU as a share of one core (the machine has"
        f" {os.cpu_count()}); ms/exit: CPU per answered exit intent, its ack included"
    )
    problems = [
        f"{name}: {s[f'{name}_{key}']} {key}"
        for name in SCENARIOS
        for key in ("missing", "errors", "dropped", "tracebacks")
        if s.get(f"{name}_{key}")
    ]
    if problems:
        print("  PROBLEMS (totals over rounds): " + "; ".join(problems))
    print("ratios")
    print(
        f"  product / echo p99 at {n} clients: {s['p99_ratio_n']:.2f}"
        f"  (rounds {s['p99_ratio_n_rounds']})"
    )
    print(
        f"  product / echo p50 with 1 client: {s['p50_ratio_1']:.2f}"
        f"  (rounds {s['p50_ratio_1_rounds']})"
    )

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print("targets")
    print(
        f"  server-side p99 at {n} clients <= {SERVER_P99_TARGET_MS:g} ms:"
        f" {s['product_n_server_p99_ms']:.2f} ms  {verdict(s['server_p99_ok'])}"
    )
    print(
        f"  client p99 at {n} clients <= {CLIENT_P99_RATIO_TARGET:g}x echo p99:"
        f" {s['p99_ratio_n']:.2f}x  {verdict(s['client_p99_ratio_ok'])}"
    )
    print(
        f"  1-client p50 <= {SINGLE_P50_TARGET_MS:g} ms: {s['product_1_p50_ms']:.2f} ms"
        f"  {verdict(s['single_p50_ok'])}"
    )
    print(
        f"mass disconnect ({n} sockets at once, every round):"
        f" {'clean' if s['mass_disconnect_clean'] else 'NOT CLEAN'};"
        f" {s['mass_disconnect_tracebacks']} tracebacks and"
        f" {s['mass_disconnect_max_connections_errors']} MaxConnectionsError in the server output,"
        f" {s['mass_disconnect_members_left']} group members left in Redis,"
        f" {s['mass_disconnect_client_errors']} client errors"
    )


# Main --------------------------------------------------------------------------------------------


async def bench(ctx: Context) -> list[dict[str, Result]]:
    await warm_up(ctx)
    rounds: list[dict[str, Result]] = []
    for r in range(ctx.plan.rounds):
        rounds.append(await measure_round(ctx))
        print_round(ctx.plan, r, rounds[-1])
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, shorter (~1 min)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (200)")
    parser.add_argument("--seconds", type=float, help="paced send window (default 20, quick 5)")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="mean seconds between a client's exit intents"
    )
    parser.add_argument(
        "--sequential", type=int, help="exit intents of the 1-client scenario (500, quick 150)"
    )
    parser.add_argument(
        "--workers", type=int, default=WEB_WORKERS, help="uvicorn workers (default: as make run)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time the server's stages and sample PostgreSQL (perturbs the figures a little)",
    )
    parser.add_argument(
        "--no-ack", action="store_true", help="what-if: clients do not ack offers (no ack appends)"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="what-if: an environment variable for uvicorn (repeatable), e.g. a settings overlay",
    )
    parser.add_argument(
        "--app",
        help="what-if: the ASGI application uvicorn runs (default config.asgi:application, or"
        " exit_intent:profiled_application with --profile); modules from --server-env PYTHONPATH",
    )
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        echo_server(args.echo_server)
        return 0

    plan = Plan(
        rounds=args.rounds or (2 if args.quick else 3),
        sequential=args.sequential or (150 if args.quick else 500),
        clients=args.clients,
        seconds=args.seconds or (5.0 if args.quick else 20.0),
        interval=args.interval,
        ack=not args.no_ack,
    )

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    # Even when started in the background (where a shell ignores SIGINT), Ctrl-C / kill -INT stop
    # the run through the same clean-up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    django_setup()
    from django.conf import settings
    from django.db import connection

    store_id, publishable_key = store_for_bench()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    connection.close()
    run = uuid.uuid4().hex[:8]
    commit = git_head()  # the code the servers load

    echo_port, port = free_port(), free_port()
    echo = Subprocess(
        "echo server",
        [sys.executable, str(Path(__file__).resolve()), "--echo-server", str(echo_port)],
        dict(os.environ),
    )
    env = product_env()
    for assignment in args.server_env:
        name, sep, value = assignment.partition("=")
        if not sep:
            parser.error(f"--server-env takes NAME=VALUE, not {assignment!r}")
        env[name] = value
    app = "config.asgi:application"
    profile_dir: Path | None = None
    if args.profile:
        profile_dir = Path(tempfile.mkdtemp(prefix="exit-intent-profile-"))
        app = "exit_intent:profiled_application"
        env[PROFILE_ENV] = str(profile_dir)
        env["PGAPPNAME"] = APP_NAME
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parent), *filter(None, [env.get("PYTHONPATH")])]
        )
    app = args.app or app
    cmd = [
        sys.executable, "-m", "uvicorn", app,
        "--host", "127.0.0.1", "--port", str(port),
        "--lifespan", "off", "--timeout-graceful-shutdown", "5",
        "--workers", str(args.workers),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    server = Subprocess("uvicorn", cmd, env)
    rounds: list[dict[str, Result]] = []
    try:
        echo.start()
        server.start()
        wait_tcp(echo, echo_port)
        wait_http(server, port, probes=2 * args.workers)
        print(
            f"uvicorn, {args.workers} worker(s), port {port}; echo server port {echo_port};"
            f" store #{store_id}; PostgreSQL {pg_version}; {os.cpu_count()} CPUs"
        )
        cpu = CpuMeter({"product": server.pid, "echo": echo.pid})
        cpu.refresh()
        ctx = Context(
            plan=plan,
            run=run,
            echo_url=f"ws://127.0.0.1:{echo_port}/",
            product_url=f"ws://127.0.0.1:{port}{WS_PATH}",
            port=port,
            publishable_key=publishable_key,
            store_id=store_id,
            cpu=cpu,
            server=server,
            rng=random.Random(run),
            database_url=settings.SERVICES.database_url,
            profile_dir=profile_dir,
        )
        import uvloop

        rounds = uvloop.run(bench(ctx))
        check_alive(echo)
        check_alive(server)
        server_log = server.log_text().strip()
    except BaseException:
        for proc in (server, echo):
            output = proc.output().strip()
            if output:
                print(f"--- {proc.name} output ---\n{output}", file=sys.stderr)
        raise
    finally:
        server.close()
        echo.close()
        if profile_dir is not None:
            shutil.rmtree(profile_dir, ignore_errors=True)

    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    results = BASE_DIR / "bench" / "results"
    results.mkdir(exist_ok=True)
    found = log_findings(server_log)
    if server_log:
        log_path = results / f"exit_intent-{stamp}.uvicorn.log"
        log_path.write_text(server_log + "\n")
        print(
            f"--- uvicorn output: {len(server_log.splitlines())} lines, {found['tracebacks']}"
            f" tracebacks (whole output in {log_path.relative_to(BASE_DIR)}) ---"
        )
        for text, count in found["exceptions"].items():
            print(f"  {count} x {text}")
    stored = count_events(store_id)
    summary = summarise(plan, rounds)
    print_summary(plan, summary)
    figures = {
        **summary,
        "server_p99_target_ms": SERVER_P99_TARGET_MS,
        "client_p99_ratio_target": CLIENT_P99_RATIO_TARGET,
        "single_p50_target_ms": SINGLE_P50_TARGET_MS,
        "server_tracebacks": found["tracebacks"],
        "server_redis_timeouts": found["redis_timeouts"],
        "server_max_connections_errors": found["max_connections_errors"],
        "events_stored": sum(stored.values()),
        "events_stored_by_type": stored,
        "rounds": plan.rounds,
        "quick": args.quick,
        "clients": plan.clients,
        "seconds": plan.seconds,
        "interval": plan.interval,
        "sequential": plan.sequential,
        "uvicorn_workers": args.workers,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": pg_version,
        "commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_seconds": round(time.monotonic() - started, 1),
        "profile": args.profile,
        "ack": plan.ack,
        "server_env": args.server_env,
        "app": app,
    }
    if args.profile:
        figures["profile_rounds"] = [
            {name: r[name].profile for name in SCENARIOS if r[name].profile} for r in rounds
        ]
    line = json.dumps(figures, separators=(",", ":"))
    (results / f"exit_intent-{stamp}.json").write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: servers stopped", file=sys.stderr)
        sys.exit(130)
