"""Ingestion benchmark: the events API under uvicorn against raw psycopg inserts, in the same run.

    .venv/bin/python bench/ingest.py [--quick] [--pii] [--workers N] [--rounds N] [--events N]
    .venv/bin/python bench/ingest.py --writers [--processes 8] [--seconds 5] [--rounds 5]

Measures, through real HTTP on loopback against ``uvicorn config.asgi:application`` (2 workers,
DEBUG off, logging at WARNING, a fresh store whose rate limit is out of the way):
  (a) single events, one per POST, from 4 concurrent keep-alive clients (3000 a round);
  (b) batches of 500 events per POST, sequentially (1 client) and from 2 concurrent clients
      (20 batches a round each);
and, as baselines on the same PostgreSQL, into a scratch table shaped like ``carts_cartevent``
(same columns, identity key, unique constraints, indexes and foreign key):
  (c) one INSERT per transaction from 4 concurrent connections;
  (d) ``executemany`` of 500 rows per transaction, sequentially and from 2 connections.

With ``--pii``, also what encrypting shoppers' personal data costs on the append (issue 13: at most
10% slower). Two more servers, alike but for ``CARTS_PII_ENCRYPTION=1`` / ``=0``, each with a fresh
store of its own, take the same personal-data workload: every event names its shopper by id and
email (one address per cart, so every cart is a new shopper and a new key), and every cart has one
``checkout.contact_captured`` (email, phone, consent). Each round posts the same events to both:
  (e) single events, as (a), in two halves; (f) batches of 500 from 1 client, as (b), twice;
each in ABBA order (encrypted first in even rounds, clear first in odd ones), a mode's figure
over both its halves. ``single_pii_encrypted_vs_clear`` and ``batch_pii_encrypted_vs_clear`` are
the medians of the rounds' events/s encrypted / clear (target >= 0.9). At the end the run counts
the addresses each store holds in clear: the encrypting store should hold none
(``pii_encryption_effective``), the clear one all.

With ``--writers`` [--processes 8] [--seconds 5] [--rounds 5], instead of all the above: the log
itself, without HTTP. ``--processes`` processes (multiprocessing, spawn, Django in each) call the
append service ``carts.services.events_append`` with one event per call, each on a store of its
own, for ``--seconds`` a round; in the same round, as many raw psycopg processes do
``INSERT ... RETURNING position`` + ``COMMIT`` per event into ``bench_scratch_writers`` (shaped like
``carts_cartevent``, as above), each under one of the same stores. Which group goes first alternates
by round. Reports events/s and per-call p50/p99 of each and ``writers_ratio`` (the median of the
rounds' append / raw; target >= 0.5), saved as bench/results/ingest-writers-<UTC time>.json.

Rounds are interleaved (a, c, b, d, ..., e, f) because the machine is shared and noisy; the summary
reports medians over rounds, and ratios as the median of each round's paired ratio. The last line
printed is one JSON object with every figure (also saved under bench/results/, which git ignores).
Without DATABASE_URL / REDIS_URL it uses the embedded servers under var/ (see config.embedded).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import random
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import (  # noqa: E402
    ProcessGroup,
    Subprocess,
    django_setup,
    free_port,
    git_head,
    results_print,
    timed_loop,
    timed_summary,
)
from bench.common import log as bench_log  # noqa: E402
from config.devrun import WEB_WORKERS  # noqa: E402 - needs the project on sys.path

SCRATCH_TABLE = "bench_scratch"
EVENTS_PATH = "/api/v1/events"
SINGLE_TARGET = 0.5
BATCH_TARGET = 0.5
PII_TARGET = 0.9  # events/s with personal data encrypted / in clear (issue 13)
PII_PHONE = "+4915112345678"
PII_MODES = ("enc", "clear")  # CARTS_PII_ENCRYPTION=1 / =0


# The scratch table mirrors carts_cartevent (carts/migrations/0011, docs/adr/0003): partitioned by
# recorded_at (here one default partition), the store-led primary key and the two indexes. Only
# the append-only triggers are left out (they fire on UPDATE/DELETE/TRUNCATE, never on INSERT),
# and store positions come from a sequence: a raw writer moves no head (that is the service's).
def scratch_ddl(table: str) -> str:
    return f"""
CREATE SEQUENCE {table}_position_seq;
CREATE SEQUENCE {table}_store_position_seq;
CREATE TABLE {table} (
    store_id bigint NOT NULL,
    store_position bigint NOT NULL DEFAULT nextval('{table}_store_position_seq'),
    position bigint NOT NULL DEFAULT nextval('{table}_position_seq'),
    event_id uuid NOT NULL,
    cart varchar(128) NOT NULL,
    version integer NOT NULL CHECK (version >= 0),
    type varchar(64) NOT NULL,
    schema_version smallint NOT NULL CHECK (schema_version >= 0),
    data jsonb NOT NULL,
    shopper jsonb NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT statement_timestamp(),
    body_hash varchar(64) NOT NULL,
    source varchar(16) NOT NULL DEFAULT 'unknown',
    source_ref varchar(128) NOT NULL DEFAULT '',
    PRIMARY KEY (store_id, store_position, recorded_at)
) PARTITION BY RANGE (recorded_at);
CREATE TABLE {table}_all PARTITION OF {table} DEFAULT;
CREATE INDEX {table}_store_cart_version ON {table} (store_id, cart, version);
CREATE INDEX {table}_position ON {table} (position);
ALTER SEQUENCE {table}_position_seq OWNED BY {table}.position;
ALTER SEQUENCE {table}_store_position_seq OWNED BY {table}.store_position;
"""


def scratch_insert(table: str) -> str:
    return (
        f"INSERT INTO {table} (event_id, store_id, cart, version, type, schema_version, "
        "data, shopper, occurred_at, body_hash, source, source_ref) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'server', 'sk_bench00') RETURNING position"
    )


SCRATCH_DDL = scratch_ddl(SCRATCH_TABLE)
SCRATCH_INSERT = scratch_insert(SCRATCH_TABLE)


# Workload ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Cart:
    token: str
    events: list[dict[str, Any]] = field(default_factory=list)


CATEGORIES = ("shoes", "shirts", "bags", "hats", "jackets", "socks")


def make_carts(rng: random.Random, prefix: str, n_events: int, *, pii: bool = False) -> list[Cart]:
    """Carts of 4-10 events (page views, items added, half end in a checkout), ``n_events`` in all.

    Every event is new (fresh ids and cart tokens), so no request is an idempotent replay. With
    ``pii``, every event's ``shopper`` carries the cart's own email address, and every cart (but a
    last one of a single event) has one ``checkout.contact_captured`` after its first event (just
    before the checkout when it has one): personal data on every event, a new shopper per cart.
    """
    carts: list[Cart] = []
    total = 0
    t0 = datetime.now(UTC) - timedelta(hours=1)
    while total < n_events:
        cart = Cart(f"{prefix}-{len(carts):06d}")
        size = min(rng.randint(4, 10), n_events - total)
        checkout = size >= 4 and rng.random() < 0.5
        contact = -1  # the index of the contact_captured event
        shopper_id = f"shopper-{rng.randint(1, 10**9)}"
        email = f"{shopper_id}@example.com"
        if pii and size >= 2:
            contact = size - 2 if checkout else rng.randint(1, size - 1)
        at = t0 + timedelta(seconds=rng.randint(0, 3000))
        for i in range(size):
            at += timedelta(seconds=rng.randint(2, 90))
            data: dict[str, Any]
            if i == contact:
                kind = "checkout.contact_captured"
                data = {"email": email, "phone": PII_PHONE, "consent": {"email": True}}
            elif checkout and i == size - 1:
                kind, data = "checkout.started", {}
            elif i == 0 or rng.random() < 0.5:
                sku = f"SKU-{rng.randint(1, 500)}"
                page = rng.choice(("product", "product", "category", "home", "search"))
                data = {"url": f"https://shop.example/p/{sku.lower()}", "page_type": page}
                if page == "product":
                    data["sku"] = sku
                    data["dwell_ms"] = rng.randint(500, 60_000)
                kind = "page.viewed"
            else:
                sku = f"SKU-{rng.randint(1, 500)}"
                kind, data = (
                    "cart.item_added",
                    {
                        "sku": sku,
                        "name": f"Product {sku}",
                        "quantity": rng.randint(1, 3),
                        "unit_price": rng.randint(500, 20_000),
                        "currency": "EUR",
                        "category": rng.choice(CATEGORIES),
                        "url": f"https://shop.example/p/{sku.lower()}",
                    },
                )
            event: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "cart": cart.token,
                "type": kind,
                "occurred_at": at.isoformat(),
                "data": data,
            }
            if i == 0:
                event["shopper"] = {
                    "id": shopper_id,
                    "locale": "en-GB",
                    "timezone": "Europe/London",
                }
            if pii:
                event["shopper"] = {**event.get("shopper", {"id": shopper_id}), "email": email}
            cart.events.append(event)
        carts.append(cart)
        total += size
    return carts


def interleaved(carts: list[Cart]) -> list[dict[str, Any]]:
    """All events of these carts in occurrence order, as a platform would send them."""
    events = [e for cart in carts for e in cart.events]
    events.sort(key=lambda e: e["occurred_at"])
    return events


def split_for_clients(carts: list[Cart], clients: int) -> list[list[dict[str, Any]]]:
    """Each cart goes to one client (a shopper's events arrive in order), round-robin."""
    shares: list[list[Cart]] = [[] for _ in range(clients)]
    for i, cart in enumerate(carts):
        shares[i % clients].append(cart)
    return [interleaved(share) for share in shares]


def make_batches(
    rng: random.Random, prefix: str, n_batches: int, size: int, *, pii: bool = False
) -> list[list[dict]]:
    """``n_batches`` of exactly ``size`` events: ~70 carts each, their events interleaved.

    Interleaving every cart of the run would give each batch ~500 carts of one event; a real
    sender flushes a window of recent activity, so a cart's events stay in one or two batches.
    """
    carts = make_carts(rng, prefix, n_batches * size, pii=pii)
    flat: list[dict] = []
    for i in range(0, len(carts), 70):
        flat += interleaved(carts[i : i + 70])
    return [flat[i : i + size] for i in range(0, len(flat), size)]


def raw_rows(events: list[dict[str, Any]], store_id: int) -> list[tuple]:
    """The rows the append service would write for these events (versions, hashes precomputed)."""
    from psycopg.types.json import Jsonb

    from carts import event_types, services

    versions: dict[str, int] = {}
    rows = []
    for e in events:
        version = versions.get(e["cart"], 0) + 1
        versions[e["cart"]] = version
        schema_version = event_types.REGISTRY[e["type"]].version
        occurred_at = datetime.fromisoformat(e["occurred_at"])
        shopper = e.get("shopper")
        body_hash = services.NewEvent(
            event_id=uuid.UUID(e["id"]),
            cart=e["cart"],
            type=e["type"],
            schema_version=schema_version,
            occurred_at=occurred_at,
            data=e["data"],
            shopper=shopper,
        ).body_hash()
        rows.append(
            (
                uuid.UUID(e["id"]),
                store_id,
                e["cart"],
                version,
                e["type"],
                schema_version,
                Jsonb(e["data"]),
                Jsonb(shopper) if shopper is not None else None,
                occurred_at,
                body_hash,
            )
        )
    return rows


# Measurement -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    events: int
    seconds: float
    latencies: list[float]  # seconds, one per request or transaction

    @property
    def eps(self) -> float:
        return self.events / self.seconds

    def pct(self, p: float) -> float:
        """The p-th percentile latency in ms (nearest rank)."""
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000


STOP = threading.Event()


def run_clients(clients: list[Callable[[threading.Barrier], list[float]]], events: int) -> Result:
    """Run each client in a thread; time from the common start to the last one finishing."""
    barrier = threading.Barrier(len(clients) + 1)
    latencies: list[list[float]] = [[] for _ in clients]
    errors: list[BaseException] = []

    def body(i: int, client: Callable[[threading.Barrier], list[float]]) -> None:
        try:
            latencies[i] = client(barrier)
        except BaseException as exc:  # re-raised by the main thread
            errors.append(exc)
            STOP.set()
            barrier.abort()

    threads = [
        threading.Thread(target=body, args=(i, c), daemon=True) for i, c in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return Result(events, seconds, [x for lat in latencies for x in lat])


class ApiError(RuntimeError):
    pass


def http_client(
    port: int, secret_key: str, bodies: list[bytes], *, keep_alive: bool = True
) -> Callable[[threading.Barrier], list[float]]:
    """POST each body in turn on one connection (or, without keep-alive, one per request)."""

    def client(barrier: threading.Barrier) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.connect()
        headers = {
            "Authorization": f"Bearer {secret_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        latencies = []
        try:
            barrier.wait()
            for body in bodies:
                if STOP.is_set():
                    break
                t = time.perf_counter()
                conn.request("POST", EVENTS_PATH, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                latencies.append(time.perf_counter() - t)
                if response.status != 201:
                    raise ApiError(f"POST {EVENTS_PATH}: {response.status} {payload[:300]!r}")
                if not keep_alive:
                    conn.close()  # reopened by the next request
        finally:
            conn.close()
        return latencies

    return client


def raw_single_client(url: str, rows: list[tuple]) -> Callable[[threading.Barrier], list[float]]:
    import psycopg

    def client(barrier: threading.Barrier) -> list[float]:
        latencies = []
        with psycopg.connect(url) as conn:
            barrier.wait()
            for row in rows:
                if STOP.is_set():
                    break
                t = time.perf_counter()
                with conn.cursor() as cur:
                    cur.execute(SCRATCH_INSERT, row)
                    cur.fetchone()
                conn.commit()
                latencies.append(time.perf_counter() - t)
        return latencies

    return client


def raw_batch_client(
    url: str, batches: list[list[tuple]]
) -> Callable[[threading.Barrier], list[float]]:
    import psycopg

    def client(barrier: threading.Barrier) -> list[float]:
        latencies = []
        with psycopg.connect(url) as conn:
            barrier.wait()
            for rows in batches:
                if STOP.is_set():
                    break
                t = time.perf_counter()
                with conn.cursor() as cur:
                    cur.executemany(SCRATCH_INSERT, rows, returning=True)
                    while True:  # the positions, as the API returns them
                        cur.fetchone()
                        if not cur.nextset():
                            break
                conn.commit()
                latencies.append(time.perf_counter() - t)
        return latencies

    return client


def encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def deal(items: list, clients: int) -> list[list]:
    """Split a sequence of requests between clients, round-robin."""
    return [items[i::clients] for i in range(clients)]


# The server --------------------------------------------------------------------------------------


class Server:
    """``uvicorn config.asgi:application``, ready once every worker has answered a probe."""

    def __init__(
        self, *, workers: int, env: dict[str, str], key: str, app: str = "config.asgi:application"
    ) -> None:
        self.workers = workers
        self.probe_headers = {"Authorization": f"Bearer {key}"}
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "uvicorn", app,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(workers),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        self.process = Subprocess("uvicorn", cmd, env)

    def start(self, timeout: float = 60) -> None:
        self.process.start()
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < 2 * self.workers:
            code = self.process.exited()
            if code is not None:
                raise RuntimeError(f"uvicorn exited with {code}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn not ready after {timeout}s:\n{self.output()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("OPTIONS", EVENTS_PATH, headers=self.probe_headers)
                status = conn.getresponse().status
                conn.close()
                if status != 200:
                    raise RuntimeError(f"OPTIONS {EVENTS_PATH}: {status}\n{self.output()}")
                ready += 1
            except OSError:
                time.sleep(0.1)

    def output(self) -> str:
        return self.process.output()

    def close(self) -> None:
        self.process.close()


# Setup -------------------------------------------------------------------------------------------


def store_create(*, name: str) -> Any:
    """``store_create`` wherever it lives (carts.stores once carts/services.py is split)."""
    import importlib

    for module in ("carts.stores", "carts.services"):
        try:
            create = importlib.import_module(module).store_create
        except (ImportError, AttributeError):
            continue
        return create(name=name)
    raise ImportError("store_create is neither in carts.stores nor in carts.services")


def store_for_bench() -> tuple[int, str]:
    from carts.models import Store

    creds = store_create(name=f"bench {datetime.now(UTC):%Y-%m-%d %H:%M:%S}")
    Store.objects.filter(pk=creds.store_id).update(rate_limit_per_minute=2_000_000_000)
    return creds.store_id, creds.secret_key


def _shape(conn: Any, table: str) -> tuple:
    """Columns, indexes and constraint kinds of a table, independent of its name."""
    columns = conn.execute(
        "SELECT column_name, data_type, character_maximum_length, is_nullable, is_identity"
        " FROM information_schema.columns WHERE table_name = %s ORDER BY column_name",
        [table],
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.indisunique, i.indisprimary,"
        " array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(n, o)"
        "       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)"
        " FROM pg_index i WHERE i.indrelid = %s::regclass",
        [table],
    ).fetchall()
    constraints = conn.execute(
        "SELECT contype, condeferrable, condeferred, count(*) FROM pg_constraint"
        " WHERE conrelid = %s::regclass GROUP BY 1, 2, 3",
        [table],
    ).fetchall()
    return columns, sorted(indexes), sorted(constraints)


@contextlib.contextmanager
def scratch_table(url: str, table: str = SCRATCH_TABLE, *, strict: bool = True) -> Iterator[bool]:
    """The scratch table, dropped on the way out; yields whether it mirrors carts_cartevent (if
    not, ``strict`` raises, otherwise the caller reports it)."""
    import psycopg

    def drop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f"DROP TABLE IF EXISTS {table}")

    drop()  # left over by a run that was killed
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(scratch_ddl(table))
            mirrors = _shape(conn, table) == _shape(conn, "carts_cartevent")
            if strict and not mirrors:
                raise RuntimeError(f"{table} no longer mirrors carts_cartevent: update it")
        yield mirrors
    finally:
        drop()


def server_env(*, debug: bool, pii_encryption: bool | None = None) -> dict[str, str]:
    from django.conf import settings

    from config.devrun import WEB_ENV

    env = dict(os.environ)
    env.update(WEB_ENV)  # the web server's settings in `make run` (connection pool)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        # The URLs of the servers this process already holds a lease on: the server processes
        # need no lease of their own, and a run against external servers works the same way.
        DATABASE_URL=settings.SERVICES.database_url,
        REDIS_URL=settings.SERVICES.redis_url,
        DJANGO_DEBUG="1" if debug else "0",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    if pii_encryption is not None:  # otherwise as the environment says (default: on)
        env["CARTS_PII_ENCRYPTION"] = "1" if pii_encryption else "0"
    return env


# Writers mode: the log itself, without HTTP ------------------------------------------------------

WRITERS_TABLE = "bench_scratch_writers"  # not bench_scratch: an HTTP run may be going on beside
WRITERS_TARGET = 0.5  # append service / raw INSERT + COMMIT, 8 processes each (issue 16)
WRITERS_SOURCE_REF = "bench-writers"


def _writer_django(env: dict[str, str]) -> None:
    """Django in a writer process, on the parent's servers (no lease of its own, no migrate)."""
    os.environ.update(env)
    import django

    django.setup()


def _writer_events(rng: random.Random, prefix: str, n: int) -> list[dict[str, Any]]:
    """``n`` new events over fresh carts of 4-10 events, ~50 carts interleaved at a time (each
    cart's events in order), as one writer sends them, with payloads as the edge validates them."""
    from carts import event_types

    carts = make_carts(rng, prefix, n)
    events: list[dict[str, Any]] = []
    for i in range(0, len(carts), 50):
        events += interleaved(carts[i : i + 50])
    for e in events:
        e["schema_version"], e["data"] = event_types.validate(e["type"], None, e["data"])
    return events


class _Writer:
    """One writer process: its own store, events made before each round, one event per call."""

    def __init__(self, env: dict[str, str], store_id: int, prefix: str) -> None:
        _writer_django(env)
        self.store_id = store_id
        self.prefix = prefix
        self.rng = random.Random(prefix)
        self.chunks = 0
        self.pending: list[Any] = []
        self.done = 0  # every event written, warm-up included
        self.last = 0  # events written in the last run

    def prepare(self, minimum: int) -> int:
        """Events for the next run: at least ``minimum``, and twice the last run's."""
        want = max(minimum, 2 * self.last)
        if len(self.pending) < want:
            self.chunks += 1
            fresh = _writer_events(
                self.rng, f"{self.prefix}-{self.chunks}", want - len(self.pending)
            )
            self.pending = self._convert(fresh) + self.pending
        return len(self.pending)

    def run(self, start: float, end: float) -> dict[str, Any]:
        result = timed_loop(self._step, start, end)
        self.last = result["count"]
        self.done += result["count"]
        return result

    def written(self) -> int:
        return self.done

    def _next(self) -> Any:
        if not self.pending:  # ran out: more, inside the timed window (prepare makes this rare)
            self.prepare(1000)
        return self.pending.pop()

    def _convert(self, events: list[dict[str, Any]]) -> list[Any]:
        raise NotImplementedError

    def _step(self) -> None:
        raise NotImplementedError


class AppendWriter(_Writer):
    """``carts.services.events_append``, one event per call: the product's append as a caller in
    the same process sees it (its own transaction, the cart-state fold, scoring, the hint)."""

    def __init__(self, env: dict[str, str], store_id: int, prefix: str) -> None:
        super().__init__(env, store_id, prefix)
        from carts.services import NewEvent, events_append
        from carts.sources import Source

        self.new_event = NewEvent
        self.append = events_append
        self.source = Source.server(WRITERS_SOURCE_REF)

    def _convert(self, events: list[dict[str, Any]]) -> list[Any]:
        out = [
            self.new_event(
                event_id=uuid.UUID(e["id"]),
                cart=e["cart"],
                type=e["type"],
                schema_version=e["schema_version"],
                occurred_at=datetime.fromisoformat(e["occurred_at"]),
                data=e["data"],
                shopper=e.get("shopper"),
            )
            for e in events
        ]
        return out[::-1]  # popped from the end

    def _step(self) -> None:
        results = self.append(store_id=self.store_id, events=[self._next()], source=self.source)
        if len(results) != 1 or results[0].duplicate:
            raise RuntimeError(f"append: {results}")

    def close(self) -> None:
        from django.db import connection

        connection.close()


class RawWriter(_Writer):
    """``INSERT ... RETURNING position`` and ``COMMIT`` per event (psycopg 3, defaults) into the
    scratch table shaped like the log: the same rows the service would write."""

    def __init__(self, env: dict[str, str], store_id: int, prefix: str) -> None:
        super().__init__(env, store_id, prefix)
        import psycopg

        self.conn = psycopg.connect(env["DATABASE_URL"])
        self.insert = scratch_insert(WRITERS_TABLE)

    def _convert(self, events: list[dict[str, Any]]) -> list[Any]:
        return raw_rows(events, self.store_id)[::-1]

    def _step(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(self.insert, self._next())
            cur.fetchone()
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


def writers_env() -> dict[str, str]:
    from django.conf import settings

    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        # The URLs of the servers this process holds a lease on (or DATABASE_URL / REDIS_URL).
        "DATABASE_URL": settings.SERVICES.database_url,
        "REDIS_URL": settings.SERVICES.redis_url,
        "LOG_LEVEL": "WARNING",
    }


def writers_round(group: ProcessGroup, seconds: float, minimum: int) -> dict[str, float]:
    group.call("prepare", minimum=minimum)
    start = time.time() + 0.3  # every process is waiting on its pipe by then
    return timed_summary(group.call("run", start=start, end=start + seconds), start)


def writers_main(args: argparse.Namespace, started: float) -> int:
    """``--writers``: N processes calling the append service, one event per call, each on a store
    of its own, against N raw writers doing INSERT + COMMIT per event, alternately, in rounds."""
    import psycopg

    django_setup()
    from django.conf import settings
    from django.db import connection

    url = settings.SERVICES.database_url
    n = args.processes
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = args.seconds
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
    stores = [store_create(name=f"bench writers {stamp} #{i}").store_id for i in range(n)]
    connection.close()
    run = uuid.uuid4().hex[:8]
    env = writers_env()
    groups: dict[str, ProcessGroup] = {}
    per_round: list[dict[str, dict[str, float]]] = []
    try:
        with scratch_table(url, WRITERS_TABLE, strict=False) as mirrors:
            if not mirrors:
                bench_log(f"WARNING: {WRITERS_TABLE} no longer mirrors carts_cartevent (see JSON)")
            bench_log(f"starting {n} append and {n} raw writer processes (spawn, Django in each)")
            groups["append"] = ProcessGroup(
                AppendWriter, [(env, s, f"{run}-a{i}") for i, s in enumerate(stores)]
            )
            groups["raw"] = ProcessGroup(
                RawWriter, [(env, s, f"{run}-r{i}") for i, s in enumerate(stores)]
            )
            print(
                f"writers: {n} append + {n} raw processes, stores #{stores[0]}..#{stores[-1]},"
                f" {rounds} rounds of {seconds:g} s each; PostgreSQL {pg_version};"
                f" {os.cpu_count()} CPUs"
            )
            for name in ("append", "raw"):  # imports, connections, caches: not counted
                writers_round(groups[name], 1.5, 200)
            for r in range(rounds):
                order = ("append", "raw") if r % 2 == 0 else ("raw", "append")
                results = {name: writers_round(groups[name], seconds, 1500) for name in order}
                per_round.append(results)
                print(f"round {r + 1}/{rounds} ({order[0]} first)")
                for name in ("append", "raw"):
                    x = results[name]
                    print(
                        f"  {name:<7} {x['eps']:>9.0f} events/s   p50 {x['p50_ms']:7.2f} ms"
                        f"   p99 {x['p99_ms']:7.2f} ms   ({x['events']} events, {x['seconds']} s)"
                    )
                print(f"  append / raw {results['append']['eps'] / results['raw']['eps']:.3f}")
                sys.stdout.flush()
            written = {name: sum(g.call("written")) for name, g in groups.items()}
            with psycopg.connect(url) as conn:
                stored_append = conn.execute(
                    "SELECT count(*) FROM carts_cartevent WHERE store_id = ANY(%s)", [stores]
                ).fetchone()
                stored_raw = conn.execute(f"SELECT count(*) FROM {WRITERS_TABLE}").fetchone()
            assert stored_append is not None and stored_raw is not None
            if (stored_append[0], stored_raw[0]) != (written["append"], written["raw"]):
                raise RuntimeError(
                    f"rows stored: append {stored_append[0]} (written {written['append']}),"
                    f" raw {stored_raw[0]} (written {written['raw']})"
                )
    finally:
        for g in groups.values():
            g.close()

    ratios = [x["append"]["eps"] / x["raw"]["eps"] for x in per_round]
    figures: dict[str, Any] = {}
    for name in ("append", "raw"):
        for key in ("eps", "p50_ms", "p99_ms"):
            values = [x[name][key] for x in per_round]
            figures[f"writers_{name}_{key}"] = round(statistics.median(values), 2)
        figures[f"writers_{name}_eps_rounds"] = [x[name]["eps"] for x in per_round]
    figures["writers_ratio"] = round(statistics.median(ratios), 3)
    figures["writers_ratio_rounds"] = [round(x, 3) for x in ratios]
    print(f"\nmedians over {rounds} rounds")
    for name in ("append", "raw"):
        print(
            f"  {name:<7} {figures[f'writers_{name}_eps']:>9.0f} events/s"
            f"   p50 {figures[f'writers_{name}_p50_ms']:7.2f} ms"
            f"   p99 {figures[f'writers_{name}_p99_ms']:7.2f} ms"
        )
    print(
        f"  append service / raw INSERT+COMMIT ({n} processes each):"
        f" {figures['writers_ratio']:.3f}  (target >= {WRITERS_TARGET})"
    )
    figures.update(
        {
            "writers_target": WRITERS_TARGET,
            "writers_ok": figures["writers_ratio"] >= WRITERS_TARGET,
            "mode": "writers",
            "processes": n,
            "rounds": rounds,
            "round_seconds": seconds,
            "events_per_append": 1,
            "stores": n,
            "raw_table_mirrors_log": mirrors,
            "events_appended": written["append"],
            "events_raw": written["raw"],
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgres": pg_version,
            "database": "external" if os.environ.get("DATABASE_URL") else "embedded",
            "commit": git_head(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    results_print("ingest-writers", figures)
    return 0


# Main --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    rounds: int
    single_events: int
    clients: int
    batches: int
    batch_size: int
    batch_clients: tuple[int, ...]
    pii: bool = False


def scenario_names(plan: Plan) -> list[str]:
    names = ["single_api", "single_raw"]
    for n in plan.batch_clients:
        tag = "batch" if n == 1 else f"batch{n}"
        names += [f"{tag}_api", f"{tag}_raw"]
    if plan.pii:
        names += [f"{tag}_pii_{mode}" for tag in ("single", "batch") for mode in PII_MODES]
    return names


def measure_round(
    plan: Plan, rng: random.Random, run: str, r: int, ctx: dict[str, Any]
) -> dict[str, Result]:
    port, key, store_id, url = ctx["port"], ctx["key"], ctx["store_id"], ctx["url"]
    out: dict[str, Result] = {}

    # (a) single events over HTTP, then (c) the same workload as raw single-row transactions.
    carts = make_carts(rng, f"{run}-r{r}-s", plan.single_events)
    shares = split_for_clients(carts, plan.clients)
    out["single_api"] = run_clients(
        [http_client(port, key, [encode(e) for e in share]) for share in shares],
        plan.single_events,
    )
    carts = make_carts(rng, f"{run}-r{r}-S", plan.single_events)
    shares = split_for_clients(carts, plan.clients)
    out["single_raw"] = run_clients(
        [raw_single_client(url, raw_rows(share, store_id)) for share in shares],
        plan.single_events,
    )

    # (b) batches over HTTP, then (d) the same as raw executemany, for each client count.
    total = plan.batches * plan.batch_size
    for n in plan.batch_clients:
        tag = "batch" if n == 1 else f"batch{n}"
        batches = make_batches(rng, f"{run}-r{r}-{tag}", plan.batches, plan.batch_size)
        bodies = [encode({"events": b}) for b in batches]
        # A connection per batch: a kept one stays with the worker that accepted it, so with two
        # workers both clients could spend a whole round on one of them.
        out[f"{tag}_api"] = run_clients(
            [http_client(port, key, share, keep_alive=False) for share in deal(bodies, n)], total
        )
        batches = make_batches(rng, f"{run}-r{r}-{tag.upper()}", plan.batches, plan.batch_size)
        flat = raw_rows([e for batch in batches for e in batch], store_id)  # versions span batches
        rows = [flat[i : i + plan.batch_size] for i in range(0, len(flat), plan.batch_size)]
        out[f"{tag}_raw"] = run_clients(
            [raw_batch_client(url, share) for share in deal(rows, n)], total
        )
    return out


def pii_events(plan: Plan) -> int:
    """The events (e) and (f) post to each server in a round."""
    return 2 * (plan.single_events // 2) + 2 * plan.batches * plan.batch_size


def measure_pii_round(
    plan: Plan, rng: random.Random, run: str, r: int, pii_ctx: dict[str, dict[str, Any]]
) -> dict[str, Result]:
    """(e) and (f): the same personal-data events to the encrypting and the clear server (each its
    own store, so the same ids and cart tokens are new to both), in ABBA order (which comes first
    alternates by round): two halves, the first to A then B, the second to B then A, so drift
    within the round hits both alike. Each mode's figure is both its halves together."""
    first, second = PII_MODES if r % 2 == 0 else PII_MODES[::-1]
    halves: dict[str, list[Result]] = {}

    def post(name: str, mode: str, bodies: list[list[bytes]], events: int, keep: bool) -> None:
        port, key = pii_ctx[mode]["port"], pii_ctx[mode]["key"]
        clients = [http_client(port, key, share, keep_alive=keep) for share in bodies]
        halves.setdefault(f"{name}_{mode}", []).append(run_clients(clients, events))

    for half in range(2):
        n = plan.single_events // 2  # (e): the round's single events, in two halves
        carts = make_carts(rng, f"{run}-r{r}-p{half}", n, pii=True)
        shares = [[encode(e) for e in share] for share in split_for_clients(carts, plan.clients)]
        for mode in (first, second) if half == 0 else (second, first):
            post("single_pii", mode, shares, n, True)
    for half in range(2):
        n = plan.batches * plan.batch_size  # (f): twice the batches of (b), they are short
        batches = make_batches(rng, f"{run}-r{r}-pb{half}", plan.batches, plan.batch_size, pii=True)
        bodies = [encode({"events": b}) for b in batches]
        for mode in (first, second) if half == 0 else (second, first):
            post("batch_pii", mode, [bodies], n, False)
    return {
        name: Result(
            sum(x.events for x in results),
            sum(x.seconds for x in results),
            [lat for x in results for lat in x.latencies],
        )
        for name, results in halves.items()
    }


def warm_up(
    plan: Plan, rng: random.Random, run: str, ctx: dict[str, Any], *, pii: bool = False
) -> int:
    """First requests pay for imports, URL resolution and connections: keep them out of figures."""
    carts = make_carts(rng, f"{run}-warm", 50 * plan.clients, pii=pii)
    shares = split_for_clients(carts, plan.clients)
    run_clients([http_client(ctx["port"], ctx["key"], [encode(e) for e in s]) for s in shares], 0)
    batches = make_batches(
        rng, f"{run}-warmb", 2 * max(plan.batch_clients), plan.batch_size, pii=pii
    )
    bodies = [encode({"events": b}) for b in batches]
    n = max(plan.batch_clients)
    run_clients(
        [http_client(ctx["port"], ctx["key"], s, keep_alive=False) for s in deal(bodies, n)], 0
    )
    return 50 * plan.clients + len(batches) * plan.batch_size


def summarise(plan: Plan, rounds: list[dict[str, Result]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in scenario_names(plan):
        summary[f"{name}_eps"] = round(statistics.median(r[name].eps for r in rounds), 1)
        summary[f"{name}_p50_ms"] = round(statistics.median(r[name].pct(50) for r in rounds), 2)
        summary[f"{name}_p99_ms"] = round(statistics.median(r[name].pct(99) for r in rounds), 2)
    tags = ["single"] + ["batch" if n == 1 else f"batch{n}" for n in plan.batch_clients]
    for tag in tags:
        ratios = [r[f"{tag}_api"].eps / r[f"{tag}_raw"].eps for r in rounds]
        summary[f"{tag}_ratio"] = round(statistics.median(ratios), 3)
        summary[f"{tag}_ratio_rounds"] = [round(x, 3) for x in ratios]
    if plan.pii:
        for tag in ("single", "batch"):
            ratios = [r[f"{tag}_pii_enc"].eps / r[f"{tag}_pii_clear"].eps for r in rounds]
            summary[f"{tag}_pii_encrypted_vs_clear"] = round(statistics.median(ratios), 3)
            summary[f"{tag}_pii_encrypted_vs_clear_rounds"] = [round(x, 3) for x in ratios]
    return summary


def print_round(plan: Plan, r: int, results: dict[str, Result]) -> None:
    print(f"round {r + 1}/{plan.rounds}")
    for name in scenario_names(plan):
        res = results[name]
        print(
            f"  {name:<16} {res.eps:>9.0f} events/s   p50 {res.pct(50):7.2f} ms"
            f"   p99 {res.pct(99):7.2f} ms   ({len(res.latencies)} requests, {res.seconds:.2f} s)"
        )
    sys.stdout.flush()


def print_summary(plan: Plan, summary: dict[str, Any]) -> None:
    print(f"\nmedians over {plan.rounds} rounds")
    print(f"  {'':<16} {'events/s':>9}   {'p50 ms':>7}   {'p99 ms':>7}")
    for name in scenario_names(plan):
        print(
            f"  {name:<16} {summary[f'{name}_eps']:>9.0f}   {summary[f'{name}_p50_ms']:>7.2f}"
            f"   {summary[f'{name}_p99_ms']:>7.2f}"
        )
    print(
        f"  single API / raw INSERT ({plan.clients} clients): {summary['single_ratio']:.3f}"
        f"  (target >= {SINGLE_TARGET})"
    )
    for n in plan.batch_clients:
        tag = "batch" if n == 1 else f"batch{n}"
        print(
            f"  batch API / raw executemany ({n} client{'s' if n > 1 else ''}):"
            f" {summary[f'{tag}_ratio']:.3f}  (target >= {BATCH_TARGET})"
        )
    if plan.pii:
        loads = (("single", f"single, {plan.clients} clients"), ("batch", "batch, 1 client"))
        for tag, what in loads:
            print(
                f"  personal data encrypted / in clear ({what}):"
                f" {summary[f'{tag}_pii_encrypted_vs_clear']:.3f}  (target >= {PII_TARGET})"
            )


def count_rows(store_id: int, url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        api = conn.execute(
            "SELECT count(*) FROM carts_cartevent WHERE store_id = %s", [store_id]
        ).fetchone()
        raw = conn.execute(f"SELECT count(*) FROM {SCRATCH_TABLE}").fetchone()
    assert api is not None and raw is not None
    return int(api[0]), int(raw[0])


def pii_stored(store_id: int, url: str) -> dict[str, Any]:
    """What a PII store's rows hold: how many name an address or phone in clear, and the newest
    contact_captured as stored (to see what ciphertext looks like)."""
    import psycopg

    clear = "%@example.com"
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*),"
            " count(*) FILTER (WHERE shopper->>'email' LIKE %s),"
            " count(*) FILTER (WHERE type = 'checkout.contact_captured'),"
            " count(*) FILTER (WHERE type = 'checkout.contact_captured'"
            "                  AND (data->>'email' LIKE %s OR data->>'phone' = %s))"
            " FROM carts_cartevent WHERE store_id = %s",
            [clear, clear, PII_PHONE, store_id],
        ).fetchone()
        sample = conn.execute(
            "SELECT data::text, shopper::text FROM carts_cartevent"
            " WHERE store_id = %s AND type = 'checkout.contact_captured'"
            " ORDER BY position DESC LIMIT 1",
            [store_id],
        ).fetchone()
        keys = None
        if conn.execute("SELECT to_regclass('carts_shopperkey')").fetchone() != (None,):
            found = conn.execute(
                "SELECT count(*) FROM carts_shopperkey WHERE store_id = %s", [store_id]
            ).fetchone()
            keys = int(found[0]) if found else None
    assert row is not None
    return {
        "events": int(row[0]),
        "shopper_email_clear": int(row[1]),
        "contacts": int(row[2]),
        "contacts_clear": int(row[3]),
        "shopper_keys": keys,
        "sample": sample,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events and rounds (~30 s)")
    # 2 by measurement on 2 cores: single events +25-35% over 1 worker, batches no worse
    # (docs/benchmarks.md). Under ASGI a worker runs Django on one core at a time.
    parser.add_argument(
        "--workers", type=int, default=WEB_WORKERS, help="uvicorn workers (default: as make run)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    parser.add_argument("--events", type=int, help="single events per round (default 3000)")
    parser.add_argument("--batches", type=int, help="batches per round and mode (default 20)")
    parser.add_argument("--debug", action="store_true", help="run the server with DEBUG=True")
    parser.add_argument(
        "--pii",
        action="store_true",
        help="also personal data encrypted vs in clear (two more servers, about twice the time)",
    )
    parser.add_argument(
        "--writers",
        action="store_true",
        help="the log itself, without HTTP: append-service processes against raw INSERT writers",
    )
    parser.add_argument(
        "--processes", type=int, default=8, help="--writers: processes of each kind (default 8)"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="--writers: seconds a round (default 5)"
    )
    args = parser.parse_args()

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if args.writers:
        signal.signal(signal.SIGTERM, on_sigterm)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return writers_main(args, time.monotonic())

    plan = Plan(
        rounds=args.rounds or (2 if args.quick else 3),
        single_events=args.events or (1000 if args.quick else 3000),
        clients=4,
        batches=args.batches or (6 if args.quick else 20),
        batch_size=500,
        batch_clients=(1, 2),
        pii=args.pii,
    )

    signal.signal(signal.SIGTERM, on_sigterm)
    # Even when started in the background (where a shell ignores SIGINT), Ctrl-C / kill -INT stop
    # the run through the same clean-up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    django_setup()
    from django.conf import settings
    from django.db import connection

    url = settings.SERVICES.database_url
    store_id, key = store_for_bench()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    connection.close()
    run = uuid.uuid4().hex[:8]
    rng = random.Random(run)

    server = Server(workers=args.workers, env=server_env(debug=args.debug), key=key)
    servers = [server]
    # The personal-data servers: the same but for CARTS_PII_ENCRYPTION, a fresh store each.
    pii_ctx: dict[str, dict[str, Any]] = {}
    if plan.pii:
        for mode in PII_MODES:
            pii_store, pii_key = store_for_bench()
            env = server_env(debug=args.debug, pii_encryption=mode == "enc")
            pii_server = Server(workers=args.workers, env=env, key=pii_key)
            servers.append(pii_server)
            pii_ctx[mode] = {"port": pii_server.port, "key": pii_key, "store_id": pii_store}
    pii_checks: dict[str, dict[str, Any]] = {}
    rounds: list[dict[str, Result]] = []
    try:
        with scratch_table(url):
            for s in servers:
                s.start()
            ctx = {"port": server.port, "key": key, "store_id": store_id, "url": url}
            print(
                f"uvicorn, {args.workers} worker(s), DEBUG={args.debug}, port {server.port};"
                f" store #{store_id}; PostgreSQL {pg_version}; {os.cpu_count()} CPUs"
            )
            for mode, c in pii_ctx.items():
                print(
                    f"personal data, CARTS_PII_ENCRYPTION={int(mode == 'enc')}:"
                    f" port {c['port']}, store #{c['store_id']}"
                )
            warm = warm_up(plan, rng, run, ctx)
            pii_warm = {
                mode: warm_up(plan, rng, f"{run}-p", c, pii=True) for mode, c in pii_ctx.items()
            }
            for r in range(plan.rounds):
                rounds.append(measure_round(plan, rng, run, r, ctx))
                if plan.pii:
                    rounds[-1].update(measure_pii_round(plan, rng, run, r, pii_ctx))
                print_round(plan, r, rounds[-1])
            expected = warm + plan.rounds * (
                plan.single_events + len(plan.batch_clients) * plan.batches * plan.batch_size
            )
            api_rows, scratch_rows = count_rows(store_id, url)
            expected_raw = expected - warm
            if (api_rows, scratch_rows) != (expected, expected_raw):
                raise RuntimeError(
                    f"rows stored: API {api_rows} (expected {expected}),"
                    f" raw {scratch_rows} (expected {expected_raw})"
                )
            for mode, c in pii_ctx.items():
                pii_checks[mode] = pii_stored(c["store_id"], url)
                expected = pii_warm[mode] + plan.rounds * pii_events(plan)
                if pii_checks[mode]["events"] != expected:
                    raise RuntimeError(
                        f"rows stored, personal data {mode}: {pii_checks[mode]['events']}"
                        f" (expected {expected})"
                    )
            server_logs = [s.output().strip() for s in servers]
    except BaseException:
        STOP.set()
        for s in servers:
            output = s.output().strip()
            if output:
                print(f"--- uvicorn output (port {s.port}) ---\n{output}", file=sys.stderr)
        raise
    finally:
        for s in servers:
            s.close()

    for s, log in zip(servers, server_logs, strict=True):
        if log:
            print(f"--- uvicorn output (port {s.port}) ---\n{log}")
    summary = summarise(plan, rounds)
    print_summary(plan, summary)
    pii_figures: dict[str, Any] = {}
    if plan.pii:
        for mode, check in pii_checks.items():
            print(
                f"  store #{pii_ctx[mode]['store_id']} ({mode}): {check['events']} events,"
                f" {check['shopper_email_clear']} with shopper.email in clear;"
                f" {check['contacts']} contact_captured, {check['contacts_clear']} in clear;"
                f" shopper keys: {check['shopper_keys']}"
            )
            data, shopper = check["sample"] or ("", "")
            print(f"    newest contact_captured as stored: data {data[:160]}")
            print(f"    {'':<34}shopper {shopper[:160]}")
        enc, clear = pii_checks["enc"], pii_checks["clear"]
        # Encrypted means no address or phone of the encrypting store in clear, and all of the
        # clear one's: otherwise the ratio compares two servers doing the same thing.
        effective = (
            enc["shopper_email_clear"] == 0
            and enc["contacts_clear"] == 0
            and clear["shopper_email_clear"] == clear["events"]
            and clear["contacts_clear"] == clear["contacts"]
        )
        if not effective:
            print("  WARNING: the encrypting server stored personal data in clear (or the clear")
            print("  one did not): encryption is not in effect, the ratios measure no encryption")
        pii_figures = {
            "pii_target": PII_TARGET,
            "single_pii_ok": summary["single_pii_encrypted_vs_clear"] >= PII_TARGET,
            "batch_pii_ok": summary["batch_pii_encrypted_vs_clear"] >= PII_TARGET,
            "pii_encryption_effective": effective,
            "pii_enc_events": enc["events"],
            "pii_enc_in_clear": enc["shopper_email_clear"] + enc["contacts_clear"],
            "pii_enc_shopper_keys": enc["shopper_keys"],
            "pii_clear_events": clear["events"],
        }
    figures = {
        **summary,
        "single_target": SINGLE_TARGET,
        "batch_target": BATCH_TARGET,
        "single_ok": summary["single_ratio"] >= SINGLE_TARGET,
        "batch_ok": summary["batch_ratio"] >= BATCH_TARGET,
        **pii_figures,
        "pii": plan.pii,
        "rounds": plan.rounds,
        "quick": args.quick,
        "uvicorn_workers": args.workers,
        "debug": args.debug,
        "single_events": plan.single_events,
        "single_clients": plan.clients,
        "batches": plan.batches,
        "batch_size": plan.batch_size,
        "batch_clients": list(plan.batch_clients),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": pg_version,
        "commit": git_head(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
    }
    results_print("ingest", figures)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: server stopped, scratch table dropped", file=sys.stderr)
        sys.exit(130)
