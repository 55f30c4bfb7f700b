"""What the simulator counts, and the shop server's side: events sent to ``POST /api/v1/events`` in
batches, as a shop's backend buffers them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from dashboards.simulator.client import Http, HttpError, Response

EVENTS_PATH = "/api/v1/events"
RETRIES = 4
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_DETAILS = 3  # example messages kept per kind of error

_Item = tuple[dict[str, Any], "asyncio.Future[dict[str, Any] | None]"]


class Stats:
    """Counts of what the server accepted (so they can be checked against the log) and of what
    went wrong, by kind. Bad answers are counted here, never raised."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.details: dict[str, list[str]] = {}
        self.money: dict[str, Counter[str]] = {
            "revenue": Counter(),
            "discount": Counter(),
            "refunded": Counter(),
        }
        self.carts: set[str] = set()
        self.started = time.monotonic()

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def appended(self, cart: str, type: str, *, duplicate: bool) -> None:
        self.carts.add(cart)
        if not duplicate:
            self.events[type] += 1

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        kept = self.details.setdefault(kind, [])
        if detail and len(kept) < MAX_DETAILS:
            kept.append(detail[:300])

    def as_dict(self) -> dict[str, Any]:
        seconds = max(time.monotonic() - self.started, 1e-9)
        events = sum(self.events.values())
        c = self.counts
        return {
            "shoppers": c["shoppers"],
            "journeys_finished": c["finished"],
            "carts": len(self.carts),
            "sessions": c["sessions"],
            "grants": c["grants"],
            "events": events,
            "events_by_type": dict(sorted(self.events.items())),
            "batches": c["batches"],
            "exit_intents": self.events["shopper.exit_intent"],
            "offers_received": c["offers_received"],
            "offers_shown": c["offers_shown"],
            "offers_accepted": c["offers_accepted"],
            "offers_dismissed": c["offers_dismissed"],
            "abandoned": c["abandoned"],
            "mailbox_checks": c["mailbox_checks"],
            "emails_seen": c["emails_seen"],
            "codes_seen": c["codes_seen"],
            "returned": c["returned"],
            "returned_after_email": c["returned_after_email"],
            "returned_with_code": c["returned_with_code"],
            "orders": c["orders"],
            "orders_on_return": c["orders_on_return"],
            "refunds": c["refunds"],
            "codes_redeemed": c["codes_redeemed"],
            "codes_refused": c["codes_refused"],
            "revenue": dict(self.money["revenue"]),
            "discount": dict(self.money["discount"]),
            "refunded": dict(self.money["refunded"]),
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(sorted(self.errors.items())),
            "error_examples": {k: v[0] for k, v in sorted(self.details.items()) if v},
            "seconds": round(seconds, 3),
            "events_per_second": round(events / seconds, 2),
        }


def _rejected_indexes(body: Any) -> dict[int, str]:
    """The events a 400 names: ``{"code": "event_rejected", "index": 2, ...}`` or field errors
    keyed by index, ``{"events": {"1": {...}}}`` (docs/api.md)."""
    if not isinstance(body, dict):
        return {}
    if isinstance(body.get("index"), int):
        return {body["index"]: str(body.get("code") or "rejected")}
    errors = body.get("events")
    if isinstance(errors, dict):
        return {int(k): "invalid" for k in errors if str(k).isdigit()}
    return {}


class Outbox:
    """Server-side events, sent in batches of up to ``size``: while one batch is on its way, the
    events submitted meanwhile gather for the next (so an idle shop sends at once and a busy one
    in batches). One batch at a time, so each cart's events arrive in the order they were
    submitted. A batch is all or nothing on the server: an event it refuses is dropped (and
    counted) and the rest sent again; 429 and 5xx are retried with backoff."""

    def __init__(self, http: Http, secret_key: str, stats: Stats, *, size: int = 100) -> None:
        self._http = http
        self._headers = {"Authorization": f"Bearer {secret_key}"}
        self._stats = stats
        self._size = size
        self._queue: list[_Item] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Send one event (with its ``cart``); the server's result for it, or None when it was
        not stored."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._queue.append((event, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._queue:
            if not future.done():
                future.cancel()
        self._queue.clear()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[: self._size], self._queue[self._size :]
                await self._send(batch)

    def _fail(self, items: list[_Item], kind: str, detail: str) -> None:
        for _, future in items:
            self._stats.error(kind, detail)
            if not future.done():
                future.set_result(None)

    async def _send(self, batch: list[_Item]) -> None:
        pending = [(e, f) for e, f in batch if not f.done()]
        attempt = 0
        while pending:
            detail = ""
            response: Response | None = None
            self._stats.count("batches")
            try:
                response = await self._http.post(
                    EVENTS_PATH, {"events": [e for e, _ in pending]}, headers=self._headers
                )
            except HttpError as exc:
                detail = str(exc)
            if response is not None and response.status in (200, 201):
                results = (response.json() or {}).get("events") or []
                for (event, future), result in zip(pending, results, strict=False):
                    self._stats.appended(
                        event["cart"], event["type"], duplicate=bool(result.get("duplicate"))
                    )
                    if not future.done():
                        future.set_result(result)
                self._fail(pending[len(results) :], "events: short answer", "")
                return
            if response is not None and response.status == 400:
                body = response.json()
                bad = _rejected_indexes(body)
                if not bad:
                    self._fail(pending, "events 400", response.body.decode(errors="replace"))
                    return
                for index, code in bad.items():
                    if 0 <= index < len(pending):
                        kind = f"events 400 {code} ({pending[index][0]['type']})"
                        self._fail([pending[index]], kind, str(body))
                pending = [item for i, item in enumerate(pending) if i not in bad]
                continue
            if response is not None and response.status not in RETRY_STATUSES:
                kind = f"events {response.status}"
                self._fail(pending, kind, response.body.decode(errors="replace"))
                return
            attempt += 1
            if attempt >= RETRIES:
                kind = "events: unreachable" if response is None else f"events {response.status}"
                self._fail(pending, kind, detail or "gave up after retries")
                return
            delay = 0.5 * 2**attempt
            if response is not None:
                with contextlib.suppress(ValueError):
                    delay = max(delay, float(response.headers.get("retry-after", "0")))
            await asyncio.sleep(delay)


def progress_line(s: dict[str, Any]) -> str:
    return (
        f"{s['shoppers']} shoppers, {s['carts']} carts, {s['events']} events, "
        f"{s['exit_intents']} exit intents, {s['offers_received']} offers "
        f"({s['offers_accepted']} accepted), {s['abandoned']} abandoned, {s['returned']} came "
        f"back, {s['orders']} orders, {s['refunds']} refunds, {s['codes_redeemed']} codes "
        f"redeemed, {s['errors']} errors"
    )
