"""A real SMTP server on loopback for tests (aiosmtpd): it accepts every message and keeps it.

    with SmtpSink() as sink:
        ...send mail to sink.host:sink.port...
        [received] = sink.wait_for(1)
        received.message["Subject"], received.rcpt_tos

Messages are parsed with the modern email policy (``email.message.EmailMessage``). Safe to use
from any thread: the server runs in its own.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    arrived_at: float  # time.monotonic() in this process when the DATA command completed


# aiosmtpd logs every SMTP command at INFO.
logging.getLogger("mail.log").setLevel(logging.WARNING)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        # SMTP carries CRLF line ends; parsed as a message read from a file, parts end in "\n".
        message = BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))
        assert isinstance(message, EmailMessage)
        self._sink._add(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(str(r) for r in envelope.rcpt_tos),
                message=message,
                raw=raw,
                arrived_at=time.monotonic(),
            )
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server on ``host`` and a free port, started on ``__enter__``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self._controller: Controller | None = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for attempt in range(5):  # another process may take the free port before we bind it
            port = _free_port(self.host)
            controller = Controller(_Handler(self), hostname=self.host, port=port)
            try:
                controller.start()
            except Exception:
                if attempt == 4:
                    raise
                continue
            self._controller, self.port = controller, port
            return

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def _add(self, received: Received) -> None:
        with self._changed:
            self._received.append(received)
            self._changed.notify_all()

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
