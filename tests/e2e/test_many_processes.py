"""Many processes, one system (`WEB=2 WORKERS=2 make run`): two web processes (uvicorn, each on a
port of its own, so each shopper's socket is known to be on one of them), two Celery workers and
the projectors, on the same PostgreSQL and Redis.

An on-site offer decided by a Celery worker (a campaign's on-site step) reaches the shoppers'
sockets on both web processes: the worker commits the decision to the log, the projectors'
process pushes it over the channel layer (recovery/offer_push.py) to the cart's group, and each
web process delivers it to its own sockets. With a channel layer in each process's memory no
socket would get it. And events for the same carts posted alternately to both web processes, with
races on ``expected_version`` and duplicates sent to the other process, end in one consistent
log: every acknowledged event stored once, versions 1..N per cart, cart state the fold of its
events.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.utils import timezone
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from campaigns import enrolment, steps
from campaigns.models import Step
from carts.models import CartEvent, CartState
from carts.projections import fold
from carts.services import cart_from_row, fold_event
from config import devrun
from config import env as config_env
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned
from tests.conftest import item, subprocess_env
from tests.e2e import procs

WEB = 2
WORKERS = 2
STARTUP_TIMEOUT = 60
OFFER_TIMEOUT = 30
# A worker holds each batch this long after claiming it, so the second batch, published while
# the first worker is busy (prefetch 1, acks late, one pool process each), goes to the other.
HOLD_SECONDS = "1"
# As make run runs uvicorn (config/devrun.py): a server that served websockets sometimes waits on
# its own for 20 s or more to stop after SIGTERM, its sockets closed; here at most 5 s.
WEB_OPTIONS = ("--lifespan", "off", "--timeout-graceful-shutdown", "5")


@dataclass
class System:
    webs: list[str]  # base URLs: http://127.0.0.1:<port>, one per web process
    workers: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]

    def tails(self) -> str:
        return "\n".join(f"--- {name}\n{procs.tail(log, 30)}" for name, log in self.logs.items())


def _ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = procs.free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture
def system(committed_store, isolated_redis, tmp_path) -> Iterator[System]:
    """WEB web processes, WORKERS Celery workers and the projectors, each a process of its own,
    all on the test database and this test's Redis database (broker and channel layer)."""
    store, _ = committed_store
    ports = _ports(WEB)
    webs = [f"http://127.0.0.1:{port}" for port in ports]
    store.allowed_origins = webs
    store.save(update_fields=["allowed_origins"])
    env = subprocess_env(DJANGO_DEBUG="0")
    logs: dict[str, Path] = {}
    children: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:

        def stop_all() -> None:
            # All signalled at once, then waited for: not one graceful stop after another.
            for child in children:
                procs.signal_group(child, signal.SIGTERM)
            for child in children:
                procs.stop(child)

        stack.callback(stop_all)

        def started(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
            children.append(process)
            return process

        # All started at once, then waited for: their start-ups overlap.
        web_processes = []
        for n, port in enumerate(ports, start=1):
            logs[f"web-{n}"] = tmp_path / f"web-{n}.log"
            web_env = {**env, **dict(devrun.WEB_ENV)}  # as make run runs them
            process = procs.web_server_start(
                port, env=web_env, log=logs[f"web-{n}"], options=WEB_OPTIONS
            )
            web_processes.append(started(process))
        workers = {}
        worker_env = {**env, "CAMPAIGNS_PAUSE_BEFORE_SEND": HOLD_SECONDS}
        for name in devrun.worker_names(WORKERS):
            logs[name] = tmp_path / f"{name}.log"
            workers[name] = started(procs.celery_worker_start(name, env=worker_env, log=logs[name]))
        logs["projectors"] = tmp_path / "projectors.log"
        argv = [procs.PYTHON, "manage.py", "run_projectors", "--poll", "0.5"]
        projectors = started(procs.start(argv, env=env, log=logs["projectors"]))
        for n, (port, web) in enumerate(zip(ports, web_processes, strict=True), start=1):
            procs.web_server_wait(port, web, log=logs[f"web-{n}"], timeout=STARTUP_TIMEOUT)
        for name, worker in workers.items():
            procs.log_wait(worker, logs[name], "ready.", timeout=STARTUP_TIMEOUT, what=name)
        procs.log_wait(
            projectors,
            logs["projectors"],
            "projectors running",
            timeout=STARTUP_TIMEOUT,
            what="the projectors",
        )
        yield System(webs, workers, logs)


# -- shoppers' sockets -----------------------------------------------------------------------


def _session(web: str, publishable_key: str, cart: str | None = None) -> dict[str, Any]:
    """A ticket from this web process, for a new cart or one its sessions made."""
    body = {"publishable_key": publishable_key, **({"cart": cart} if cart else {})}
    status, answer = procs.post_json(
        f"{web}/api/v1/shopper-sessions", body, headers={"Origin": web}
    )
    assert status == 201, answer
    return dict(answer)


def _socket(stack: contextlib.ExitStack, web: str, session: dict[str, Any]) -> ClientConnection:
    """The shopper's websocket on this web process, past its welcome; closed with ``stack``."""
    url = "ws" + web.removeprefix("http") + session["ws_path"]
    ws = stack.enter_context(connect(url, origin=Origin(web), open_timeout=10))
    ws.send(json.dumps({"type": "hello", "ticket": session["ticket"]}))
    welcome = json.loads(ws.recv(timeout=10))
    assert (welcome["type"], welcome["cart"]) == ("welcome", session["cart"]), welcome
    return ws


def _frames(ws: ClientConnection, *, until: float) -> list[dict[str, Any]]:
    """Every frame that arrives before ``until`` (monotonic)."""
    frames = []
    while (left := until - time.monotonic()) > 0:
        try:
            frames.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            break
    return frames


def _first_offer(ws: ClientConnection, *, deadline: float) -> dict[str, Any] | None:
    """The first offer frame that arrives before ``deadline`` (monotonic); None if none does."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            return None
        if frame.get("type") == "offer":
            return dict(frame)
    return None


def _publisher(redis_url: str) -> tuple[Celery, Any]:
    """Publish step batches to the broker the workers use (this test's Redis database)."""
    app = Celery(
        "test-publisher", broker=config_env.celery_broker_url(redis_url), set_as_current=False
    )
    return app, lambda ids: app.send_task("campaigns.steps_run", args=[ids])


def _pid_of_lease(owner: str) -> int:
    """campaigns.steps.worker_id: host:pid:random."""
    return int(owner.split(":")[1])


def _offers_reach_shoppers_on_either_web_process(
    system: System, store: Any, creds: Any, redis_url: str
) -> None:
    """Two carts, each with a socket on web 1 and one on web 2; their on-site steps run as two
    batches, one on each worker; every socket gets its own cart's offer, pushed while it was
    connected (nothing was pending at its welcome), and not the other cart's."""
    web1, web2 = system.webs
    campaign_with_tiers(
        store.pk,
        activated_at=timezone.now() - timedelta(days=1),
        tiers=[{"channel": "onsite", "headline": "Still there?"}],
    )
    # Cart A minted by a session on web 1, cart B by one on web 2; each opened on the other too.
    first = {"A": _session(web1, creds.publishable_key), "B": _session(web2, creds.publishable_key)}
    carts = {name: session["cart"] for name, session in first.items()}
    for token in carts.values():
        cart_abandoned(store.pk, at=timezone.now() - timedelta(hours=1), token=token)
    other = {
        "A": _session(web2, creds.publishable_key, carts["A"]),
        "B": _session(web1, creds.publishable_key, carts["B"]),
    }
    app, publish = _publisher(redis_url)
    with contextlib.ExitStack() as stack:
        stack.callback(app.close)
        sockets = {
            ("A", "web-1"): _socket(stack, web1, first["A"]),
            ("A", "web-2"): _socket(stack, web2, other["A"]),
            ("B", "web-2"): _socket(stack, web2, first["B"]),
            ("B", "web-1"): _socket(stack, web1, other["B"]),
        }
        # Connected with nothing pending: what comes now comes over the channel layer.
        assert enrolment.abandoned_carts_enroll(now=timezone.now()) >= 2
        claimed: list[list[int]] = []
        assert steps.due_steps_enqueue(now=timezone.now(), publish=claimed.append) == 2
        ids = [step_id for batch in claimed for step_id in batch]
        for step_id in ids:  # a batch each: one per worker
            publish([step_id])
        deadline = time.monotonic() + OFFER_TIMEOUT  # for all of them
        offers = {key: _first_offer(ws, deadline=deadline) for key, ws in sorted(sockets.items())}
        assert None not in offers.values(), f"{offers}\n{system.tails()}"
        # Anything else that comes within a moment (another cart's offer would).
        later = time.monotonic() + 1.0
        extra = {key: _frames(ws, until=later) for key, ws in sockets.items()}

    step_of = {
        name: Step.objects.get(store=store, cart=token, channel="onsite")
        for name, token in carts.items()
    }
    for (name, web), offer in offers.items():
        assert offer is not None
        step = step_of[name]
        assert (step.status, step.reason) == ("sent", "eligible")
        [decided] = CartEvent.objects.filter(
            store=store, cart=carts[name], type="recovery.offer_decided"
        )
        assert decided.data["step"] == step.pk
        assert (offer["id"], offer["step"]) == (decided.data["offer"]["id"], step.pk), (name, web)
        assert offer["headline"] == "Still there?"
    assert offers[("A", "web-1")] == offers[("A", "web-2")]
    assert offers[("B", "web-1")] == offers[("B", "web-2")]
    assert offers[("A", "web-1")]["id"] != offers[("B", "web-1")]["id"]  # type: ignore[index]
    assert extra == {key: [] for key in sockets}
    # Each offer was decided by a different worker process (a pool process of worker-1, one of
    # worker-2).
    pools = {name: set(procs.descendants(worker.pid)) for name, worker in system.workers.items()}
    deciders = {
        name: next(
            (w for w, pids in pools.items() if _pid_of_lease(step.lease_owner) in pids), None
        )
        for name, step in step_of.items()
    }
    assert sorted(deciders.values(), key=str) == ["worker-1", "worker-2"], (deciders, pools)


# -- ingestion through both web processes ----------------------------------------------------

CARTS = 4
ACKS_PER_WRITER = 5  # per cart and web process


@dataclass
class Ledger:
    """What the clients were told, shared by the writer threads."""

    acked: dict[str, tuple[str, int, int]]  # event id -> (cart, version, position)
    duplicates: list[tuple[str, int, int]]  # (event id, version, position) answered as duplicate
    conflicted: list[str]  # event ids refused with version_conflict
    served: Counter[str]  # acknowledgements (201) per web process
    errors: list[str]
    lock: threading.Lock

    def ack(self, web: str, answer: dict[str, Any]) -> None:
        with self.lock:
            for e in answer["events"]:
                if e["duplicate"]:
                    self.duplicates.append((e["id"], e["version"], e["position"]))
                else:
                    assert e["id"] not in self.acked, e
                    self.acked[e["id"]] = (e["cart"], e["version"], e["position"])
                    self.served[web] += 1


def _event(cart: str, sku: str, *, expected_version: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "cart": cart,
        "type": "cart.item_added",
        "occurred_at": timezone.now().isoformat(),
        "data": item(sku=sku, quantity=1, unit_price=100 + len(sku)),
    }
    if expected_version is not None:
        body["expected_version"] = expected_version
    return body


def _post(web: str, secret_key: str, body: dict[str, Any]) -> tuple[int, Any]:
    return procs.post_json(
        f"{web}/api/v1/events", body, headers={"Authorization": f"Bearer {secret_key}"}
    )


def _writer(
    ledger: Ledger, webs: list[str], mine: int, secret_key: str, cart: str, start: threading.Barrier
) -> None:
    """Append ACKS_PER_WRITER events to ``cart`` through web process ``mine``, each expecting
    the version last seen; on a conflict, take the actual version and try a new event. Every
    other acknowledged event is sent again, as it was, to the other web process."""
    web, other = webs[mine], webs[1 - mine]
    known, done, n = 0, 0, 0
    start.wait(timeout=30)
    while done < ACKS_PER_WRITER:
        n += 1
        if n > 10 * ACKS_PER_WRITER:
            ledger.errors.append(f"{cart} via {web}: no progress after {n} tries")
            return
        body = _event(cart, f"{cart}-w{mine}-{n}", expected_version=known)
        status, answer = _post(web, secret_key, body)
        if status == 409 and answer.get("code") == "version_conflict":
            with ledger.lock:
                ledger.conflicted.append(body["id"])
            known = answer["actual_version"]
            continue
        if status != 201:
            ledger.errors.append(f"{cart} via {web}: {status} {answer}")
            return
        ledger.ack(web, answer)
        known, done = answer["events"][0]["version"], done + 1
        if done % 2:
            again, repeat = _post(other, secret_key, body)
            if again != 200 or not repeat["events"][0]["duplicate"]:
                ledger.errors.append(f"{cart} again via {other}: {again} {repeat}")
                return
            ledger.ack(other, repeat)


def _both_at_once(ledger: Ledger, webs: list[str], secret_key: str, body: dict[str, Any]) -> None:
    """The same event posted to both web processes at the same moment."""
    start = threading.Barrier(len(webs))
    answers: dict[str, tuple[int, Any]] = {}

    def send(web: str) -> None:
        start.wait(timeout=30)
        answers[web] = _post(web, secret_key, body)

    threads = [threading.Thread(target=send, args=(web,)) for web in webs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted(status for status, _ in answers.values())
    if statuses != [200, 201]:
        ledger.errors.append(f"the same event to both at once: {answers}")
        return
    for web, (_, answer) in answers.items():
        ledger.ack(web, answer)


def _ingestion_through_both_web_processes_is_consistent(
    system: System, store: Any, creds: Any
) -> None:
    """Two writers per cart, one on each web process, race on expected_version, and send what
    they stored again to the other process; then the same event goes to both at once."""
    webs = system.webs
    carts = [f"mp-{uuid.uuid4().hex[:8]}-{n}" for n in range(CARTS)]
    ledger = Ledger({}, [], [], Counter(), [], threading.Lock())

    # Two writers per cart, one on each web process, racing on expected_version.
    start = threading.Barrier(2 * CARTS)
    threads = [
        threading.Thread(target=_writer, args=(ledger, webs, mine, creds.secret_key, cart, start))
        for cart in carts
        for mine in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert ledger.errors == [], f"{ledger.errors}\n{system.tails()}"
    # Then per cart: the same event to both at once (one stores it, the other answers duplicate),
    # and one sent with a stale expected_version (refused, stored nowhere).
    for cart in carts:
        _both_at_once(ledger, webs, creds.secret_key, _event(cart, f"{cart}-both"))
        version = CartState.objects.get(store=store, token=cart).version
        stale = _event(cart, f"{cart}-stale", expected_version=version - 1)
        status, answer = _post(webs[1], creds.secret_key, stale)
        refused = (status, answer.get("code"), answer.get("actual_version"))
        assert refused == (409, "version_conflict", version), answer
        ledger.conflicted.append(stale["id"])
    assert ledger.errors == [], f"{ledger.errors}\n{system.tails()}"

    stored = list(CartEvent.objects.filter(store=store, cart__in=carts).order_by("position"))
    # Every acknowledged event stored once, as acknowledged; nothing else stored.
    assert sorted(str(e.event_id) for e in stored) == sorted(ledger.acked)
    assert {str(e.event_id): (e.cart, e.version, e.position) for e in stored} == ledger.acked
    # A duplicate's answer is the original's version and position.
    assert ledger.duplicates, "no duplicate was sent"
    for event_id, version, position in ledger.duplicates:
        assert ledger.acked[event_id][1:] == (version, position)
    assert set(ledger.conflicted).isdisjoint(ledger.acked)
    assert len(ledger.conflicted) >= CARTS
    # Each cart: versions 1..N in log order, and its state the fold of its events.
    for cart in carts:
        events = [e for e in stored if e.cart == cart]
        n = 2 * ACKS_PER_WRITER + 1
        assert [e.version for e in events] == list(range(1, n + 1)), cart
        row = CartState.objects.get(store=store, token=cart)
        assert row.version == n
        assert cart_from_row(row) == fold(fold_event(e) for e in events)
        assert row.item_count == n
    # Both web processes acknowledged writes.
    assert set(ledger.served) == set(webs) and min(ledger.served.values()) >= CARTS
    print(
        f"\n{len(ledger.acked)} events acknowledged ({dict(ledger.served)}),"
        f" {len(ledger.duplicates)} duplicates, {len(ledger.conflicted)} version conflicts"
    )


def test_two_web_processes_and_two_workers_are_one_system(system, committed_store, isolated_redis):
    """One start of the processes (about 15 s on two cores) for both halves."""
    store, creds = committed_store
    _ingestion_through_both_web_processes_is_consistent(system, store, creds)
    _offers_reach_shoppers_on_either_web_process(system, store, creds, isolated_redis)
