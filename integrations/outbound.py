"""Outbound webhooks (Standard Webhooks, https://www.standardwebhooks.com): a store's endpoints
receive signed events made from the log, retried with backoff until delivered or given up.

1. The projector ``outbound_webhooks`` (carts/projectors.py: tailed by ``run_projectors``) maps
   log events to webhook events and writes one OutboundDelivery per matching active endpoint, in
   the projector's transaction: a crash loses none, and the unique (endpoint, position, type)
   makes a replay or a rebuild create nothing twice (so nothing delivered is sent again).
2. The scheduler job ``integrations.outbound`` (every INTEGRATIONS_OUTBOUND_SECONDS) enqueues
   the task ``integrations.outbound_send`` when deliveries are due.
3. ``deliveries_send`` (the task) claims due deliveries with FOR UPDATE SKIP LOCKED and a lease,
   commits, POSTs each outside any transaction (several at once, at most a few per endpoint, so
   one slow endpoint cannot stall the others), then records each attempt and its outcome in a
   short transaction, only where its lease is still the one it took.

Secrets are derived, never stored: ``whsec_`` + base64(HMAC-SHA256(SECRET_KEY,
"endpoint:<id>:<nonce>")); rotating draws a new nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from campaigns import events as campaign_events
from campaigns.models import Campaign
from carts import projectors
from carts.models import CartEvent
from integrations import egress
from integrations.models import Endpoint, OutboundAttempt, OutboundDelivery

log = logging.getLogger(__name__)

NAME = "outbound_webhooks"

# Log event types read here (recovery's are named, not imported: integrations never imports it).
OFFER_DECIDED = "recovery.offer_decided"
OFFER_ACCEPTED = "recovery.offer_accepted"
ORDER_PLACED = "order.placed"

# Log event -> webhook event (cart.recovered is decided from the cart's earlier events).
DIRECT = {
    campaign_events.ENROLLED: "cart.abandoned",
    campaign_events.STEP_SENT: "campaign.step_sent",
    OFFER_ACCEPTED: "offer.accepted",
    campaign_events.COUPON_REDEEMED: "coupon.redeemed",
}
# An on-site offer's window when it names no campaign (Campaign.attribution_hours' default).
DEFAULT_ATTRIBUTION_HOURS = 72

# An endpoint gets the events recorded since it was made (a rebuild does not send it the past),
# give or take this much: recorded_at and created_at come from different clocks.
CREATED_MARGIN = timedelta(seconds=60)

# Sending.
CONCURRENCY = 8  # requests in flight per batch
PER_ENDPOINT = 2  # deliveries of one endpoint per batch: a slow one holds at most this many
BATCH = 32
# Delays after the 1st, 2nd, ... failed attempt (Standard Webhooks' example schedule), then 24 h.
SCHEDULE = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
)
LAST_DELAY = timedelta(hours=24)
JITTER = 0.1  # each delay is stretched or shrunk by up to 10%
MAX_RETRY_AFTER = timedelta(hours=24)
ERROR_CHARS = 500

# What the API and admin take as an endpoint URL (the schema states this pattern): http(s), a
# DNS name or IPv4 address, an optional port, then a path and query without spaces or fragments.
_PORT = (
    r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
    r"|[1-9][0-9]{0,3}))?"
)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
URL_PATTERN = (
    rf"^https?://{_LABEL}(?:\.{_LABEL}){{0,7}}{_PORT}"
    r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$"
)
_URL_RE = re.compile(URL_PATTERN)
URL_MAX = 2048


# -- secrets and signatures --------------------------------------------------------------------


def endpoint_key(endpoint: Endpoint) -> bytes:
    """The 32 key bytes that sign the endpoint's deliveries (derived, never stored)."""
    message = f"endpoint:{endpoint.pk}:{endpoint.secret_nonce}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).digest()[:32]


def endpoint_secret(endpoint: Endpoint) -> str:
    """The secret as Standard Webhooks serialises it: ``whsec_`` + base64 of the key bytes."""
    return "whsec_" + base64.b64encode(endpoint_key(endpoint)).decode()


def signature(*, key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``."""
    signed = webhook_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The request body: minified JSON (what is signed is exactly what is sent)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# -- endpoint URLs ------------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an endpoint (None: it can). Checks the text only; the addresses
    the host resolves to are checked at each send (``address_problem``)."""
    if len(url) > URL_MAX:
        return f"Ensure this field has no more than {URL_MAX} characters."
    if not _URL_RE.match(url):
        return "Enter an http:// or https:// URL with a host name (no spaces, user or fragment)."
    host = (urlsplit(url).hostname or "").lower()
    if host in egress.BLOCKED_HOSTS or egress.address_refused(host) is not None:
        return (
            "This host is not allowed (link-local and cloud metadata addresses are refused, and "
            "private and loopback ones unless INTEGRATIONS_ALLOW_PRIVATE_URLS)."
        )
    return None


def address_problem(url: str) -> str | None:
    """Why a request to ``url`` must not leave now: its text, or an address its host resolves
    to (integrations/egress.py)."""
    problem = url_problem(url)
    if problem is not None:
        return problem
    refused = egress.host_refused(url)
    return None if refused is None else f"not sent: {refused}"


# -- mapping log events to webhook events (pure, apart from the reads ``_Context`` makes) -------


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _pick(data: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: data[k] for k in keys if k in data}


# Non-personal fields only: amounts, currency, codes, tier, channel, order id (never email,
# phone or name: docs/integrations.md).
_ENROLLED_FIELDS = ("campaign", "holdout", "value", "abandoned_at", "score")
_STEP_FIELDS = ("step", "campaign", "tier", "position", "channel", "coupon")
_OFFER_FIELDS = (
    "kind",
    "percent",
    "discount_cap",
    "discount_code",
    "discount_amount",
    "currency",
    "expires_at",
)
_REDEEMED_FIELDS = (
    "code",
    "order_id",
    "kind",
    "amount",
    "currency",
    "cart_value",
    "discount_applied",
)


@dataclass(frozen=True, slots=True)
class Touch:
    """Something sent or accepted before an order, that may have recovered the cart."""

    at: datetime
    kind: str  # "step" or "offer"
    window: timedelta
    detail: dict[str, Any]


def recovering_touch(touches: Sequence[Touch], order_at: datetime) -> Touch | None:
    """campaigns/attribution.py's rule: the last touch strictly before the order, when the order
    came within that touch's attribution window."""
    before = [t for t in touches if t.at < order_at]
    if not before:
        return None
    last = max(before, key=lambda t: t.at)
    return last if order_at - last.at <= last.window else None


class _Context:
    """Reads the mapping needs, cached for one batch."""

    def __init__(self) -> None:
        self._windows: dict[int, timedelta] = {}

    def window(self, campaign_id: Any) -> timedelta:
        if not isinstance(campaign_id, int):
            return timedelta(hours=DEFAULT_ATTRIBUTION_HOURS)
        if campaign_id not in self._windows:
            hours = (
                Campaign.objects.filter(pk=campaign_id)
                .values_list("attribution_hours", flat=True)
                .first()
            )
            self._windows[campaign_id] = timedelta(hours=hours or DEFAULT_ATTRIBUTION_HOURS)
        return self._windows[campaign_id]

    def offer(self, event: CartEvent, offer_id: Any) -> dict[str, Any]:
        """The recovery.offer_decided event data of the cart's offer ``offer_id`` ({} if none)."""
        if not isinstance(offer_id, str):
            return {}
        data = (
            CartEvent.objects.filter(
                store_id=event.store_id,
                cart=event.cart,
                type=OFFER_DECIDED,
                data__offer__id=offer_id,
                position__lt=event.position,
            )
            .values_list("data", flat=True)
            .first()
        )
        return data if isinstance(data, dict) else {}

    def touches(self, event: CartEvent) -> list[Touch]:
        rows = CartEvent.objects.filter(
            store_id=event.store_id,
            cart=event.cart,
            position__lt=event.position,
            type__in=[campaign_events.STEP_SENT, OFFER_ACCEPTED],
        ).order_by("position")
        out: list[Touch] = []
        for row in rows:
            data = row.data if isinstance(row.data, dict) else {}
            if row.type == campaign_events.STEP_SENT:
                if data.get("reason") == campaign_events.IN_FLIGHT_AT_ORDER:
                    continue
                detail = {"step": _pick(data, _STEP_FIELDS)}
                out.append(
                    Touch(row.occurred_at, "step", self.window(data.get("campaign")), detail)
                )
            else:
                decided = self.offer(row, data.get("offer_id"))
                offer = {
                    "id": data.get("offer_id"),
                    **_pick(decided.get("offer") or {}, _OFFER_FIELDS),
                }
                offer.update(_pick(decided, ("campaign", "tier")))
                window = self.window(decided.get("campaign"))
                out.append(Touch(row.occurred_at, "offer", window, {"offer": offer}))
        return out


def webhook_events(event: CartEvent, context: _Context) -> list[tuple[str, dict[str, Any]]]:
    """The webhook events (type, payload) one log event makes: none for most."""
    data = event.data if isinstance(event.data, dict) else {}
    base = {"store": event.store_id, "cart": event.cart}
    kind = DIRECT.get(event.type)
    if event.type == campaign_events.ENROLLED:
        extra = _pick(data, _ENROLLED_FIELDS)
    elif event.type == campaign_events.STEP_SENT:
        if data.get("reason") == campaign_events.IN_FLIGHT_AT_ORDER:
            extra = {**_pick(data, _STEP_FIELDS), "reason": campaign_events.IN_FLIGHT_AT_ORDER}
        else:
            extra = _pick(data, _STEP_FIELDS)
    elif event.type == OFFER_ACCEPTED:
        decided = context.offer(event, data.get("offer_id"))
        extra = {
            "offer_id": data.get("offer_id"),
            **_pick(decided, ("campaign", "tier")),
            **_pick(decided.get("offer") or {}, _OFFER_FIELDS),
        }
    elif event.type == campaign_events.COUPON_REDEEMED:
        extra = _pick(data, _REDEEMED_FIELDS)
    elif event.type == ORDER_PLACED:
        touch = recovering_touch(context.touches(event), event.occurred_at)
        if touch is None:
            return []
        kind = "cart.recovered"
        extra = {
            **_pick(data, ("order_id", "total", "currency", "coupon")),
            "recovered_by": touch.kind,
            **touch.detail,
        }
    else:
        return []
    assert kind is not None
    payload = {"type": kind, "timestamp": _iso(event.occurred_at), "data": {**base, **extra}}
    return [(kind, payload)]


def _webhook_id(endpoint_id: int, position: int, kind: str) -> str:
    """Stable for one (endpoint, event, type): a rebuild makes the same id."""
    return "msg_" + uuid.uuid5(uuid.NAMESPACE_URL, f"outbound:{endpoint_id}:{position}:{kind}").hex


def _apply(events: Sequence[CartEvent]) -> None:
    """One delivery per matching active endpoint for each mappable event; an endpoint gets the
    events recorded since it was made (CREATED_MARGIN). Events it cannot map are skipped."""
    wanted = [e for e in events if e.type in DIRECT or e.type == ORDER_PLACED]
    if not wanted:
        return
    stores = {e.store_id for e in wanted}
    endpoints: dict[int, list[Endpoint]] = {}
    for endpoint in Endpoint.objects.filter(store_id__in=stores, active=True).order_by("pk"):
        endpoints.setdefault(endpoint.store_id, []).append(endpoint)
    if not endpoints:
        return
    context = _Context()
    rows: list[OutboundDelivery] = []
    now = timezone.now()
    for event in wanted:
        targets = endpoints.get(event.store_id)
        if not targets:
            continue
        try:
            made = webhook_events(event, context)
        except Exception:
            log.exception("outbound: event at position %d (%s) skipped", event.position, event.type)
            continue
        for kind, payload in made:
            for endpoint in targets:
                if endpoint.event_types and kind not in endpoint.event_types:
                    continue
                if event.recorded_at < endpoint.created_at - CREATED_MARGIN:
                    continue
                rows.append(
                    OutboundDelivery(
                        endpoint=endpoint,
                        store_id=event.store_id,
                        webhook_id=_webhook_id(endpoint.pk, event.position, kind),
                        event_type=kind,
                        position=event.position,
                        payload=payload,
                        next_attempt_at=now,
                    )
                )
    if rows:
        OutboundDelivery.objects.bulk_create(rows, ignore_conflicts=True)


def _reset() -> None:
    """Nothing to empty: deliveries are kept (a rebuild must not send them again; the unique
    (endpoint, position, type) lets it skip those made before)."""


PROJECTOR = projectors.Projector(NAME, _apply, _reset)


# -- sending ------------------------------------------------------------------------------------


def retry_delay(attempts: int, *, rand: Callable[[], float] = random.random) -> timedelta:
    """The wait after the ``attempts``-th failed attempt, with +/- JITTER."""
    base = SCHEDULE[attempts - 1] if 1 <= attempts <= len(SCHEDULE) else LAST_DELAY
    return base * (1 + JITTER * (2 * rand() - 1))


def lease_seconds() -> float:
    """How long a claim holds: every claimed delivery starts at once (a batch is at most
    CONCURRENCY per round), and a request lasts at most a connect and a read timeout."""
    rounds = -(-BATCH // CONCURRENCY)
    return rounds * (2 * settings.INTEGRATIONS_HTTP_TIMEOUT + 5) + 30


_CLAIM = """
    WITH ranked AS (
        SELECT d.id, row_number() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at) AS n
        FROM integrations_outbounddelivery d
        JOIN integrations_endpoint e ON e.id = d.endpoint_id AND e.active
        WHERE (d.status = 'pending' AND d.next_attempt_at <= %(now)s)
           OR (d.status = 'sending' AND d.leased_until < %(now)s)
    ), mine AS (
        SELECT d.id FROM integrations_outbounddelivery d
        WHERE d.id IN (SELECT id FROM ranked WHERE n <= %(per_endpoint)s)
          AND ((d.status = 'pending' AND d.next_attempt_at <= %(now)s)
               OR (d.status = 'sending' AND d.leased_until < %(now)s))
        ORDER BY d.next_attempt_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
    UPDATE integrations_outbounddelivery d SET status = 'sending', leased_until = %(lease)s
    FROM mine WHERE d.id = mine.id
    RETURNING d.id
"""


def deliveries_due(*, now: datetime) -> bool:
    """Whether any delivery is due (the scheduler job's cheap check before enqueueing)."""
    return (
        OutboundDelivery.objects.filter(
            status=OutboundDelivery.Status.PENDING, next_attempt_at__lte=now, endpoint__active=True
        ).exists()
        or OutboundDelivery.objects.filter(
            status=OutboundDelivery.Status.SENDING, leased_until__lt=now
        ).exists()
    )


def deliveries_claim(*, now: datetime, limit: int = BATCH) -> tuple[list[int], datetime]:
    """Lease due deliveries (pending and due, or sending with the lease run out) until
    ``now + lease_seconds()``; commits before returning. Returns (ids, the lease)."""
    # Unique to this claim (microseconds): the lease is the claim's token.
    lease = now + timedelta(seconds=lease_seconds(), microseconds=random.randrange(1, 999_999))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _CLAIM, {"now": now, "lease": lease, "limit": limit, "per_endpoint": PER_ENDPOINT}
        )
        ids = sorted(row[0] for row in cursor.fetchall())
    return ids, lease


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    error: str
    duration_ms: int
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def deliver_once(
    *, url: str, webhook_id: str, key: bytes, payload: dict[str, Any], at: datetime
) -> Outcome:
    """One POST, outside any transaction: redirects are not followed, and a host that resolves
    to a blocked address is not called."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    problem = address_problem(url)
    if problem is not None:
        return Outcome(None, problem[:ERROR_CHARS], took())
    body = body_bytes(payload)
    timestamp = int(at.timestamp())
    headers = {
        "content-type": "application/json",
        "user-agent": "cart-recovery-webhooks/1",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(
            key=key, webhook_id=webhook_id, timestamp=timestamp, body=body
        ),
    }
    timeout = float(settings.INTEGRATIONS_HTTP_TIMEOUT)
    try:
        # The whole exchange within the timeout (a receiver dribbling its answer cannot hold
        # the batch, whose lease every other delivery shares), and a bounded answer.
        response = requests.post(
            url,
            data=body,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
        egress.body_read(response, deadline=started + timeout, limit=4096)
    except (requests.Timeout, egress.TooSlow):
        return Outcome(None, f"timed out after {timeout:g} s", took())
    except requests.RequestException as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS], took())
    error = ""
    if 300 <= response.status_code < 400:
        error = "redirect not followed (update the endpoint's URL)"
    elif not 200 <= response.status_code < 300:
        error = f"HTTP {response.status_code}"
    response.close()
    return Outcome(
        response.status_code,
        error,
        took(),
        egress.retry_after(
            response.headers.get("Retry-After"), cap=MAX_RETRY_AFTER.total_seconds()
        ),
    )


def delivery_record(
    *,
    delivery_id: int,
    lease: datetime,
    outcome: Outcome,
    at: datetime,
    now: datetime,
    rand: Callable[[], float] = random.random,
) -> str | None:
    """Record one attempt and its outcome, in one short transaction, if the lease is still
    ours. 2xx: delivered; 410: failed and the endpoint disabled (Standard Webhooks); anything
    else: retried after ``retry_delay`` (or Retry-After, when longer) until
    INTEGRATIONS_OUTBOUND_ATTEMPTS, then failed. Returns the new status (None: lease lost)."""
    with transaction.atomic():
        delivery = (
            OutboundDelivery.objects.select_for_update()
            .filter(pk=delivery_id, status=OutboundDelivery.Status.SENDING, leased_until=lease)
            .first()
        )
        if delivery is None:
            return None
        OutboundAttempt.objects.create(
            delivery=delivery,
            at=at,
            status_code=outcome.status_code,
            error=outcome.error[:ERROR_CHARS],
            duration_ms=outcome.duration_ms,
        )
        delivery.attempts += 1
        delivery.leased_until = None
        if outcome.ok:
            delivery.status = OutboundDelivery.Status.DELIVERED
            delivery.finished_at = now
        elif outcome.status_code == 410:
            delivery.status = OutboundDelivery.Status.FAILED
            delivery.finished_at = now
            Endpoint.objects.filter(pk=delivery.endpoint_id).update(active=False)
            log.warning("outbound: endpoint %s answered 410 Gone: disabled", delivery.endpoint_id)
        elif delivery.attempts >= settings.INTEGRATIONS_OUTBOUND_ATTEMPTS:
            delivery.status = OutboundDelivery.Status.FAILED
            delivery.finished_at = now
        else:
            delay = retry_delay(delivery.attempts, rand=rand)
            if outcome.retry_after is not None:
                delay = max(delay, min(timedelta(seconds=outcome.retry_after), MAX_RETRY_AFTER))
            delivery.status = OutboundDelivery.Status.PENDING
            delivery.next_attempt_at = now + delay
        delivery.save(
            update_fields=["attempts", "leased_until", "status", "finished_at", "next_attempt_at"]
        )
        return delivery.status


_COUNTED = {"delivered": "delivered", "pending": "retrying", "failed": "failed"}


def deliveries_send(
    *,
    now: Callable[[], datetime] = timezone.now,
    limit: int = BATCH,
    rand: Callable[[], float] = random.random,
) -> dict[str, int]:
    """Claim due deliveries, send them (CONCURRENCY at a time, no transaction open), record
    each. Idempotent under duplicate task deliveries: a claim takes what no one holds."""
    ids, lease = deliveries_claim(now=now(), limit=limit)
    counts = {"claimed": len(ids), "delivered": 0, "retrying": 0, "failed": 0, "lost": 0}
    if not ids:
        return counts
    rows = list(OutboundDelivery.objects.filter(pk__in=ids).select_related("endpoint"))
    keys = {row.endpoint_id: endpoint_key(row.endpoint) for row in rows}

    def one(row: OutboundDelivery) -> tuple[int, Outcome, datetime]:
        at = now()
        outcome = deliver_once(
            url=row.endpoint.url,
            webhook_id=row.webhook_id,
            key=keys[row.endpoint_id],
            payload=row.payload,
            at=at,
        )
        return row.pk, outcome, at

    # Each outcome is recorded as it comes, not when the slowest of the batch is done.
    with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(rows))) as pool:
        for future in as_completed([pool.submit(one, row) for row in rows]):
            delivery_id, outcome, at = future.result()
            status = delivery_record(
                delivery_id=delivery_id, lease=lease, outcome=outcome, at=at, now=now(), rand=rand
            )
            counts[_COUNTED.get(status or "", "lost")] += 1
    return counts


# -- endpoints and deliveries (API and admin) ---------------------------------------------------


def endpoint_create(
    *, store_id: int, url: str, event_types: Sequence[str] = (), description: str = ""
) -> Endpoint:
    """A new active endpoint; its secret (``endpoint_secret``) is shown to the merchant once."""
    return Endpoint.objects.create(
        store_id=store_id,
        url=url,
        event_types=_types(event_types),
        description=description,
        secret_nonce=secrets.token_hex(16),
    )


def _types(event_types: Sequence[str]) -> list[str]:
    return [t for t in Endpoint.EVENT_TYPES if t in set(event_types)]


def endpoint_update(*, endpoint: Endpoint, rotate_secret: bool = False, **fields: Any) -> Endpoint:
    """Change url, event_types, description or active; a new secret with ``rotate_secret``."""
    changed: list[str] = []
    for name in ("url", "description", "active"):
        if name in fields:
            setattr(endpoint, name, fields[name])
            changed.append(name)
    if "event_types" in fields:
        endpoint.event_types = _types(fields["event_types"])
        changed.append("event_types")
    if rotate_secret:
        endpoint.secret_nonce = secrets.token_hex(16)
        changed.append("secret_nonce")
    if changed:
        endpoint.save(update_fields=changed)
    return endpoint


def deliveries_retry(*, store_ids: Iterable[int] | None, ids: Iterable[int], now: datetime) -> int:
    """Send failed deliveries again now (they get INTEGRATIONS_OUTBOUND_ATTEMPTS more tries)."""
    rows = OutboundDelivery.objects.filter(pk__in=list(ids), status=OutboundDelivery.Status.FAILED)
    if store_ids is not None:
        rows = rows.filter(store_id__in=list(store_ids))
    return rows.update(
        status=OutboundDelivery.Status.PENDING,
        attempts=0,
        next_attempt_at=now,
        finished_at=None,
        leased_until=None,
    )


# -- wiring -------------------------------------------------------------------------------------


def enqueue() -> None:
    """The scheduler job: one send task when deliveries are due."""
    if deliveries_due(now=timezone.now()):
        from integrations.tasks import outbound_send

        outbound_send.delay()


def register() -> None:
    from carts import scheduler

    projectors.register(PROJECTOR)
    scheduler.register("integrations.outbound", settings.INTEGRATIONS_OUTBOUND_SECONDS, enqueue)
