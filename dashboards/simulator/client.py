"""A small asyncio HTTP/1.1 client (h11, keep-alive connections) and the shopper's websocket.

No HTTP client library is installed for asyncio; h11 (uvicorn's own HTTP parser) does the parsing,
so this is only the connection pool. Idle connections are reused for a few seconds (uvicorn closes
them after five) and a request that fails on a reused connection is sent once more on a new one:
every request the simulator makes is safe to repeat (events and coupon redemptions are
idempotent, a second ticket is merely unused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11

IDLE_SECONDS = 4.0  # below uvicorn's keep-alive timeout (5 s)
READ_CHUNK = 65536


class HttpError(Exception):
    """No answer: the connection failed, timed out, or the answer was not HTTP."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.idle_since = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Http:
    """Requests to one origin (``http://host:port`` or ``https://...``) over at most ``size``
    connections at once."""

    def __init__(self, base_url: str, *, size: int = 8, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.authority = parts.netloc
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(size)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send a request (``body`` as JSON) and read the whole answer; HttpError when none."""
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = [("Host", self.authority), ("Content-Length", str(len(payload)))]
        if body is not None:
            head.append(("Content-Type", "application/json"))
        head.extend((headers or {}).items())
        async with self._slots:
            for attempt in range(2):
                try:
                    conn, reused = await self._connection()
                except (OSError, TimeoutError) as exc:
                    raise HttpError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
                try:
                    response = await asyncio.wait_for(
                        self._exchange(conn, method, path, head, payload), self.timeout
                    )
                except (OSError, EOFError, h11.ProtocolError, TimeoutError) as exc:
                    conn.close()
                    if reused and attempt == 0 and not isinstance(exc, TimeoutError):
                        continue  # the server closed an idle connection: once more, on a new one
                    raise HttpError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
                self._release(conn)
                return response
        raise AssertionError("unreachable")

    async def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> Response:
        return await self.request("GET", path, headers=headers)

    async def post(
        self, path: str, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> Response:
        return await self.request("POST", path, body=body, headers=headers)

    async def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def _connection(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_SECONDS:
                return conn, True
            conn.close()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.host, self.port, ssl=ssl.create_default_context() if self.tls else None
            ),
            self.timeout,
        )
        return _Connection(reader, writer), False

    def _release(self, conn: _Connection) -> None:
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        path: str,
        head: list[tuple[str, str]],
        payload: bytes,
    ) -> Response:
        out = conn.h11.send(h11.Request(method=method, target=path, headers=head)) or b""
        if payload:
            out += conn.h11.send(h11.Data(data=payload)) or b""
        out += conn.h11.send(h11.EndOfMessage()) or b""
        conn.writer.write(out)
        await conn.writer.drain()
        status, headers, chunks = 0, {}, []
        while True:
            event = conn.h11.next_event()
            if event is h11.NEED_DATA:
                data = await conn.reader.read(READ_CHUNK)
                if not data:
                    raise EOFError("connection closed before the answer")
                conn.h11.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Response(status, headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise EOFError("connection closed before the answer")
            # h11.InformationalResponse (100 Continue): keep reading


class SocketClosed(Exception):
    """The websocket closed (or never opened); ``code`` is the close code when one came."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ShopperSocket:
    """One shopper's websocket (docs/websocket.md), driven one request at a time.

    A reader task sorts the server's frames: offers (and withdrawals) go to ``offers``, everything
    else answers the one message in flight (a socket's frames come in the order of its messages),
    so an ``error`` belongs to the message just sent."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self.offers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.withdrawn: set[str] = set()
        self._answers: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str, *, origin: str, ticket: str, timeout: float, source: str | None = None
    ) -> ShopperSocket:
        """Connect (from the local address ``source`` when given), say hello with the ticket and
        wait for ``welcome``."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException
        from websockets.typing import Origin

        try:
            extra: dict[str, Any] = {"local_addr": (source, 0)} if source else {}
            ws = await connect(
                url, origin=Origin(origin), open_timeout=timeout, max_queue=64, **extra
            )
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise SocketClosed(f"connect: {type(exc).__name__}: {exc}") from None
        socket = cls(ws)
        try:
            welcome = await socket.call({"type": "hello", "ticket": ticket}, timeout=timeout)
        except SocketClosed:
            await socket.close()
            raise
        if welcome.get("type") != "welcome":
            await socket.close()
            raise SocketClosed(f"expected welcome, got {welcome.get('type')!r}")
        return socket

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self._ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    frame = {"type": "error", "code": "invalid_json_from_server"}
                if not isinstance(frame, dict):
                    continue
                if frame.get("type") == "offer":
                    self.offers.put_nowait(frame)
                elif frame.get("type") == "offer.withdrawn":
                    self.withdrawn.add(str(frame.get("id")))
                else:
                    self._answers.put_nowait(frame)
        except ConnectionClosed:
            pass
        finally:
            self._answers.put_nowait(None)  # wakes a caller waiting for an answer

    async def send(self, message: dict[str, Any]) -> None:
        """A message without an answer (ack, offer reactions)."""
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(json.dumps(message, separators=(",", ":")))
        except ConnectionClosed:
            raise SocketClosed("closed", self._ws.close_code) from None

    async def call(self, message: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Send a message and return the frame answering it (``welcome``, ``appended``, ``pong``
        or ``error``)."""
        await self.send(message)
        try:
            frame = await asyncio.wait_for(self._answers.get(), timeout)
        except TimeoutError:
            raise SocketClosed(f"no answer to {message.get('type')} in {timeout}s") from None
        if frame is None:
            self._answers.put_nowait(None)
            raise SocketClosed("closed", self._ws.close_code)
        return frame

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


async def server_ready(
    url: str, *, timeout: float | None, say: Callable[[str], None], stop: asyncio.Event
) -> int:
    """Wait until ``GET /healthz`` answers 200 (or ``timeout`` seconds pass; None: no limit).
    The last status seen (0: nothing answered)."""
    http = Http(url, size=1, timeout=5.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    told = started
    status = 0
    try:
        while not stop.is_set():
            try:
                status = (await http.get("/healthz")).status
            except HttpError:
                status = 0
            if status == 200:
                return status
            now = loop.time()
            if timeout is not None and now - started >= timeout:
                return status
            if now - told >= 30:
                say(f"waiting for {url}/healthz (last answer: {status or 'none'})")
                told = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await http.close()
    return status
