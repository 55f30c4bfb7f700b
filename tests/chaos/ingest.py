"""A steady stream of events over HTTP, each answer recorded (for the fault tests)."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Answer:
    event_id: str
    status: int  # 0: no HTTP answer at all (connection refused, reset, timed out)
    retry_after: str | None
    at: float  # time.monotonic() when the answer came
    body: str


@dataclass
class Ingest:
    """``threads`` clients posting one event at a time to ``port`` until :meth:`stop`."""

    port: int
    secret_key: str
    threads: int = 2
    carts: int = 20
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Ingest:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=(n,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)

    def post(self, event_id: str, cart: str) -> Answer:
        body = json.dumps(
            {
                "id": event_id,
                "cart": cart,
                "type": "cart.item_added",
                "occurred_at": datetime.now(UTC).isoformat(),
                "data": {
                    "sku": "SKU-1",
                    "name": "Product",
                    "quantity": 1,
                    "unit_price": 1000,
                    "currency": "EUR",
                },
            }
        )
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(
                "POST",
                "/api/v1/events",
                body=body,
                headers={
                    "Authorization": f"Bearer {self.secret_key}",
                    "Content-Type": "application/json",
                },
            )
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
            return Answer(
                event_id, response.status, response.getheader("Retry-After"), time.monotonic(), text
            )
        except (OSError, http.client.HTTPException) as exc:
            return Answer(event_id, 0, None, time.monotonic(), repr(exc))
        finally:
            conn.close()

    def _run(self, n: int) -> None:
        count = 0
        while not self._stop.is_set():
            cart = f"chaos-{n}-{count % self.carts}"
            answer = self.post(str(uuid.uuid4()), cart)
            with self._lock:
                self.answers.append(answer)
            count += 1
            if answer.status != 201:
                time.sleep(0.05)  # as a client honouring Retry-After would, but quicker

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)
