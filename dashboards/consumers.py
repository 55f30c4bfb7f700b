"""The dashboard websocket (docs/websocket.md, "The dashboard websocket"): a marketer's live view
of one store. Authenticated by the Django session; a snapshot on connect, then the pushes of the
``dashboard_live`` projector (dashboards/live.py)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from carts import parsers
from dashboards import access, live, selectors

CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_LOGGED_IN = 4401
CLOSE_FORBIDDEN = 4403
MAX_MESSAGE_BYTES = 4096

T = TypeVar("T")
log = logging.getLogger(__name__)


def _db(fn: Callable[..., T]) -> Callable[..., Any]:
    """In the thread pool, with Django's per-call connection hygiene (as recovery.consumers)."""
    return database_sync_to_async(fn, thread_sensitive=False)  # type: ignore[no-any-return]


def store_param(query_string: bytes) -> int | None:
    """The ``store`` query parameter as a store id, or None when missing or not a number."""
    values = parse_qs(query_string.decode("latin-1")).get("store", [])
    if len(values) != 1 or not values[0].isdigit() or len(values[0]) > 18:
        return None
    return int(values[0])


def snapshot(*, store_id: int) -> dict[str, Any]:
    """The ``snapshot`` frame: the store's active carts now."""
    now = timezone.now()
    carts = selectors.live_carts(store_id, now=now)
    return {
        "type": "snapshot",
        "store": store_id,
        "server_time": now.isoformat(),
        "carts": [cart.as_dict() for cart in carts],
    }


class DashboardConsumer(AsyncWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        # Accepted first, so the close code reaches the browser (a refused handshake has none).
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_LOGGED_IN)
            return
        store_id = store_param(self.scope.get("query_string", b""))
        if store_id is None:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        if not await _db(access.can_view)(user=user, store_id=store_id):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        # Joined before the snapshot is read, so nothing falls between them; a push that
        # arrives meanwhile is handled after this method returns, that is after the snapshot.
        if self.channel_layer is not None:
            self.group = live.store_group(store_id)
            await self.channel_layer.group_add(self.group, self.channel_name)
        await self._send(await _db(snapshot)(store_id=store_id))

    async def disconnect(self, code: int) -> None:
        if self.group is not None and self.channel_layer is not None:
            # The membership expires on its own (group_expiry) if Redis is unavailable now.
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.group is None:  # closing
            return
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        message: Any = None
        if len(raw) <= MAX_MESSAGE_BYTES:
            with contextlib.suppress(ValueError):  # parsers.TooDeep too: no 500, no dropped socket
                message = parsers.loads(raw)
        if isinstance(message, dict) and message.get("type") == "ping":
            await self._send({"type": "pong", "server_time": timezone.now().isoformat()})
        else:
            await self._send(
                {"type": "error", "code": "unknown_type", "message": "Only 'ping' is understood."}
            )

    async def dashboards_events(self, message: dict[str, Any]) -> None:
        """A push from the ``dashboard_live`` projector: one frame per event."""
        for frame in message.get("events", ()):
            await self._send(frame)

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))
