"""Load benchmark: simulated shoppers through the real HTTP API and websockets against 2 web
processes and 2 Celery workers (with the scheduler and the projectors), for minutes.

    .venv/bin/python bench/load.py [--quick] [--seconds 300] [--warmup 60] [--shoppers 120]
        [--warmup-shoppers 6] [--stores 1] [--keep-db]

What runs, all on loopback, each in a process group of its own (stopped on any exit, Ctrl-C too),
on a PostgreSQL database and a Redis logical database of the run's own (made on the development
servers, embedded under var/ unless DATABASE_URL / REDIS_URL are set, and dropped / flushed at the
end), as ``WEB=2 WORKERS=2 make run`` would run them:
  - web-1, web-2: ``uvicorn config.asgi:application``, one process each on a port of its own (so
    each shopper is known to be on one of them, and each is reported apart), ``DB_POOL_SIZE`` as
    ``make run`` sets it, DEBUG off, LOG_LEVEL=WARNING, no access log;
  - worker-1, worker-2: ``celery -A config worker --concurrency 1``, Django's SMTP backend
    pointed at an SMTP sink on loopback (bench/campaigns.py's: aiosmtpd, one line per message,
    the Message-ID names the step);
  - the scheduler (``manage.py run_scheduler``) and the projectors (``manage.py run_projectors``).

The store has one campaign on a compressed clock (``CAMPAIGNS_CLOCK_SPEED`` = 30, shared by every
process): a cart is abandoned 3 campaign minutes (6 s) after its last activity; tier 1 is on-site
(message "Before you go", at abandonment, no cooldown: it also answers every exit intent), tier 2
an email 5 campaign minutes (10 s) later. No holdout, quiet hours or caps.

Shoppers (one asyncio process, uvloop; each a coroutine), alternately on web-1 and web-2, with
think times of 0.3-1.2 s between events (never 6 s: an active cart is never abandoned):
  - 70% in the browser: ``POST /api/v1/shopper-sessions`` (publishable key, Origin), the
    websocket (``hello`` / ``welcome``), then as events on the socket: 1-3 ``page.viewed`` +
    ``cart.item_added``, ``checkout.contact_captured`` (email consent, 70% of them), and in half
    of them a ``shopper.exit_intent``: timed from just before it is sent until its ``offer``
    frame (the offer is acked; a campaign's pushed offer, with a ``step``, is acked and not
    timed). Each message waits for its ``appended``;
  - 30% from the shop's server: the same events through ``POST /api/v1/events`` (secret key),
    the first view and item in one batch of 2;
  - outcome: 30% place an order (``order.placed`` over the HTTP API: a browser may not post one),
    70% leave (the socket is closed) and the campaign's steps fall due during the run; a tenth of
    those come back 8-12 s later and order (their email step, not yet due, is cancelled).
Concurrency is a number of shopper slots, each starting a new shopper when its last one is done.
All shoppers are on one store unless --stores N spreads them over N stores alike (one merchant's
load is the default: a store's appends take turns on its row in carts_loghead, docs/adr/0003).
Beside the shoppers, in both phases, two probes (one socket on each web process, on the first
store) send an exit intent every 0.5 s (a new cart every 20): the same exit intents at low load
and under load, reported apart (``probe_offer_*``) and counted with the shoppers' ones.

Phases: 8 s of priming, untimed (4 slots: the first requests of each process pay for imports,
pools and the scorer), then a warm-up of --warmup seconds (60; --quick 15) with
--warmup-shoppers slots (6): the low-load exit intent -> offer latency; memory is sampled at its
end ("start"); then --seconds (300; --quick 45) with --shoppers slots (120): the load; memory
"end" is sampled when it ends (and every 30 s in between). Then shoppers stop and the run waits
until every step of the abandoned carts has run (at most 120 s).

Figures (the last line printed: one JSON object, also saved as bench/results/load-<UTC time>.json):
  - events/s accepted by the API and the sockets (each ``appended`` frame, each event of a 201):
    the median of the load phase's 10 s windows and the whole phase's, per web process too;
  - exit intent -> offer p50/p99 at low load and under load, and the ratio of the p99s
    (target <= 2);
  - errors (target 0): any HTTP answer other than 2xx, ``error`` frames, sockets closed by the
    server, a missing ``welcome`` / ``appended`` / offer within 10 s, connection failures; and
    tracebacks in the servers' output (reported apart);
  - steps (target 0 lost, 0 duplicated): every step of the store ends in a final status with
    exactly one step event in the log (``campaign.step_sent`` / ``_skipped`` / ``_cancelled`` /
    ``_suppressed`` / ``_failed``, by ``data.step``); a sent email step has exactly one message at
    the sink, any other step none; every cart the bench abandoned without ordering has both its
    steps. Lost: a step missing, left open, or final without its event, or a sent email step
    without a message. Duplicated: a second step event or message for a step, or a message naming
    no step;
  - each process's RSS (with its children) at start and end, and the growth (target < 10%);
  - the CPU each process used during the load (cores), PostgreSQL's (every postgres process on
    the machine) and the machine's, the load average (other people's work shows there), and the
    mean number of the run database's sessions in each state and wait, per process (sampled
    every 100 ms from pg_stat_activity; PGAPPNAME names the process; a lock wait names the
    statement): what dominates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.campaigns import Sink, postgres_pids  # noqa: E402
from bench.campaigns import child_env as campaigns_child_env  # noqa: E402
from bench.common import (  # noqa: E402
    Subprocess,
    database_create,
    database_drop,
    database_url_with_name,
    databases_drop_stale,
    django_setup,
    free_port,
    git_head,
    load_average,
    log,
    pct,
    process_tree_cpu,
    process_tree_rss,
    redis_client,
    redis_db_claim,
    redis_url_with_db,
    results_print,
)
from config.devrun import WEB_ENV  # noqa: E402 - needs the project on sys.path

DB_PREFIX = "bench_load_"
ORIGIN = "http://bench.local"
SESSIONS_PATH = "/api/v1/shopper-sessions"
EVENTS_PATH = "/api/v1/events"
WS_PATH = "/ws/v1/shopper/"
WEB = 2
WORKERS = 2
CLOCK_SPEED = 30.0  # campaign seconds per real second
INACTIVITY_MINUTES = 3  # campaign time: 6 s real
EMAIL_DELAY_MINUTES = 5  # campaign time after abandonment: 10 s real
ANSWER_TIMEOUT = 10.0  # welcome, appended, offer, HTTP answer
WINDOW = 10.0  # seconds per events/s window
DRAIN_TIMEOUT = 120.0
HTTP_POOL = 32  # keep-alive connections per web process
HTTP_IDLE_REUSE = 2.0  # uvicorn closes idle keep-alive connections after 5 s
P99_RATIO_TARGET = 2.0
RSS_GROWTH_TARGET = 10.0  # %
BROWSER_SHARE = 0.7
CONTACT_SHARE = 0.7
EXIT_SHARE = 0.5
ORDER_SHARE = 0.3
LATE_ORDER_SHARE = 0.1
PROBE_INTERVAL = 0.5  # s between a probe's exit intents
PROBE_PER_CART = 20  # a cart keeps at most 100 acknowledged offers
FINAL = ("sent", "skipped", "suppressed", "cancelled", "failed")
STEP_EVENTS = tuple(f"campaign.step_{s}" for s in FINAL)


def dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"))


def r2(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 2)


# A small keep-alive HTTP/1.1 client on asyncio streams (no aiohttp / httpx in the environment) ----


class HttpError(Exception):
    pass


class Http:
    """Requests to one web process over a pool of keep-alive connections."""

    def __init__(self, port: int, size: int = HTTP_POOL) -> None:
        self.port = port
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(size)

    async def request(
        self, method: str, path: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, Any]:
        data = dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        ).encode() + data
        async with self.slots:
            for attempt in range(2):
                reused, reader, writer = await self._connection()
                try:
                    status, payload, close = await self._exchange(reader, writer, head)
                except (ConnectionError, asyncio.IncompleteReadError, HttpError):
                    writer.close()
                    # A keep-alive connection the server closed meanwhile: once more on a new one
                    # (events carry their id: a repeat is answered as a duplicate).
                    if reused and attempt == 0:
                        continue
                    raise
                except BaseException:
                    writer.close()
                    raise
                if close:
                    writer.close()
                else:
                    self.idle.append((time.monotonic(), reader, writer))
                return status, (json.loads(payload) if payload else None)
        raise AssertionError("unreachable")

    async def _connection(self) -> tuple[bool, asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self.idle:
            used, reader, writer = self.idle.pop()
            if now - used < HTTP_IDLE_REUSE and not reader.at_eof():
                return True, reader, writer
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return False, reader, writer

    @staticmethod
    async def _exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> tuple[int, bytes, bool]:
        writer.write(head)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise HttpError("connection closed before the answer")
        status = int(status_line.split()[1])
        length: int | None = None
        chunked = close = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            payload = b"".join(parts)
        elif length is not None:
            payload = await reader.readexactly(length)
        else:
            payload, close = await reader.read(), True
        return status, payload, close

    def close(self) -> None:
        for _, _, writer in self.idle:
            writer.close()
        self.idle.clear()


# Measurement -------------------------------------------------------------------------------------


@dataclass
class Stats:
    """One phase's observations, from the clients' side."""

    name: str
    accepted: list[tuple[float, int]] = field(default_factory=list)  # (time.time(), web)
    exit_ms: list[tuple[float, int]] = field(default_factory=list)  # (ms, web)
    exit_server_ms: list[float] = field(default_factory=list)
    probe_ms: list[float] = field(default_factory=list)  # the probes' exit intents (also above)
    exit_without_offer: int = 0
    pushed_offers: int = 0  # campaign on-site steps pushed to an open socket
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    shoppers: Counter[str] = field(default_factory=Counter)
    start: float = 0.0
    end: float = 0.0

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{kind}: {detail[:300]}")

    def figures(self) -> dict[str, Any]:
        seconds = max(1e-9, self.end - self.start)
        inside = [t for t, _ in self.accepted if self.start <= t < self.end]
        windows = int(seconds // WINDOW)
        counts = [0] * windows
        for t in inside:
            i = int((t - self.start) // WINDOW)
            if i < windows:
                counts[i] += 1
        exits = [ms for ms, _ in self.exit_ms]
        by_web = {}
        for web in range(WEB):
            mine = [ms for ms, w in self.exit_ms if w == web]
            by_web[f"web-{web + 1}"] = {
                "events": sum(1 for t, w in self.accepted if w == web and t < self.end),
                "exit_offer_p50_ms": r2(pct(mine, 50)),
                "exit_offer_p99_ms": r2(pct(mine, 99)),
                "exit_intents": len(mine),
            }
        return {
            "seconds": round(seconds, 1),
            "events_accepted": len(self.accepted),
            "events_per_s_overall": round(len(inside) / seconds, 1),
            "events_per_s_window_median": round(statistics.median(counts) / WINDOW, 1)
            if counts
            else None,
            "events_per_s_windows": [round(c / WINDOW, 1) for c in counts],
            "exit_intents_timed": len(exits),
            "exit_offer_p50_ms": r2(pct(exits, 50)),
            "exit_offer_p99_ms": r2(pct(exits, 99)),
            "exit_offer_max_ms": r2(max(exits, default=math.nan)),
            "probe_exit_intents": len(self.probe_ms),
            "probe_offer_p50_ms": r2(pct(self.probe_ms, 50)),
            "probe_offer_p99_ms": r2(pct(self.probe_ms, 99)),
            "exit_server_p50_ms": r2(pct(self.exit_server_ms, 50)),
            "exit_server_p99_ms": r2(pct(self.exit_server_ms, 99)),
            "exit_without_offer": self.exit_without_offer,
            "pushed_offers": self.pushed_offers,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "error_samples": self.error_samples,
            "shoppers": dict(self.shoppers),
            "by_web": by_web,
        }


@dataclass
class Ctx:
    run: str
    ports: list[int]
    http: list[Http]
    keys: list[tuple[str, str]]  # each store's (publishable, secret) key
    rng: random.Random
    abandoned: set[str] = field(default_factory=set)  # carts left without an order, still so
    ordered_late: set[str] = field(default_factory=set)
    late_orders: set[asyncio.Task[None]] = field(default_factory=set)
    last_activity: float = 0.0
    shopper_seq: int = 0


# Events ------------------------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def event(kind: str, data: dict[str, Any], cart: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "type": kind,
        "occurred_at": now_iso(),
        "data": data,
    }
    if cart is not None:
        body["cart"] = cart
    return body


def page_viewed(sku: str) -> tuple[str, dict[str, Any]]:
    return "page.viewed", {
        "url": f"{ORIGIN}/p/{sku}",
        "page_type": "product",
        "sku": sku,
        "dwell_ms": 4000,
    }


def item_added(sku: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    return "cart.item_added", {
        "sku": sku,
        "name": f"Bench item {sku}",
        "quantity": rng.randint(1, 2),
        "unit_price": rng.choice((1900, 4500, 8900, 12900)),
        "currency": "EUR",
        "category": "bench",
        "url": f"{ORIGIN}/p/{sku}",
    }


def contact(cart: str) -> tuple[str, dict[str, Any]]:
    return "checkout.contact_captured", {
        "email": f"{cart.replace('.', '-')[:60]}@example.com",
        "consent": {"email": True},
    }


def order(cart: str) -> tuple[str, dict[str, Any]]:
    return "order.placed", {"order_id": f"o-{cart[:100]}", "total": 9900, "currency": "EUR"}


@dataclass(frozen=True)
class Plan:
    """One shopper's path, drawn up front."""

    items: int
    contact: bool
    exit_intent: bool
    order: bool
    late_order: bool

    @staticmethod
    def draw(rng: random.Random, *, browser: bool) -> Plan:
        ordered = rng.random() < ORDER_SHARE
        return Plan(
            items=rng.randint(1, 3),
            contact=rng.random() < CONTACT_SHARE,
            exit_intent=browser and rng.random() < EXIT_SHARE,
            order=ordered,
            late_order=not ordered and rng.random() < LATE_ORDER_SHARE,
        )

    def events(self, cart: str, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        for _ in range(self.items):
            sku = f"SKU-{rng.randint(1, 200)}"
            out += [page_viewed(sku), item_added(sku, rng)]
        if self.contact:
            out.append(contact(cart))
        return out


async def think(rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(0.3, 1.2))


# Shoppers ----------------------------------------------------------------------------------------


async def post_events(
    ctx: Ctx, stats: Stats, web: int, store: int, events: list[dict[str, Any]], *, what: str
) -> bool:
    """POST events with the secret key; counts what was accepted; False on any error."""
    body: Any = events[0] if len(events) == 1 else {"events": events}
    try:
        status, answer = await asyncio.wait_for(
            ctx.http[web].request(
                "POST", EVENTS_PATH, body, {"Authorization": f"Bearer {ctx.keys[store][1]}"}
            ),
            ANSWER_TIMEOUT,
        )
    except TimeoutError:
        stats.error("http_timeout", what)
        return False
    except (OSError, HttpError, asyncio.IncompleteReadError, ValueError) as exc:
        stats.error("http_connection", f"{what}: {type(exc).__name__}: {exc}")
        return False
    if status not in (200, 201):
        stats.error(f"http_{status}", f"{what}: {answer}")
        return False
    t = time.time()
    for e in answer["events"]:
        if not e["duplicate"]:
            stats.accepted.append((t, web))
    ctx.last_activity = time.monotonic()
    return True


class SocketError(Exception):
    pass


async def next_frame(ws: Any, deadline: float, stats: Stats) -> dict[str, Any]:
    """The next frame other than a campaign's pushed offer (acked and counted)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        frame = json.loads(await asyncio.wait_for(ws.recv(), left))
        if frame.get("type") == "offer" and "step" in frame:
            stats.pushed_offers += 1
            await ws.send(dumps({"type": "ack", "offer": frame["id"]}))
            continue
        return dict(frame)


async def socket_event(
    ws: Any,
    stats: Stats,
    web: int,
    kind: str,
    data: dict[str, Any],
    ctx: Ctx,
    *,
    probe: bool = False,
) -> None:
    """Send one event on the socket and wait for its appended (and, for an exit intent, its
    offer first); SocketError on anything else."""
    body = event(kind, data)
    exit_intent = kind == "shopper.exit_intent"
    t = time.perf_counter()
    await ws.send(dumps({"type": "event", "event": body}))
    deadline = time.monotonic() + ANSWER_TIMEOUT
    offered = False
    while True:
        frame = await next_frame(ws, deadline, stats)
        kind_in = frame.get("type")
        if kind_in == "offer" and exit_intent and not offered:
            offered = True
            elapsed = (time.perf_counter() - t) * 1000
            stats.exit_ms.append((elapsed, web))
            if probe:
                stats.probe_ms.append(elapsed)
            if "server_ms" in frame:
                stats.exit_server_ms.append(float(frame["server_ms"]))
            await ws.send(dumps({"type": "ack", "offer": frame["id"]}))
        elif kind_in == "appended" and frame.get("id") == body["id"]:
            if exit_intent and not offered:
                stats.exit_without_offer += 1
            if not frame.get("duplicate"):
                stats.accepted.append((time.time(), web))
            ctx.last_activity = time.monotonic()
            return
        else:
            raise SocketError(f"after {kind}: {frame}")


async def socket_session(
    ctx: Ctx,
    stats: Stats,
    web: int,
    store: int,
    visit: Callable[[Any, str, list[str]], Awaitable[None]],
) -> str | None:
    """A shopper's session and socket on ``web`` (ticket, handshake, hello, welcome), then
    ``visit(ws, cart, step)``; the cart, or None after an error (counted)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
    from websockets.typing import Origin

    try:
        status, session = await asyncio.wait_for(
            ctx.http[web].request(
                "POST", SESSIONS_PATH, {"publishable_key": ctx.keys[store][0]}, {"Origin": ORIGIN}
            ),
            ANSWER_TIMEOUT,
        )
    except TimeoutError:
        stats.error("http_timeout", "session")
        return None
    except (OSError, HttpError, asyncio.IncompleteReadError, ValueError) as exc:
        stats.error("http_connection", f"session: {type(exc).__name__}: {exc}")
        return None
    if status != 201:
        stats.error(f"http_{status}", f"session: {session}")
        return None
    cart = str(session["cart"])
    url = f"ws://127.0.0.1:{ctx.ports[web]}{session['ws_path']}"
    step = ["connect"]  # what the shopper was doing, for the error
    try:
        async with connect(
            url, origin=Origin(ORIGIN), open_timeout=ANSWER_TIMEOUT, close_timeout=5
        ) as ws:
            step[0] = "hello"
            await ws.send(dumps({"type": "hello", "ticket": session["ticket"]}))
            welcome = await next_frame(ws, time.monotonic() + ANSWER_TIMEOUT, stats)
            if welcome.get("type") != "welcome":
                raise SocketError(f"expected welcome: {welcome}")
            await visit(ws, cart, step)
    except TimeoutError:
        stats.error("socket_timeout", f"{step[0]} on {cart}")
        return None
    except ConnectionClosed as exc:
        stats.error("socket_closed", f"{step[0]} on {cart}: {exc}")
        return None
    except SocketError as exc:
        stats.error("socket_frame", str(exc))
        return None
    except (OSError, InvalidHandshake) as exc:
        stats.error("socket_connection", f"{step[0]}: {type(exc).__name__}: {exc}")
        return None
    return cart


async def browser_shopper(ctx: Ctx, stats: Stats, web: int, store: int, rng: random.Random) -> None:
    plan = Plan.draw(rng, browser=True)

    async def visit(ws: Any, cart: str, step: list[str]) -> None:
        for kind, data in plan.events(cart, rng):
            step[0] = kind
            await think(rng)
            await socket_event(ws, stats, web, kind, data, ctx)
        if plan.exit_intent:
            step[0] = "shopper.exit_intent"
            await think(rng)
            await socket_event(ws, stats, web, step[0], {"trigger": "mouse_leave"}, ctx)
        if plan.order:
            await think(rng)

    cart = await socket_session(ctx, stats, web, store, visit)
    if cart is not None:
        await outcome(ctx, stats, web, store, cart, plan, rng)


async def probe(ctx: Ctx, stats: Stats, web: int, store: int, end: float) -> None:
    """The same exit intents in every phase: one every PROBE_INTERVAL s on a socket of ``web``,
    a new cart (one item) every PROBE_PER_CART; the carts are then left (abandoned)."""
    rng = random.Random(f"{ctx.run}-probe-{stats.name}-{web}")

    async def visit(ws: Any, cart: str, step: list[str]) -> None:
        step[0] = "cart.item_added"
        await socket_event(ws, stats, web, *item_added("SKU-PROBE", rng), ctx)
        for _ in range(PROBE_PER_CART):
            await asyncio.sleep(PROBE_INTERVAL * rng.uniform(0.8, 1.2))
            if time.monotonic() >= end:
                return
            step[0] = "shopper.exit_intent"
            await socket_event(ws, stats, web, step[0], {"trigger": "mouse_leave"}, ctx, probe=True)

    while time.monotonic() < end:
        cart = await socket_session(ctx, stats, web, store, visit)
        if cart is None:
            await asyncio.sleep(1)
        else:
            ctx.abandoned.add(cart)


async def server_shopper(ctx: Ctx, stats: Stats, web: int, store: int, rng: random.Random) -> None:
    ctx.shopper_seq += 1
    cart = f"ld-{ctx.run}-{ctx.shopper_seq}"
    plan = Plan.draw(rng, browser=False)
    events = [event(kind, data, cart) for kind, data in plan.events(cart, rng)]
    # The first view and item in one batch, as a shop's server might send them.
    batches = [events[:2], *([e] for e in events[2:])]
    for batch in batches:
        await think(rng)
        if not await post_events(
            ctx, stats, web, store, batch, what=f"{batch[0]['type']} on {cart}"
        ):
            return
    await outcome(ctx, stats, web, store, cart, plan, rng)


async def outcome(
    ctx: Ctx, stats: Stats, web: int, store: int, cart: str, plan: Plan, rng: random.Random
) -> None:
    if plan.order:
        kind, data = order(cart)
        if await post_events(
            ctx, stats, web, store, [event(kind, data, cart)], what=f"order {cart}"
        ):
            stats.shoppers["ordered"] += 1
        return
    stats.shoppers["abandoned"] += 1
    ctx.abandoned.add(cart)
    if plan.late_order:
        task = asyncio.create_task(late_order(ctx, stats, web, store, cart, rng.uniform(8, 12)))
        ctx.late_orders.add(task)
        task.add_done_callback(ctx.late_orders.discard)


async def late_order(ctx: Ctx, stats: Stats, web: int, store: int, cart: str, delay: float) -> None:
    """The shopper comes back after the on-site step and before the email and orders."""
    await asyncio.sleep(delay)
    ctx.abandoned.discard(cart)
    ctx.ordered_late.add(cart)
    kind, data = order(cart)
    if await post_events(
        ctx, stats, web, store, [event(kind, data, cart)], what=f"late order {cart}"
    ):
        stats.shoppers["ordered_late"] += 1


async def run_phase(
    ctx: Ctx, stats: Stats, slots: int, seconds: float, *, with_probes: bool = True
) -> None:
    """``slots`` shoppers at a time for ``seconds``; shoppers under way then finish their visit."""
    stats.start = time.time()
    end = time.monotonic() + seconds
    counter = {"n": 0}

    async def slot(i: int) -> None:
        rng = random.Random(f"{ctx.run}-{stats.name}-{i}")
        await asyncio.sleep(rng.uniform(0, 2.0))  # staggered starts
        while time.monotonic() < end:
            counter["n"] += 1
            web = counter["n"] % WEB
            store = (counter["n"] // WEB) % len(ctx.keys)
            browser = rng.random() < BROWSER_SHARE
            stats.shoppers["browser" if browser else "server"] += 1
            try:
                if browser:
                    await browser_shopper(ctx, stats, web, store, rng)
                else:
                    await server_shopper(ctx, stats, web, store, rng)
            except Exception as exc:  # a bench bug must show, not stop the other shoppers
                stats.error("client_exception", f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1)

    probes = [probe(ctx, stats, web, 0, end) for web in range(WEB)] if with_probes else []
    await asyncio.gather(*(slot(i) for i in range(slots)), *probes)
    stats.end = min(time.time(), stats.start + seconds)


# Processes ---------------------------------------------------------------------------------------


class Program:
    """One of the system's processes and how to know it is ready."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], ready: str) -> None:
        self.name = name
        self.process = Subprocess(name, cmd, env)
        self.ready = ready  # a line in its output, or "" (web: probed over HTTP)

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        code = self.process.exited()
        if self.process.proc is None or code is not None:
            raise RuntimeError(f"{self.name} exited with {code}:\n{self.process.output()}")


def programs_make(env: dict[str, str], ports: list[int]) -> list[Program]:
    py = sys.executable
    web_env = {**env, **dict(WEB_ENV), "RECOVERY_SERVER_TIMING": "1"}
    out = [
        Program(
            f"web-{n}",
            [
                py, "-m", "uvicorn", "config.asgi:application",
                "--host", "127.0.0.1", "--port", str(port),
                "--lifespan", "off", "--timeout-graceful-shutdown", "5",
                "--log-level", "warning", "--no-access-log",
            ],
            {**web_env, "PGAPPNAME": f"web-{n}"},
            "",
        )
        for n, port in enumerate(ports, start=1)
    ]  # fmt: skip
    for n in range(1, WORKERS + 1):
        # INFO for its "ready." line: a line or two per task, and a task carries up to
        # CAMPAIGNS_TASK_STEPS steps.
        cmd = [
            py, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
            "--concurrency", "1", "--without-mingle", "--without-gossip",
            "--hostname", f"worker-{n}@%h",
        ]  # fmt: skip
        out.append(Program(f"worker-{n}", cmd, {**env, "PGAPPNAME": f"worker-{n}"}, " ready."))
    out.append(
        Program(
            "scheduler",
            [py, "manage.py", "run_scheduler"],
            {**env, "PGAPPNAME": "scheduler"},
            "",
        )
    )
    projectors_env = {
        **env,
        "LOG_LEVEL": "INFO",
        "PGAPPNAME": "projectors",
    }  # its one "running" line; a batch is DEBUG
    out.append(
        Program("projectors", [py, "manage.py", "run_projectors"], projectors_env, "running as")
    )
    return out


def programs_wait(
    programs: list[Program], ports: list[int], redis: Any, timeout: float = 90
) -> None:
    import http.client

    from carts.scheduler import HEARTBEAT_KEY

    deadline = time.monotonic() + timeout
    pending = {p.name for p in programs}
    while pending:
        for p in programs:
            if p.name not in pending:
                continue
            p.check()
            if p.name.startswith("web-"):
                port = ports[int(p.name.split("-")[1]) - 1]
                with contextlib.suppress(OSError):
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("OPTIONS", SESSIONS_PATH, headers={"Origin": ORIGIN})
                    if conn.getresponse().status < 300:
                        pending.discard(p.name)
                    conn.close()
            elif p.name == "scheduler":
                if redis.exists(HEARTBEAT_KEY):
                    pending.discard(p.name)
            elif p.ready in p.process.log_text():
                pending.discard(p.name)
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.process.output()}" for p in programs)
            raise RuntimeError(f"not ready after {timeout}s: {sorted(pending)}\n{tails}")
        time.sleep(0.2)


def programs_rss(programs: list[Program]) -> dict[str, float]:
    """MB resident, each process with its children."""
    return {p.name: round(process_tree_rss(p.pid) / 2**20, 1) for p in programs}


def cpu_snapshot(programs: list[Program]) -> dict[str, float]:
    import psutil

    from bench.campaigns import cpu_seconds

    out = {p.name: process_tree_cpu(p.pid) for p in programs}
    out["postgres"] = cpu_seconds(postgres_pids())
    out["client"] = time.process_time()
    machine = psutil.cpu_times()
    out["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    return out


class PgSampler:
    """What the run's PostgreSQL sessions are doing, every 100 ms, in a thread: the mean number
    of sessions of each process (PGAPPNAME) in each state and wait (Little's law: rate x time)."""

    QUERY = """
        SELECT application_name, state, wait_event_type, wait_event, left(query, 48)
        FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND backend_type = 'client backend'
    """

    def __init__(self, url: str) -> None:
        import threading

        self.url = url
        self.samples = 0
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.1):
                for app, state, wait_type, wait, query in conn.execute(self.QUERY).fetchall():
                    if state == "idle":
                        continue
                    what = f"waiting {wait_type}:{wait}" if wait_type else "running"
                    if wait_type == "Lock":
                        what += f" in {' '.join(str(query).split())}"
                    if state != "active":
                        what = str(state)
                    self.counts[f"{app or '?'}: {what}"] += 1
                self.samples += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(timeout=5)
        n = max(1, self.samples)
        return {k: round(v / n, 3) for k, v in self.counts.most_common(15)}


def server_findings(programs: list[Program]) -> dict[str, dict[str, int]]:
    out = {}
    for p in programs:
        text = p.process.log_text()
        out[p.name] = {
            "tracebacks": text.count("Traceback (most recent call last)"),
            "error_lines": sum(1 for line in text.splitlines() if " ERROR" in line),
        }
    return out


# Set-up and the steps' check ---------------------------------------------------------------------


def store_and_campaign() -> tuple[int, str, str]:
    """A fresh store allowing the bench's origin, with the compressed two-tier campaign."""
    from decimal import Decimal

    from campaigns.models import Campaign, CampaignSettings, Tier
    from carts import services
    from carts.models import Store

    now = datetime.now(UTC)
    creds = services.store_create(name=f"bench load {now:%Y-%m-%d %H:%M:%S}")
    store = Store.objects.get(pk=creds.store_id)
    services.store_origins_add(store=store, origins=[ORIGIN])
    CampaignSettings.objects.create(store=store, email_from="Bench shop <shop@example.com>")
    campaign = Campaign.objects.create(
        store=store,
        name="bench load",
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
        channel=Tier.Channel.ONSITE,
        delay_minutes=0,
        min_score=0.0,
        min_cart_value=1,
        offer_kind="message",
        headline="Before you go",
        cooldown_hours=0,
    )
    Tier.objects.create(
        campaign=campaign,
        position=2,
        channel=Tier.Channel.EMAIL,
        delay_minutes=EMAIL_DELAY_MINUTES,
        min_score=0.0,
        subject_template="Your cart at {{ store_name }} is waiting",
    )
    return creds.store_id, creds.publishable_key, creds.secret_key


def steps_open(stores: list[int]) -> int:
    from campaigns.models import Step

    return Step.objects.filter(
        store_id__in=stores, status__in=("pending", "enqueued", "sending")
    ).count()


def steps_drain(stores: list[int], programs: list[Program], quiet_since: float) -> float:
    """Wait until every abandoned cart has been enrolled and each of its steps is due, then until
    no step is open (at most DRAIN_TIMEOUT); the seconds waited."""
    started = time.monotonic()
    due_all = quiet_since + (INACTIVITY_MINUTES + EMAIL_DELAY_MINUTES) * 60 / CLOCK_SPEED + 4
    while time.monotonic() < due_all:
        time.sleep(0.5)
        for p in programs:
            p.check()
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while steps_open(stores) and time.monotonic() < deadline:
        time.sleep(0.5)
        for p in programs:
            p.check()
    return round(time.monotonic() - started, 1)


def steps_check(stores: list[int], abandoned: set[str], sink: Sink) -> dict[str, Any]:
    """Every step once: in the database, in the log, at the sink."""
    from django.db import connection

    from campaigns.models import Step

    steps = list(
        Step.objects.filter(store_id__in=stores).values_list("id", "cart", "channel", "status")
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (data->>'step')::bigint, count(*) FROM carts_cartevent"
            " WHERE store_id = ANY(%s) AND type = ANY(%s) GROUP BY 1",
            [stores, list(STEP_EVENTS)],
        )
        step_events = {int(s): int(n) for s, n in cursor.fetchall() if s is not None}
        cursor.execute(
            "SELECT type, count(*) FROM carts_cartevent WHERE store_id = ANY(%s) GROUP BY 1",
            [stores],
        )
        log_types = {str(t): int(n) for t, n in cursor.fetchall()}
    messages = Counter(m.step_id for m in sink.read_new())
    unknown = messages.pop(None, 0)
    ids = {s[0] for s in steps}
    unknown += sum(n for step, n in messages.items() if step not in ids)
    lost: Counter[str] = Counter()
    duplicated: Counter[str] = Counter()
    by_status: Counter[str] = Counter()
    channels: dict[str, set[str]] = {}
    for step_id, cart, channel, status in steps:
        by_status[f"{channel}:{status}"] += 1
        channels.setdefault(cart, set()).add(channel)
        n_events = step_events.get(step_id, 0)
        n_messages = messages.get(step_id, 0)
        if status not in FINAL:
            lost["left_open"] += 1
        elif n_events == 0:
            lost["final_without_event"] += 1
        if n_events > 1:
            duplicated["events"] += n_events - 1
        if channel == "email" and status == "sent":
            if n_messages == 0:
                lost["sent_without_message"] += 1
            duplicated["messages"] += max(0, n_messages - 1)
        elif n_messages:
            duplicated["message_for_unsent_step"] += n_messages
    for cart in abandoned:
        missing = {"onsite", "email"} - channels.get(cart, set())
        lost["missing_for_abandoned_cart"] += len(missing)
    if unknown:
        duplicated["unknown_messages"] += unknown
    extra_events = sum(n for s, n in step_events.items() if s not in ids)
    if extra_events:
        duplicated["events_for_unknown_steps"] += extra_events
    return {
        "steps": len(steps),
        "steps_by_status": dict(sorted(by_status.items())),
        "step_events": sum(step_events.values()),
        "emails_received": sum(messages.values()) + unknown,
        "carts_abandoned": len(abandoned),
        "lost_steps": sum(lost.values()),
        "lost_by_kind": {k: v for k, v in lost.items() if v},
        "duplicated_steps": sum(duplicated.values()),
        "duplicated_by_kind": {k: v for k, v in duplicated.items() if v},
        "log_events_by_type": dict(sorted(log_types.items())),
    }


# The run -----------------------------------------------------------------------------------------


@dataclass
class Args:
    warmup: float
    seconds: float
    shoppers: int
    warmup_shoppers: int


async def shoppers_run(ctx: Ctx, args: Args, programs: list[Program]) -> dict[str, Any]:
    # Untimed priming: the first requests of each process pay for imports, pools and the scorer.
    log("priming (untimed)")
    await run_phase(ctx, Stats("prime"), 2 * WEB, 8.0, with_probes=False)
    log(f"warm-up: {args.warmup_shoppers} shoppers for {args.warmup:g} s")
    warm = Stats("warm-up")
    await run_phase(ctx, warm, args.warmup_shoppers, args.warmup)
    rss_start = await asyncio.to_thread(programs_rss, programs)
    load_start = await asyncio.to_thread(load_average)
    log(f"load: {args.shoppers} shoppers for {args.seconds:g} s; RSS {rss_start}")
    load = Stats("load")
    cpu_before, t0 = await asyncio.to_thread(cpu_snapshot, programs), time.monotonic()
    rss_series: list[dict[str, Any]] = []

    async def sample() -> None:
        while True:
            await asyncio.sleep(30)
            rss = await asyncio.to_thread(programs_rss, programs)
            rss_series.append({"t": round(time.monotonic() - t0), **rss})
            recent = [t for t, _ in load.accepted if t > time.time() - WINDOW]
            log(f"  {len(recent) / WINDOW:.0f} events/s, {sum(load.errors.values())} errors, {rss}")

    sampler = asyncio.create_task(sample())
    pg = PgSampler(os.environ["DATABASE_URL"])
    pg.start()
    try:
        await run_phase(ctx, load, args.shoppers, args.seconds)
    finally:
        sampler.cancel()
        pg_sessions = pg.stop()
    cpu_after, wall = await asyncio.to_thread(cpu_snapshot, programs), time.monotonic() - t0
    rss_end = await asyncio.to_thread(programs_rss, programs)
    load_end = await asyncio.to_thread(load_average)
    if ctx.late_orders:
        await asyncio.gather(*list(ctx.late_orders))
    for h in ctx.http:
        h.close()
    cpu = {k: round((cpu_after[k] - cpu_before[k]) / wall, 3) for k in cpu_before}
    return {
        "warm": warm,
        "load": load,
        "rss_start": rss_start,
        "rss_end": rss_end,
        "rss_series": rss_series,
        "cpu_cores": cpu,
        "pg_sessions": pg_sessions,
        "load_average_start": load_start,
        "load_average_end": load_end,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 s warm-up, 45 s load (~2 min)")
    parser.add_argument("--seconds", type=float, help="the load phase (300; quick 45)")
    parser.add_argument("--warmup", type=float, help="the low-load phase (60; quick 15)")
    parser.add_argument("--shoppers", type=int, default=120, help="shoppers at a time under load")
    parser.add_argument("--warmup-shoppers", type=int, default=6, help="... during the warm-up")
    parser.add_argument(
        "--stores",
        type=int,
        default=1,
        help="stores the shoppers are spread over (1: one merchant's load; the probes use the"
        " first)",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the run's database")
    a = parser.parse_args()
    args = Args(
        warmup=a.warmup or (15.0 if a.quick else 60.0),
        seconds=a.seconds or (45.0 if a.quick else 300.0),
        shoppers=a.shoppers,
        warmup_shoppers=a.warmup_shoppers,
    )

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    commit = git_head()
    load_at_start = load_average()

    from config import env as config_env

    services = config_env.services()
    db_name = f"{DB_PREFIX}{os.getpid()}_{run}"
    databases_drop_stale(services.database_url, DB_PREFIX)
    redis_db = redis_db_claim(services.redis_url, run, bench="load")
    database_url = database_url_with_name(services.database_url, db_name)
    redis_url = redis_url_with_db(services.redis_url, redis_db)
    log(f"run {run}: database {db_name}, Redis database {redis_db}")
    database_create(services.database_url, db_name)
    clock = {
        "CAMPAIGNS_CLOCK_SPEED": str(CLOCK_SPEED),
        "CAMPAIGNS_CLOCK_EPOCH": f"{time.time():.3f}",
    }
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=redis_url, DJANGO_DEBUG="0", **clock)
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    redis = redis_client(redis_url)
    sink: Sink | None = None
    programs: list[Program] = []
    try:
        log("migrating the run's database")
        django_setup()
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            pg_version = cursor.fetchone()[0]
        made = [store_and_campaign() for _ in range(a.stores)]
        stores = [m[0] for m in made]
        connection.close()
        sink = Sink(dict(os.environ, PYTHONUNBUFFERED="1"))
        sink.start()
        env = campaigns_child_env(
            database_url=database_url, redis_url=redis_url, sink_port=sink.port
        )
        env.update(
            clock,
            # Thousands of shoppers from one address (this machine): the per-address limits are
            # off; each socket's message limit and the store's API limit stay as shipped.
            RATE_LIMIT_SHOPPER_SESSION_IP="",
            RATE_LIMIT_SHOPPER_SESSION_STORE="",
            RATE_LIMIT_OFFERS_IP="",
            RATE_LIMIT_WS_CONNECT_IP="",
        )
        ports: list[int] = []
        while len(ports) < WEB:
            port = free_port()
            if port not in ports:
                ports.append(port)
        programs = programs_make(env, ports)
        for p in programs:
            p.process.start()
        programs_wait(programs, ports, redis)
        log(f"up: web on {ports}, {WORKERS} workers, scheduler, projectors; stores {stores}")

        import uvloop

        ctx = Ctx(
            run=run,
            ports=ports,
            http=[],
            keys=[(m[1], m[2]) for m in made],
            rng=random.Random(run),
        )

        async def go() -> dict[str, Any]:
            ctx.http = [Http(port) for port in ports]
            return await shoppers_run(ctx, args, programs)

        measured = uvloop.run(go())
        for p in programs:
            p.check()
        log("load over: waiting for the abandoned carts' steps")
        drain_seconds = steps_drain(stores, programs, ctx.last_activity)
        steps = steps_check(stores, ctx.abandoned, sink)
        findings = server_findings(programs)
    except BaseException:
        for p in programs:
            output = p.process.output().strip()
            if output:
                print(f"--- {p.name} output ---\n{output}", file=sys.stderr)
        raise
    finally:
        for p in programs:  # all signalled, then waited for
            with contextlib.suppress(Exception):
                if p.process.proc is not None and p.process.proc.poll() is None:
                    p.process.proc.terminate()
        for p in programs:
            p.process.close()
        if sink is not None:
            sink.close()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with contextlib.suppress(Exception):
            redis.flushdb()
            redis.close()
        if a.keep_db:
            log(f"kept database {db_name}")
        else:
            with contextlib.suppress(Exception):
                database_drop(services.database_url, db_name)

    warm, load = measured["warm"].figures(), measured["load"].figures()
    low_p99, high_p99 = warm["exit_offer_p99_ms"], load["exit_offer_p99_ms"]
    ratio = round(high_p99 / low_p99, 2) if low_p99 and high_p99 else None
    growth = {
        name: round(100 * (measured["rss_end"][name] - start) / start, 1) if start else None
        for name, start in measured["rss_start"].items()
    }
    tracebacks = sum(f["tracebacks"] for f in findings.values())
    errors = warm["errors"] + load["errors"]
    worst_growth = max((g for g in growth.values() if g is not None), default=math.nan)
    figures: dict[str, Any] = {
        "bench": "load",
        "events_per_s_window_median": load["events_per_s_window_median"],
        "events_per_s_overall": load["events_per_s_overall"],
        "exit_offer_low_p50_ms": warm["exit_offer_p50_ms"],
        "exit_offer_low_p99_ms": low_p99,
        "exit_offer_load_p50_ms": load["exit_offer_p50_ms"],
        "exit_offer_load_p99_ms": high_p99,
        "exit_offer_p99_ratio": ratio,
        "errors": errors,
        "server_tracebacks": tracebacks,
        "lost_steps": steps["lost_steps"],
        "duplicated_steps": steps["duplicated_steps"],
        "rss_start_mb": measured["rss_start"],
        "rss_end_mb": measured["rss_end"],
        "rss_growth_pct": growth,
        "targets": {
            "errors": 0,
            "lost_steps": 0,
            "duplicated_steps": 0,
            "exit_offer_p99_ratio_max": P99_RATIO_TARGET,
            "rss_growth_pct_max": RSS_GROWTH_TARGET,
        },
        "met": {
            "errors": errors == 0 and tracebacks == 0,
            "steps_exactly_once": steps["lost_steps"] == 0 and steps["duplicated_steps"] == 0,
            "exit_offer_p99_ratio": ratio is not None and ratio <= P99_RATIO_TARGET,
            "rss_growth": worst_growth < RSS_GROWTH_TARGET,
        },
        "warm_up": warm,
        "load": load,
        "steps": steps,
        "drain_seconds": drain_seconds,
        "cpu_cores_during_load": measured["cpu_cores"],
        "pg_mean_sessions_during_load": measured["pg_sessions"],
        "rss_series_mb": measured["rss_series"],
        "server_output": findings,
        "load_average": {
            "before_run": load_at_start,
            "load_start": measured["load_average_start"],
            "load_end": measured["load_average_end"],
        },
        "shoppers": args.shoppers,
        "stores": a.stores,
        "warmup_shoppers": args.warmup_shoppers,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "quick": a.quick,
        "web_processes": WEB,
        "workers": WORKERS,
        "worker_concurrency": 1,
        "clock_speed": CLOCK_SPEED,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": pg_version,
        "commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_seconds": round(time.monotonic() - started, 1),
    }
    print_summary(figures)
    results_print("load", figures)
    return 0


def print_summary(f: dict[str, Any]) -> None:
    w, ld, s = f["warm_up"], f["load"], f["steps"]
    print(
        f"\nload: {f['shoppers']} shoppers for {f['seconds']:g} s on {f['web_processes']} web"
        f" processes and {f['workers']} workers ({f['cpus']} CPUs, load average"
        f" {f['load_average']['load_end']})"
    )
    print(
        f"  events/s accepted: median of 10 s windows {ld['events_per_s_window_median']},"
        f" overall {ld['events_per_s_overall']} ({ld['events_accepted']} events;"
        f" per web process {[v['events'] for v in ld['by_web'].values()]})"
    )
    print(
        f"  exit intent -> offer: low load p50 {w['exit_offer_p50_ms']} p99"
        f" {w['exit_offer_p99_ms']} ms ({w['exit_intents_timed']});"
        f" under load p50 {ld['exit_offer_p50_ms']} p99 {ld['exit_offer_p99_ms']} ms"
        f" ({ld['exit_intents_timed']}); p99 ratio {f['exit_offer_p99_ratio']}"
        f" (target <= {P99_RATIO_TARGET:g})"
    )
    print(
        f"  errors: {f['errors']} {ld['errors_by_kind'] or ''} {w['errors_by_kind'] or ''};"
        f" server tracebacks {f['server_tracebacks']}"
    )
    for sample in (w["error_samples"] + ld["error_samples"])[:5]:
        print(f"    {sample}")
    print(
        f"  steps: {s['steps']} {s['steps_by_status']}; {s['step_events']} step events,"
        f" {s['emails_received']} emails; lost {s['lost_steps']} {s['lost_by_kind']},"
        f" duplicated {s['duplicated_steps']} {s['duplicated_by_kind']}"
    )
    print(f"  RSS MB start {f['rss_start_mb']}\n  RSS MB end   {f['rss_end_mb']}")
    print(f"  growth % {f['rss_growth_pct']} (target < {RSS_GROWTH_TARGET:g})")
    print(f"  CPU during load (cores) {f['cpu_cores_during_load']}")
    print(f"  PostgreSQL sessions (mean, not idle) {f['pg_mean_sessions_during_load']}")
    print(
        f"  probe exit intents: low load p50 {w['probe_offer_p50_ms']} p99"
        f" {w['probe_offer_p99_ms']} ms ({w['probe_exit_intents']}); under load p50"
        f" {ld['probe_offer_p50_ms']} p99 {ld['probe_offer_p99_ms']} ms"
        f" ({ld['probe_exit_intents']}); server_ms p99 {w['exit_server_p99_ms']} ->"
        f" {ld['exit_server_p99_ms']}"
    )
    print(f"  met: {f['met']}")
    sys.stdout.flush()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: processes stopped, database dropped", file=sys.stderr)
        sys.exit(130)
