"""The shopper websocket (docs/websocket.md): a thin edge over recovery.live."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from carts import metrics, parsers, ratelimits
from carts.errors import CartsError
from recovery import live, offers, tickets

MAX_MESSAGE_BYTES = 16 * 1024
HELLO_TIMEOUT_SECONDS = 10.0

CLOSE_BAD_HELLO = 4400
CLOSE_ORIGIN = 4403
CLOSE_HELLO_TIMEOUT = 4408
CLOSE_RATE_LIMITED = ratelimits.CLOSE_RATE_LIMITED  # 4429
# The offer ids a socket remembers having sent, for its acks (the most recent ones).
SENT_OFFERS_MAX = 100

T = TypeVar("T")
log = logging.getLogger(__name__)


def _db(fn: Callable[..., T]) -> Callable[..., Any]:
    """Run a service in the thread pool (not one shared thread: sockets do not queue behind
    each other), with Django's per-call connection hygiene."""
    return database_sync_to_async(fn, thread_sensitive=False)  # type: ignore[no-any-return]


def _message_verdict(socket: str) -> ratelimits.Verdict:
    """Count one message of this socket against both of its limits (a burst and a minute), in
    this process's memory: a socket lives in one process, and a Redis round trip on every
    message cost the exit intent's offer ~0.7 ms (bench/exit_intent.py)."""
    verdict = ratelimits.hit("ws_message_socket", socket, local=True)
    if verdict.allowed:
        verdict = ratelimits.hit("ws_message_socket_minute", socket, local=True)
    return verdict


class ShopperConsumer(AsyncWebsocketConsumer):
    session: live.Session | None = None
    group: str | None = None
    _hello_timer: asyncio.Task[None] | None = None
    _closed = False

    async def connect(self) -> None:
        headers = dict(self.scope.get("headers", []))
        self.origin = headers.get(b"origin", b"").decode("latin-1") or None
        self._socket_key = secrets.token_hex(12)  # this socket's messages are counted under it
        self._sent_offers: dict[str, None] = {}  # insertion-ordered, bounded: SENT_OFFERS_MAX
        # The socket's address: counted before any other work (the origin check reads the
        # database), and a key of the cooldown of offers with a code.
        self._client_ip = ratelimits.client_ip(scope=self.scope)
        verdict = await asyncio.to_thread(ratelimits.hit, "ws_connect_ip", self._client_ip)
        await self.accept()
        if not verdict.allowed:
            self._closed = True
            await self.close(code=CLOSE_RATE_LIMITED)
            return
        if not await _db(live.origin_known)(self.origin):
            await self.close(code=CLOSE_ORIGIN)
            return
        self._hello_timer = asyncio.create_task(self._hello_deadline())

    async def _hello_deadline(self) -> None:
        await asyncio.sleep(HELLO_TIMEOUT_SECONDS)
        if self.session is None:
            await self.close(code=CLOSE_HELLO_TIMEOUT)

    async def disconnect(self, code: int) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        if self.group is not None and self.channel_layer is not None:
            # A failed discard (Redis gone, pool exhausted) must not fail the disconnect: the
            # group membership expires on its own (channel-layer group_expiry).
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self._closed:  # over a limit: what the browser sent before the close is dropped
            return
        verdict = _message_verdict(self._socket_key)  # in memory: microseconds
        if not verdict.allowed:
            self._closed = True
            await self._error(
                "rate_limited",
                f"Too many messages on this socket; it is closed ({CLOSE_RATE_LIMITED}). "
                f"Connect again in {verdict.retry_after} s.",
                limit=verdict.name,
                retry_after=verdict.retry_after,
            )
            await self.close(code=CLOSE_RATE_LIMITED)
            return
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if self.session is None:
            await self._hello(raw)
            return
        if len(raw.encode()) > MAX_MESSAGE_BYTES:
            await self._error("too_large", f"Messages are at most {MAX_MESSAGE_BYTES} bytes.")
            return
        try:
            message = parsers.loads(raw)
        except parsers.TooDeep:
            await self._error(
                "invalid_json", f"Messages are JSON nested at most {parsers.MAX_DEPTH} levels."
            )
            return
        except ValueError:
            await self._error("invalid_json", "Messages are JSON objects.")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self._error("invalid_message", "Messages are JSON objects with a 'type'.")
            return
        kind = message["type"]
        if kind == "event":
            await self._event(message.get("event"))
        elif kind == live.ACK:
            await self._ack(message.get("offer"))
        elif kind in live.OFFER_REACTIONS:
            await self._reaction(kind, message.get("offer"))
        elif kind == "ping":
            await self._send({"type": "pong", "server_time": timezone.now().isoformat()})
        else:
            await self._error(
                "unknown_type",
                f"Unknown message type {kind!r}. Known: event, ack, offer.shown, "
                "offer.accepted, offer.dismissed, ping.",
            )

    async def _hello(self, raw: str) -> None:
        try:
            message = parsers.loads(raw) if len(raw) <= MAX_MESSAGE_BYTES else None
        except ValueError:
            message = None
        if (
            not isinstance(message, dict)
            or message.get("type") != "hello"
            or not isinstance(message.get("ticket"), str)
        ):
            await self.close(code=CLOSE_BAD_HELLO)
            return
        try:
            session, pending = await _db(live.session_start)(
                ticket=message["ticket"], origin=self.origin, now=timezone.now()
            )
        except tickets.TicketError as exc:
            await self.close(code=exc.code)
            return
        self.session = session
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        if self.channel_layer is not None:
            self.group = live.cart_group(session.store_id, session.cart)
            await self.channel_layer.group_add(self.group, self.channel_name)
        await self._send(
            {
                "type": "welcome",
                "cart": session.cart,
                "store": session.store_id,
                "session": session.session_id,
                "server_time": timezone.now().isoformat(),
            }
        )
        for offer in pending:
            await self._send_offer({"type": "offer", **offer})

    async def _event(self, raw: Any) -> None:
        assert self.session is not None
        received = time.perf_counter()
        if not isinstance(raw, dict):
            await self._error("invalid_event", "'event' must be an event object.")
            return
        loop = asyncio.get_running_loop()
        sent: list[dict[str, Any]] = []

        def on_decided(decision: offers.Decision) -> None:
            # Called in the worker thread once the offer is decided, before the commit: the
            # frame goes out while the decision is written (the log commits or we withdraw it).
            metrics.offer_decided(
                decision=decision.decision, seconds=time.perf_counter() - received
            )
            if decision.offer is None:
                return
            frame = {"type": "offer", **decision.offer}
            if settings.RECOVERY_SERVER_TIMING:
                # Event received to offer sent, on this server (bench/exit_intent.py reads it).
                frame["server_ms"] = round((time.perf_counter() - received) * 1000, 3)
            sent.append(frame)
            future = asyncio.run_coroutine_threadsafe(self._send_offer(frame), loop)
            # Wait for the frame to leave (GIL released meanwhile) before going on to the
            # commit: otherwise this thread's Python work holds the event loop off for ~1 ms.
            with contextlib.suppress(Exception):
                future.result(timeout=0.05)

        try:
            outcome = await _db(live.shopper_event_append)(
                store_id=self.session.store_id,
                cart=self.session.cart,
                raw=raw,
                now=timezone.now(),
                session=self.session.session_id,
                on_decided=on_decided,
                client_ip=self._client_ip,
                device=self.session.device,
            )
        except ValidationError as exc:
            await self._error("invalid_event", "The event is not valid.", errors=exc.detail)
            return
        except Exception as exc:
            for frame in sent:  # the commit failed: the offer was never recorded
                await self._send({"type": "offer.withdrawn", "id": frame["id"]})
            if isinstance(exc, CartsError):
                await self._error(exc.code, exc.message)
                return
            log.exception("appending a shopper event failed")
            await self._error("unavailable", "The event could not be stored; send it again.")
            return
        appended = outcome.appended
        await self._send(
            {
                "type": "appended",
                "id": str(appended.event_id),
                "version": appended.version,
                "position": appended.position,
                "duplicate": appended.duplicate,
            }
        )

    async def _ack(self, offer_id: Any) -> None:
        assert self.session is not None
        try:
            await _db(live.offer_ack_record)(
                store_id=self.session.store_id,
                cart=self.session.cart,
                offer_id=offer_id,
                sent=self._sent_offers,
            )
        except (live.UnknownOffer, live.AcksFull) as exc:
            await self._error("invalid_message", str(exc))

    async def _reaction(self, kind: str, offer_id: Any) -> None:
        assert self.session is not None
        try:
            await _db(live.offer_reaction_record)(
                store_id=self.session.store_id,
                cart=self.session.cart,
                offer_id=offer_id,
                message_type=kind,
                now=timezone.now(),
                session=self.session.session_id,
            )
        except live.UnknownOffer as exc:
            await self._error("invalid_message", str(exc))

    async def offer_push(self, message: dict[str, Any]) -> None:
        """A push from another process (recovery.live.offer_push) to this cart's group."""
        await self._send_offer({"type": "offer", **message["offer"]})

    async def _send_offer(self, frame: dict[str, Any]) -> None:
        """Send an offer frame and remember its id: only offers a socket was sent can be acked
        on it (security review 2, finding 9)."""
        offer_id = frame.get("id")
        if isinstance(offer_id, str):
            self._sent_offers.pop(offer_id, None)
            self._sent_offers[offer_id] = None
            if len(self._sent_offers) > SENT_OFFERS_MAX:
                del self._sent_offers[next(iter(self._sent_offers))]
        await self._send(frame)

    async def _error(self, code: str, message: str, **extra: Any) -> None:
        await self._send({"type": "error", "code": code, "message": message, **extra})

    async def _send(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload, default=str))
