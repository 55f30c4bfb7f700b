"""A real SMTP server on loopback for tests (aiosmtpd): it accepts every message and keeps it.

    with SmtpSink() as sink:
        ...send mail to sink.host:sink.port...
        [received] = sink.wait_for(1)
        received.message["Subject"], received.rcpt_tos

Messages are parsed with the modern email policy (``email.message.EmailMessage``). Safe to use
from any thread: the server runs in its own.

A real relay is slower: ``SmtpSink(delay=0.15)`` answers each DATA 150 ms after the message
arrived (the relay's processing time), ``SmtpSink(stall=True)`` takes the connection and the
commands but never answers DATA (until ``release()`` or ``stop()``; stopping closes every
connection, as ``drop_connections()`` does while the sink stays up); the recipients in
``sink.refuse`` are answered 550 (no such user) at RCPT.
These are attributes that may be changed while the sink runs; a message's wait is
decided when its DATA arrives. The sink counts messages in flight (from MAIL FROM to the DATA
reply, or to RSET / the connection's end): ``in_flight`` now, ``max_in_flight`` at most, and the
same per MAIL FROM address (``max_in_flight_by_sender``); ``max_connections`` counts open
connections (``connections_opened``: every one it accepted). ``reset_counters()`` starts the
maxima again from what is in flight now.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    arrived_at: float  # time.monotonic() in this process when the message's data had arrived
    answered_at: float  # ... when the sink answered its DATA (after the delay or stall)


# aiosmtpd logs every SMTP command at INFO.
logging.getLogger("mail.log").setLevel(logging.WARNING)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self._sink._begin(session, address)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.lower() in self._sink.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self._sink._end(session)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        sink = self._sink
        try:
            raw = bytes(envelope.original_content or envelope.content)
            # SMTP carries CRLF line ends; parsed as a message read from a file, parts end in "\n".
            message = BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))
            assert isinstance(message, EmailMessage)
            arrived_at = time.monotonic()
            if sink.stall:
                await sink._released().wait()
            elif sink.delay > 0:
                await asyncio.sleep(sink.delay)
            sink._add(
                Received(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=tuple(str(r) for r in envelope.rcpt_tos),
                    message=message,
                    raw=raw,
                    arrived_at=arrived_at,
                    answered_at=time.monotonic(),
                )
            )
            return "250 Message accepted for delivery"
        finally:
            sink._end(session)


class _Controller(Controller):
    def __init__(self, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(_Handler(sink), **kwargs)
        self._sink = sink

    def factory(self) -> SMTP:
        return _Server(self._sink, self.handler, **self.SMTP_kwargs)


class _Server(SMTP):
    """aiosmtpd's server, telling the sink when a connection opens and closes."""

    def __init__(self, sink: SmtpSink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # not the second call of a STARTTLS
        super().connection_made(transport)
        if first:
            self._sink._opened(self, transport)

    def connection_lost(self, error: Exception | None) -> None:
        session = self.session
        super().connection_lost(error)
        self._sink._closed(self, session)


class SmtpSink:
    """An SMTP server on ``host`` and a free port, started on ``__enter__``."""

    def __init__(self, host: str = "127.0.0.1", *, delay: float = 0.0, stall: bool = False) -> None:
        self.host = host
        self.port = 0
        self.delay = delay  # seconds before each DATA is answered
        self.stall = stall  # never answer DATA (until release() or stop())
        self.refuse: set[str] = set()  # recipients (lower case) answered 550 at RCPT
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self._controller: _Controller | None = None
        self._release: asyncio.Event | None = None  # made in the server's loop
        # Counters, under self._changed.
        self._in_flight: dict[int, str] = {}  # id(session) -> MAIL FROM
        self._max_in_flight = 0
        self._max_by_sender: Counter[str] = Counter()
        self._transports: dict[int, asyncio.BaseTransport] = {}
        self._max_connections = 0
        self._opened_total = 0

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for attempt in range(5):  # another process may take the free port before we bind it
            port = _free_port(self.host)
            controller = _Controller(self, hostname=self.host, port=port)
            try:
                controller.start()
            except Exception:
                if attempt == 4:
                    raise
                continue
            self._controller, self.port = controller, port
            return

    def stop(self) -> None:
        """Stop the server; the connections still open (stalled ones too) are closed."""
        controller = self._controller
        if controller is None:
            return
        self.drop_connections()
        self._controller = None
        controller.stop()

    def drop_connections(self) -> None:
        """Close every open connection, as a server does with idle ones; the sink stays up."""
        controller = self._controller
        if controller is None:
            return
        closed = threading.Event()

        def close_all() -> None:
            with self._changed:
                transports = list(self._transports.values())
            for transport in transports:
                transport.close()
            closed.set()

        controller.loop.call_soon_threadsafe(close_all)
        closed.wait(5)

    def release(self) -> None:
        """End a stall: the stalled messages are answered (accepted) now, later ones at once."""
        self.stall = False
        controller = self._controller
        if controller is not None:
            controller.loop.call_soon_threadsafe(self._released().set)

    def _released(self) -> asyncio.Event:
        # Only called in the server's loop (handle_DATA, or via call_soon_threadsafe).
        if self._release is None or self._release.is_set():
            self._release = asyncio.Event()
        return self._release

    def _add(self, received: Received) -> None:
        with self._changed:
            self._received.append(received)
            self._changed.notify_all()

    # Counters (called from the server's thread).

    def _begin(self, session: Any, mail_from: str) -> None:
        with self._changed:
            self._in_flight[id(session)] = mail_from
            self._max_in_flight = max(self._max_in_flight, len(self._in_flight))
            now = sum(1 for s in self._in_flight.values() if s == mail_from)
            self._max_by_sender[mail_from] = max(self._max_by_sender[mail_from], now)

    def _end(self, session: Any) -> None:
        with self._changed:
            self._in_flight.pop(id(session), None)

    def _opened(self, server: _Server, transport: asyncio.BaseTransport) -> None:
        with self._changed:
            self._transports[id(server)] = transport
            self._opened_total += 1
            self._max_connections = max(self._max_connections, len(self._transports))

    def _closed(self, server: _Server, session: Any) -> None:
        with self._changed:
            self._transports.pop(id(server), None)
            if session is not None:
                self._in_flight.pop(id(session), None)

    @property
    def in_flight(self) -> int:
        """Messages whose MAIL FROM was accepted and whose DATA is not answered yet."""
        with self._changed:
            return len(self._in_flight)

    @property
    def max_in_flight(self) -> int:
        with self._changed:
            return self._max_in_flight

    @property
    def max_in_flight_by_sender(self) -> dict[str, int]:
        """The most messages in flight at once per MAIL FROM address."""
        with self._changed:
            return dict(self._max_by_sender)

    @property
    def connections(self) -> int:
        with self._changed:
            return len(self._transports)

    @property
    def connections_opened(self) -> int:
        """Connections accepted since the sink started."""
        with self._changed:
            return self._opened_total

    @property
    def max_connections(self) -> int:
        with self._changed:
            return self._max_connections

    def reset_counters(self) -> None:
        with self._changed:
            self._max_in_flight = len(self._in_flight)
            self._max_by_sender = Counter()
            for sender in self._in_flight.values():
                self._max_by_sender[sender] += 1
            self._max_connections = len(self._transports)

    @property
    def received(self) -> list[Received]:
        """A snapshot of what arrived so far, in arrival order."""
        with self._changed:
            return list(self._received)

    @property
    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.received]

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``n`` messages have arrived; all of them. TimeoutError if not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._received)} of {n} messages arrived within {timeout}s"
                    )
                self._changed.wait(left)
            return list(self._received)

    def clear(self) -> None:
        with self._changed:
            self._received.clear()
