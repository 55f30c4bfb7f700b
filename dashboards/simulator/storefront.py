"""The browser's side of a simulated shopper: the storefront's pages running the snippet
(docs/snippet.md), as far as the server can tell. A ticket from ``POST /api/v1/shopper-sessions``
(publishable key, an allowed ``Origin``; for a cart the shop's server made, its grant), the
websocket, events answered by ``appended``, offers acknowledged at once, then shown and accepted or
dismissed (docs/websocket.md)."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dashboards.simulator import journeys as jm
from dashboards.simulator.client import Http, HttpError, ShopperSocket, SocketClosed
from dashboards.simulator.outbox import Stats

SESSIONS_PATH = "/api/v1/shopper-sessions"


@dataclass(slots=True)
class Visit:
    """What one visit did (or left for the next)."""

    cart: str | None = None
    grant: str | None = None  # for a cart the shop's server made (docs/snippet.md)
    version: int = 0  # the cart's version after our last event
    code: str | None = None  # an accepted on-site offer's code
    discount: int = 0  # what that code takes off
    accepted: bool = False
    offers: set[str] = field(default_factory=set)
    # Where its browser connects from (loopback_source): a device of its own.
    source: str | None = None


def loopback_source(url: str, rng: random.Random) -> str | None:
    """A source address of its own for a simulated shopper's socket when the server is on IPv4
    loopback (127.0.0.0/8 is all loopback on Linux): the server's per-address limits and the
    on-site code cooldown per client address (recovery/live.py) then see many devices, as they
    would in the field, and leave the newcomer at 127.0.0.1 their own. None elsewhere."""
    host = urlsplit(url).hostname or ""
    if sys.platform != "linux" or not host.startswith("127."):
        return None
    return f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def ws_url(url: str, path: str) -> str:
    parts = urlsplit(url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{path}"


class Storefront:
    def __init__(
        self,
        http: Http,
        stats: Stats,
        *,
        url: str,
        origin: str,
        publishable_key: str,
        timeout: float,
        think: Callable[[float], Awaitable[None]],
    ) -> None:
        self._http = http
        self._stats = stats
        self._url = url
        self._origin = origin
        self._publishable_key = publishable_key
        self._timeout = timeout
        self._think = think

    async def open(self, visit: Visit) -> ShopperSocket | None:
        """A ticket for the visit's cart (a new cart when it has none) and an open socket."""
        body: dict[str, Any] = {"publishable_key": self._publishable_key}
        if visit.cart is not None:
            body["cart"] = visit.cart
            if visit.grant is not None:
                body["grant"] = visit.grant
        try:
            response = await self._http.post(SESSIONS_PATH, body, headers={"Origin": self._origin})
        except HttpError as exc:
            self._stats.error("shopper-sessions: unreachable", str(exc))
            return None
        answer = response.json()
        if response.status != 201 or not isinstance(answer, dict) or "ticket" not in answer:
            detail = response.body.decode(errors="replace")
            self._stats.error(f"shopper-sessions {response.status}", detail)
            return None
        visit.cart = str(answer["cart"])
        try:
            socket = await ShopperSocket.open(
                ws_url(self._url, str(answer.get("ws_path") or "/ws/v1/shopper/")),
                origin=self._origin,
                ticket=str(answer["ticket"]),
                timeout=self._timeout,
                source=visit.source,
            )
        except SocketClosed as exc:
            self._stats.error(f"websocket {exc.code or 'closed'}", str(exc))
            return None
        self._stats.count("sessions")
        return socket

    async def event(
        self, visit: Visit, socket: ShopperSocket, event: dict[str, Any]
    ) -> ShopperSocket | None:
        """Send one event; on a dropped socket, reconnect once and send it again (same id, as
        the snippet does). The socket to go on with, or None when the visit cannot go on."""
        for attempt in range(2):
            try:
                frame = await socket.call({"type": "event", "event": event}, timeout=self._timeout)
            except SocketClosed as exc:
                await socket.close()
                if attempt == 1:
                    self._stats.error(f"websocket {exc.code or 'closed'}", str(exc))
                    return None
                reopened = await self.open(visit)
                if reopened is None:
                    return None
                socket = reopened
                continue
            if frame.get("type") == "appended":
                assert visit.cart is not None
                self._stats.appended(visit.cart, event["type"], duplicate=bool(frame["duplicate"]))
                visit.version = max(visit.version, int(frame.get("version") or 0))
                return socket
            code = frame.get("code") or frame.get("type")
            if code == "unavailable" and attempt == 0:
                await asyncio.sleep(0.5)  # docs/websocket.md: send the event again
                continue
            self._stats.error(f"websocket {code} ({event['type']})", str(frame))
            return socket
        return socket

    async def _say(self, socket: ShopperSocket, message: dict[str, Any]) -> bool:
        """A message the server answers only when it is wrong, then a ping: whether it was
        taken (no error before the pong)."""
        try:
            await socket.send(message)
            frame = await socket.call({"type": "ping"}, timeout=self._timeout)
            taken = frame.get("type") == "pong"
            while frame.get("type") != "pong":
                self._stats.error(f"websocket {frame.get('code')} ({message['type']})", str(frame))
                frame = await socket.call({"type": "ping"}, timeout=self._timeout)
        except SocketClosed as exc:
            self._stats.error(f"websocket {exc.code or 'closed'}", str(exc))
            return False
        return taken

    async def offers(self, j: jm.Journey, visit: Visit, socket: ShopperSocket) -> None:
        """Every offer that has arrived: acknowledged at once, then shown (most of the time) and
        accepted, dismissed or left alone."""
        while not socket.offers.empty():
            offer = socket.offers.get_nowait()
            offer_id = str(offer.get("id"))
            if offer_id in visit.offers:
                continue
            visit.offers.add(offer_id)
            self._stats.count("offers_received")
            self._stats.count(f"offers_kind_{offer.get('kind')}")
            await self._say(socket, {"type": "ack", "offer": offer_id})
            if offer_id in socket.withdrawn or not j.sees_offer():
                continue
            if not await self._say(socket, {"type": "offer.shown", "offer": offer_id}):
                continue
            self._stats.count("offers_shown")
            await self._think(j.offer_think)
            reaction = j.reaction()
            if reaction == "ignored" or offer_id in socket.withdrawn:
                continue
            if not await self._say(socket, {"type": f"offer.{reaction}", "offer": offer_id}):
                continue
            self._stats.count(f"offers_{reaction}")
            if reaction == "accepted":
                visit.accepted = True
                if offer.get("discount_code"):
                    visit.code = str(offer["discount_code"])
                    visit.discount = _offer_discount(offer, j.value)


def _offer_discount(offer: dict[str, Any], value: int) -> int:
    if isinstance(offer.get("discount_amount"), int):
        return int(offer["discount_amount"])
    percent = offer.get("percent")
    if isinstance(percent, int):
        off = value * percent // 100
        cap = offer.get("discount_cap")
        return min(off, cap) if isinstance(cap, int) and cap > 0 else off
    return 0
