"""One shared sender to the channel layer for synchronous code (projectors, workers).

``async_to_sync(group_send)`` from sync code makes an event loop per call and, with
channels-redis, "Event loop is closed" errors unless each call closes its pools (PITFALLS,
channels_redis #332). Instead, each process keeps one event loop in a daemon thread with one
channel layer of its own, for the life of the process (a new one after a fork); every push of the
process goes through it. Pushes are at-most-once, as the channel layer is: their readers re-fetch
on reconnect (the dashboards' snapshot, the shopper socket's pending offers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Sequence
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

Message = tuple[str, dict[str, Any]]  # (group, channel-layer message)


class Sender:
    def __init__(self, name: str = "channel-push") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0
        self._layer: Any = None

    def _loop_get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # none yet, or forked since
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name=self._name, daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
                # A layer of our own: its Redis pools live on our loop and nobody closes them.
                self._layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
            return self._loop

    def send(self, messages: Sequence[Message], *, timeout: float) -> None:
        """group_send each (group, message) in turn on the sender's loop; wait for them, at
        most ``timeout`` seconds (then raise TimeoutError)."""
        if not messages:
            return
        future = asyncio.run_coroutine_threadsafe(self._group_sends(messages), self._loop_get())
        try:
            future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    async def _group_sends(self, messages: Sequence[Message]) -> None:
        for group, message in messages:
            await self._layer.group_send(group, message)


SENDER = Sender()


def group_send(messages: Sequence[Message], *, timeout: float = 2.0) -> None:
    """Send through the process's shared sender."""
    SENDER.send(messages, timeout=timeout)
