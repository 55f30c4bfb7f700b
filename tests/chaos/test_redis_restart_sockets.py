"""Shoppers' sockets while Redis (the channel layer) is killed and started again."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from tests.chaos.conftest import Chaos
from tests.e2e import procs

# 150 s: the first test of the package also waits for the private servers to start and migrate.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

DOWN_SECONDS = 2.0
OFFER_TIMEOUT = 15.0
SHOPPERS = 8
# As make run runs uvicorn: a server that served websockets can take 20 s to stop otherwise.
WEB_OPTIONS = ("--lifespan", "off", "--timeout-graceful-shutdown", "5")


@dataclass
class Shopper:
    """A storefront's snippet, as recovery/static/recovery/recovery.js behaves: one socket for
    its cart; when the server closes it, a new session and socket (backing off), and after a
    reconnect's welcome the cart's pending offers fetched over HTTP; each offer acked."""

    web: str
    key: str
    cart: str | None = None
    ws: ClientConnection | None = None
    _sockets: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    offers: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> offer frame
    closes: list[int | None] = field(default_factory=list)  # the server's close codes
    reconnects: int = 0
    fetched: list[str] = field(default_factory=list)  # offer ids fetched after a reconnect
    session_statuses: list[int] = field(default_factory=list)  # each session request's answer

    def open(self) -> bool:
        """A session (a new cart the first time) and its socket, past its welcome."""
        status, answer = _http(
            "POST",
            f"{self.web}/api/v1/shopper-sessions",
            {"publishable_key": self.key, **({"cart": self.cart} if self.cart else {})},
            origin=self.web,
        )
        self.session_statuses.append(status)
        if status != 201:
            return False
        self.cart = answer["cart"]
        url = "ws" + self.web.removeprefix("http") + answer["ws_path"]
        try:
            ws = self._sockets.enter_context(connect(url, origin=Origin(self.web), open_timeout=5))
            ws.send(json.dumps({"type": "hello", "ticket": answer["ticket"]}))
            welcome = json.loads(ws.recv(timeout=5))
        except (OSError, TimeoutError, ConnectionClosed):
            return False
        if welcome.get("type") != "welcome":
            return False
        self.ws = ws
        return True

    def poll(self, until: float) -> None:
        """Read frames until ``until`` (monotonic), reconnecting as the snippet does."""
        attempt = 0
        while (left := until - time.monotonic()) > 0:
            if self.ws is None:
                time.sleep(min(left, 0.2 * 2 ** min(attempt, 3)))
                attempt += 1
                if self.open():
                    attempt = 0
                    self.reconnects += 1
                    self._fetch_pending()
                continue
            try:
                frame = json.loads(self.ws.recv(timeout=min(left, 0.5)))
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
                self.ws = None
                continue
            if frame.get("type") == "offer":
                self.offers[frame["id"]] = frame
                with contextlib.suppress(ConnectionClosed):
                    self.ws.send(json.dumps({"type": "ack", "offer": frame["id"]}))

    def _fetch_pending(self) -> None:
        assert self.cart is not None
        status, answer = _http(
            "GET",
            f"{self.web}/api/v1/shopper-sessions/offers?publishable_key={quote(self.key)}"
            f"&cart={quote(self.cart)}",
            origin=self.web,
        )
        if status == 200:
            for offer in answer["offers"]:
                self.fetched.append(offer["id"])
                self.offers.setdefault(offer["id"], offer)

    def close(self) -> None:
        self._sockets.close()
        self.ws = None


def _http(method: str, url: str, body: Any = None, *, origin: str) -> tuple[int, Any]:
    """(status, JSON body) of a storefront's request; (0, None) when nothing answers."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Origin": origin, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def _store(c: Chaos, web: str) -> dict[str, Any]:
    """A store whose storefront is ``web``: its id and publishable key."""
    return dict(
        c.django(
            f"""
            from carts import services
            from carts.models import Store

            made = services.store_create(name="Chaos sockets")
            Store.objects.filter(pk=made.store_id).update(allowed_origins=[{web!r}])
            result = {{"store": made.store_id, "key": made.publishable_key}}
            """
        )
    )


def _carts_enrolled(c: Chaos, store_id: int, carts: list[str]) -> None:
    """An active campaign with an on-site tier, and ``carts`` abandoned and enrolled in it (their
    steps due in an hour: each is run by _onsite_step_run). Earlier tests' campaigns are switched
    off and their open steps settled first, as tests/conftest.py ``committed_store`` does."""
    c.django(
        f"""
        from datetime import timedelta
        from django.utils import timezone
        from campaigns import enrolment
        from campaigns.models import Campaign, Step
        from tests.campaigns.builders import campaign_with_tiers, cart_abandoned

        Campaign.objects.filter(active=True).update(active=False)
        Step.objects.filter(status__in=["pending", "enqueued", "sending"]).update(
            status="cancelled", reason="test_leftover", lease_owner=""
        )
        campaign_with_tiers(
            {store_id},
            activated_at=timezone.now() - timedelta(days=1),
            tiers=[{{"channel": "onsite", "headline": "Still there?"}}],
        )
        for cart in {carts!r}:
            cart_abandoned({store_id}, at=timezone.now() - timedelta(hours=1), token=cart)
        assert enrolment.abandoned_carts_enroll(now=timezone.now()) == {len(carts)}
        Step.objects.filter(store_id={store_id}).update(
            due_at=timezone.now() + timedelta(hours=1)
        )
        """
    )


def _onsite_steps_run(c: Chaos, store_id: int, carts: list[str]) -> dict[str, str]:
    """The carts' on-site steps run as a worker runs them (each offer recorded in the log, then
    pushed by the projectors' process): each cart's offer id."""
    return dict(
        c.django(
            f"""
            from django.utils import timezone
            from campaigns import steps
            from campaigns.models import Step
            from carts.models import CartEvent

            carts = {carts!r}
            Step.objects.filter(store_id={store_id}, cart__in=carts).update(due_at=timezone.now())
            claimed = []
            steps.due_steps_enqueue(now=timezone.now(), publish=claimed.append)
            ids = [i for batch in claimed for i in batch]
            counts = steps.steps_execute(step_ids=ids, now=timezone.now)
            result = {{}}
            for event in CartEvent.objects.filter(
                store_id={store_id}, cart__in=carts, type="recovery.offer_decided"
            ):
                assert event.data["decision"] == "offer", (counts, event.data)
                result[event.cart] = event.data["offer"]["id"]
            assert sorted(result) == sorted(carts), (counts, result)
            """
        )
    )


def test_shoppers_sockets_reconnect_after_a_redis_crash_and_every_offer_is_delivered(
    servers_up: Chaos, tmp_path
):
    """Redis (the channel layer, nothing saved) SIGKILLed under SHOPPERS connected shoppers and
    started again DOWN_SECONDS later: the sockets the server closed reconnect as the snippet does;
    the offer decided while the channel layer was down (its push failed) reaches its shopper after
    the reconnect (welcome's pending offers, or the offers fetched after it), and offers decided
    once Redis is back reach theirs (pushed to the group their new socket joined): each shopper
    gets its own cart's offer and no other; no session request is answered 500."""
    c = servers_up
    port = procs.free_port()
    web = f"http://127.0.0.1:{port}"
    made = _store(c, web)
    env = c.env()
    projectors = procs.start(
        [procs.PYTHON, "manage.py", "run_projectors", "--poll", "0.5"],
        env=env,
        log=tmp_path / "projectors.log",
    )
    web_server = procs.start(
        [procs.PYTHON, "-m", "uvicorn", "config.asgi:application", "--port", str(port),
         *WEB_OPTIONS],
        env=env, log=tmp_path / "web.log",
    )  # fmt: skip
    shoppers = [Shopper(web, made["key"]) for _ in range(SHOPPERS)]
    try:
        procs.wait_for(
            lambda: procs.status_of(f"{web}/healthz") in (200, 503),
            timeout=60,
            what="the web server",
        )
        procs.wait_for(
            lambda: "projectors running" in (tmp_path / "projectors.log").read_text(),
            timeout=60,
            what="the projectors",
        )
        for s in shoppers:
            assert s.open(), s.session_statuses
        carts = [str(s.cart) for s in shoppers]
        _carts_enrolled(c, made["store"], carts)  # nothing pending yet: no offer at welcome

        c.redis.kill()
        down_at = time.monotonic()
        offers = _onsite_steps_run(c, made["store"], carts[:1])  # decided while Redis is down
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_at)))
        c.redis.start()
        for s in shoppers:
            s.poll(time.monotonic() + 0.3)
        offers.update(_onsite_steps_run(c, made["store"], carts[1:]))  # once it is back
        deadline = time.monotonic() + OFFER_TIMEOUT
        while time.monotonic() < deadline and not all(
            offers[cart] in s.offers for cart, s in zip(carts, shoppers, strict=True)
        ):
            for s in shoppers:
                s.poll(time.monotonic() + 0.2)
        for s in shoppers:  # anything else that comes within a moment (another cart's would)
            s.poll(time.monotonic() + 0.5)
    finally:
        for s in shoppers:
            s.close()
        procs.stop(web_server)
        procs.stop(projectors)

    got = {s.cart: sorted(s.offers) for s in shoppers}
    assert got == {cart: [offers[cart]] for cart in carts}, (
        [(s.closes, s.reconnects, s.fetched) for s in shoppers],
        procs.tail(tmp_path / "web.log", 30),
    )
    # The one decided while Redis was down came after a reconnect, not over the channel layer.
    assert shoppers[0].reconnects >= 1, shoppers[0].closes
    statuses = {status for s in shoppers for status in s.session_statuses}
    assert 500 not in statuses, statuses
