"""Outbound webhooks: made from the log by the projector, signed as Standard Webhooks says, sent by
the task function to a real HTTP receiver on 127.0.0.1 that succeeds, fails, stalls or redirects
on demand, retried with backoff (``now`` injected), taken over after a lost lease."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone

from campaigns import events as campaign_events
from carts import projectors, services
from carts.sources import Source
from integrations import outbound
from integrations.models import Endpoint, OutboundAttempt, OutboundDelivery
from tests.campaigns.builders import campaign_with_tiers
from tests.conftest import item, new_event

# -- a webhook receiver on loopback --------------------------------------------------------------


class Receiver:
    """An HTTP server in a thread: records every request; answers with the next planned
    behaviour ("ok", a status code, "stall" past the client's timeout, "redirect"), else 204."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.plan: list[Any] = []
        self.stall_seconds = 1.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                how = receiver.plan.pop(0) if receiver.plan else 204
                if how == "stall":
                    time.sleep(receiver.stall_seconds)
                    how = 204
                if how == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://169.254.169.254/latest")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(int(how))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/cart"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


# -- a receiver's verification, written from the Standard Webhooks spec --------------------------


def spec_verify(
    secret: str, headers: dict[str, str], body: bytes, *, now: datetime, tolerance: int = 300
) -> bool:
    """Standard Webhooks, "Verifying signatures": key = base64-decoded secret after ``whsec_``;
    signed content ``{id}.{timestamp}.{body}``; HMAC-SHA256; any of the space-delimited ``v1,``
    signatures matches in constant time; the timestamp within the tolerance."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(now.timestamp() - int(ts)) > tolerance:
        return False
    content = f"{msg_id}.{ts}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest())
    for candidate in headers["webhook-signature"].split(" "):
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected):
            return True
    return False


# -- log events through the append service -------------------------------------------------------


def _cart(store_id: int) -> str:
    token = f"c-{uuid.uuid4().hex[:10]}"
    services.events_append(
        store_id=store_id,
        source=Source.server("test"),
        events=[
            new_event("cart.item_added", token, item(unit_price=4500), at=timezone.now()),
            new_event(
                "checkout.contact_captured", token, {"email": "ana@example.com"}, at=timezone.now()
            ),
        ],
    )
    return token


def _system(store_id: int, cart: str, type: str, data: Any, at: datetime) -> None:
    services.events_append(
        store_id=store_id,
        source=Source.system("campaigns"),
        events=[campaign_events.campaign_event(cart=cart, type=type, data=data, now=at)],
    )


def _order(store_id: int, cart: str, at: datetime, coupon: str | None = None) -> None:
    data: dict[str, Any] = {"order_id": f"o-{cart}", "total": 4500, "currency": "EUR"}
    if coupon:
        data["coupon"] = coupon
    services.events_append(
        store_id=store_id,
        source=Source.server("test"),
        events=[new_event("order.placed", cart, data, at=at)],
    )


def _project() -> None:
    projectors.projector_catch_up(name=outbound.NAME)


def _enrolled(store_id: int, cart: str, at: datetime) -> None:
    _system(
        store_id,
        cart,
        campaign_events.ENROLLED,
        {
            "campaign": 7,
            "holdout": False,
            "score": 0.8,
            "value": 4500,
            "abandoned_at": at.isoformat(),
            "steps": [],
        },
        at,
    )


def _half() -> float:
    return 0.5  # no jitter


# -- delivered once, signed ----------------------------------------------------------------------


def test_an_abandoned_cart_is_delivered_once_with_a_signature_the_spec_accepts(store, receiver):
    endpoint = outbound.endpoint_create(store_id=store.pk, url=receiver.url)
    cart = _cart(store.pk)
    at = timezone.now()
    _enrolled(store.pk, cart, at)

    _project()
    _project()  # a second run makes nothing new
    now = timezone.now()
    counts = outbound.deliveries_send(now=lambda: now, rand=_half)
    again = outbound.deliveries_send(now=lambda: now + timedelta(hours=1), rand=_half)

    assert counts == {"claimed": 1, "delivered": 1, "retrying": 0, "failed": 0, "lost": 0}
    assert again["claimed"] == 0
    [request] = receiver.requests
    delivery = OutboundDelivery.objects.get(endpoint=endpoint)
    assert request["path"] == "/hooks/cart"
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["webhook-id"] == delivery.webhook_id
    assert delivery.webhook_id.startswith("msg_")
    assert request["headers"]["webhook-timestamp"] == str(int(now.timestamp()))
    secret = outbound.endpoint_secret(endpoint)
    assert spec_verify(secret, request["headers"], request["body"], now=now) is True
    assert json.loads(request["body"]) == {
        "type": "cart.abandoned",
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "data": {
            "store": store.pk,
            "cart": cart,
            "campaign": 7,
            "holdout": False,
            "value": 4500,
            "abandoned_at": at.isoformat(),
            "score": 0.8,
        },
    }
    assert b"ana@example.com" not in request["body"]
    assert (delivery.status, delivery.attempts, delivery.finished_at) == ("delivered", 1, now)
    assert list(delivery.tries.values_list("status_code", "error")) == [(204, "")]


def test_a_tampered_body_or_another_endpoints_secret_fails_the_spec_check(store, receiver):
    endpoint = outbound.endpoint_create(store_id=store.pk, url=receiver.url)
    other = outbound.endpoint_create(store_id=store.pk, url=receiver.url + "/2")
    _enrolled(store.pk, _cart(store.pk), timezone.now())
    _project()
    now = timezone.now()
    outbound.deliveries_send(now=lambda: now)
    by_id = {d.webhook_id: d.endpoint_id for d in OutboundDelivery.objects.all()}
    request = next(r for r in receiver.requests if by_id[r["headers"]["webhook-id"]] == endpoint.pk)
    secret = outbound.endpoint_secret(endpoint)

    tampered = request["body"].replace(b'"value":4500', b'"value":1')

    assert spec_verify(secret, request["headers"], request["body"], now=now) is True
    assert spec_verify(secret, request["headers"], tampered, now=now) is False
    assert (
        spec_verify(outbound.endpoint_secret(other), request["headers"], request["body"], now=now)
        is False
    )
    assert (
        spec_verify(secret, request["headers"], request["body"], now=now + timedelta(hours=1))
        is False
    )


def test_the_secret_is_derived_from_the_nonce_and_rotating_changes_it(store, settings):
    endpoint = outbound.endpoint_create(store_id=store.pk, url="https://hooks.example/x")
    key = hmac.new(
        settings.SECRET_KEY.encode(),
        f"endpoint:{endpoint.pk}:{endpoint.secret_nonce}".encode(),
        hashlib.sha256,
    ).digest()
    first = outbound.endpoint_secret(endpoint)

    outbound.endpoint_update(endpoint=Endpoint.objects.get(pk=endpoint.pk), rotate_secret=True)
    rotated = outbound.endpoint_secret(Endpoint.objects.get(pk=endpoint.pk))

    assert first == "whsec_" + base64.b64encode(key).decode()
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    assert rotated != first and rotated.startswith("whsec_")


# -- retries, timeouts, leases ---------------------------------------------------------------------


def test_a_500_is_retried_after_the_backoff_with_the_same_webhook_id(store, receiver):
    outbound.endpoint_create(store_id=store.pk, url=receiver.url)
    _enrolled(store.pk, _cart(store.pk), timezone.now())
    _project()
    receiver.plan = [500]
    t0 = timezone.now()

    first = outbound.deliveries_send(now=lambda: t0, rand=_half)
    delivery = OutboundDelivery.objects.get()
    early = outbound.deliveries_send(now=lambda: t0 + timedelta(seconds=4), rand=_half)
    later = outbound.deliveries_send(now=lambda: t0 + timedelta(seconds=5), rand=_half)

    assert first == {"claimed": 1, "delivered": 0, "retrying": 1, "failed": 0, "lost": 0}
    assert (delivery.status, delivery.next_attempt_at) == ("pending", t0 + timedelta(seconds=5))
    assert early["claimed"] == 0
    assert later["delivered"] == 1
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert ids == [delivery.webhook_id, delivery.webhook_id]
    tries = OutboundAttempt.objects.filter(delivery=delivery).order_by("at")
    assert list(tries.values_list("status_code", "error")) == [(500, "HTTP 500"), (204, "")]


def test_the_backoff_follows_the_schedule_with_bounded_jitter():
    assert outbound.retry_delay(1, rand=_half) == timedelta(seconds=5)
    assert outbound.retry_delay(2, rand=_half) == timedelta(minutes=5)
    assert outbound.retry_delay(4, rand=_half) == timedelta(hours=2)
    assert outbound.retry_delay(30, rand=_half) == timedelta(hours=24)
    assert outbound.retry_delay(1, rand=lambda: 0.0) == timedelta(seconds=4.5)
    assert outbound.retry_delay(1, rand=lambda: 1.0) == timedelta(seconds=5.5)


def test_a_stalled_endpoint_is_recorded_as_a_timed_out_attempt(store, receiver, settings):
    settings.INTEGRATIONS_HTTP_TIMEOUT = 0.3
    receiver.stall_seconds = 1.0
    receiver.plan = ["stall"]
    outbound.endpoint_create(store_id=store.pk, url=receiver.url)
    _enrolled(store.pk, _cart(store.pk), timezone.now())
    _project()
    t0 = timezone.now()

    counts = outbound.deliveries_send(now=lambda: t0, rand=_half)

    delivery = OutboundDelivery.objects.get()
    [attempt] = delivery.tries.all()
    assert counts["retrying"] == 1
    assert (attempt.status_code, attempt.error) == (None, "timed out after 0.3 s")
    assert 250 <= attempt.duration_ms < 1000
    assert (delivery.status, delivery.attempts) == ("pending", 1)


def test_a_crash_between_claim_and_record_is_sent_again_after_the_lease(store, receiver):
    outbound.endpoint_create(store_id=store.pk, url=receiver.url)
    _enrolled(store.pk, _cart(store.pk), timezone.now())
    _project()
    t0 = timezone.now()
    ids, lost_lease = outbound.deliveries_claim(now=t0)  # the worker dies here

    held = outbound.deliveries_send(now=lambda: t0 + timedelta(seconds=5))
    after = t0 + timedelta(seconds=outbound.lease_seconds() + 2)
    taken = outbound.deliveries_send(now=lambda: after)
    late = outbound.delivery_record(
        delivery_id=ids[0],
        lease=lost_lease,
        outcome=outbound.Outcome(204, "", 1),
        at=t0,
        now=after,
    )

    delivery = OutboundDelivery.objects.get()
    assert held["claimed"] == 0
    assert taken == {"claimed": 1, "delivered": 1, "retrying": 0, "failed": 0, "lost": 0}
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [delivery.webhook_id]
    assert late is None
    assert delivery.tries.count() == 1


def test_410_gone_fails_the_delivery_and_disables_the_endpoint(store, receiver):
    endpoint = outbound.endpoint_create(store_id=store.pk, url=receiver.url)
    _enrolled(store.pk, _cart(store.pk), timezone.now())
    _project()
    receiver.plan = [410]

    outbound.deliveries_send(now=timezone.now)

    endpoint.refresh_from_db()
    assert OutboundDelivery.objects.get().status == "failed"
    assert endpoint.active is False


def test_the_last_attempt_fails_the_delivery_and_retry_now_sends_it_again(
    store, receiver, settings
):
    settings.INTEGRATIONS_OUTBOUND_ATTEMPTS = 2
    outbound.endpoint_create(store_id=store.pk, url=receiver.url)
    _enrolled(store.pk, _cart(store.pk), timezone.now())
    _project()
    receiver.plan = [503, 503]
    t0 = timezone.now()

    outbound.deliveries_send(now=lambda: t0, rand=_half)
    outbound.deliveries_send(now=lambda: t0 + timedelta(seconds=5), rand=_half)
    failed = OutboundDelivery.objects.get()
    retried = outbound.deliveries_retry(
        store_ids=[store.pk], ids=[failed.pk], now=t0 + timedelta(minutes=1)
    )
    counts = outbound.deliveries_send(now=lambda: t0 + timedelta(minutes=1), rand=_half)

    assert (failed.status, failed.attempts) == ("failed", 2)
    assert retried == 1
    assert counts["delivered"] == 1
    assert OutboundAttempt.objects.filter(delivery=failed).count() == 3


def test_a_redirect_is_not_followed(store, receiver):
    outbound.endpoint_create(store_id=store.pk, url=receiver.url)
    _enrolled(store.pk, _cart(store.pk), timezone.now())
    _project()
    receiver.plan = ["redirect"]

    outbound.deliveries_send(now=timezone.now, rand=_half)

    [attempt] = OutboundAttempt.objects.all()
    assert len(receiver.requests) == 1
    assert (attempt.status_code, attempt.error) == (
        302,
        "redirect not followed (update the endpoint's URL)",
    )


def test_one_stalled_endpoint_does_not_hold_up_another(store, receiver, settings):
    settings.INTEGRATIONS_HTTP_TIMEOUT = 2.0
    receiver.stall_seconds = 1.0
    with Receiver() as fast:
        outbound.endpoint_create(store_id=store.pk, url=receiver.url)
        outbound.endpoint_create(store_id=store.pk, url=fast.url)
        receiver.plan = ["stall"]
        _enrolled(store.pk, _cart(store.pk), timezone.now())
        _project()
        started = time.monotonic()

        counts = outbound.deliveries_send(now=timezone.now)

        took = time.monotonic() - started
        assert counts["delivered"] == 2
        assert took < 1.9  # in parallel: about one stall, not one after the other
        assert len(fast.requests) == 1


# -- what the log becomes ---------------------------------------------------------------------


def _types_sent(store_id: int) -> list[tuple[str, dict[str, Any]]]:
    rows = OutboundDelivery.objects.filter(store_id=store_id).order_by("position")
    return [(d.event_type, d.payload["data"]) for d in rows]


def test_an_order_after_a_sent_step_within_the_window_is_a_recovered_cart(store):
    campaign = campaign_with_tiers(store.pk, activated_at=timezone.now(), attribution_hours=2)
    outbound.endpoint_create(store_id=store.pk, url="https://hooks.example/a")
    recovered, late, in_flight = _cart(store.pk), _cart(store.pk), _cart(store.pk)
    now = timezone.now()
    step = {
        "step": 1,
        "campaign": campaign.pk,
        "tier": 3,
        "position": 1,
        "channel": "discount",
        "coupon": "SAVE-1",
        "message_id": "<m@x>",
        "reason": "sent",
    }
    _system(store.pk, recovered, campaign_events.STEP_SENT, step, now - timedelta(hours=1))
    _system(store.pk, late, campaign_events.STEP_SENT, step, now - timedelta(hours=3))
    _system(
        store.pk,
        in_flight,
        campaign_events.STEP_SENT,
        {**step, "reason": "in_flight_at_order"},
        now - timedelta(minutes=1),
    )
    for cart in (recovered, late, in_flight):
        _order(store.pk, cart, now, coupon="SAVE-1")

    _project()

    recoveries = [d for t, d in _types_sent(store.pk) if t == "cart.recovered"]
    assert recoveries == [
        {
            "store": store.pk,
            "cart": recovered,
            "order_id": f"o-{recovered}",
            "total": 4500,
            "currency": "EUR",
            "coupon": "SAVE-1",
            "recovered_by": "step",
            "step": {
                "step": 1,
                "campaign": campaign.pk,
                "tier": 3,
                "position": 1,
                "channel": "discount",
                "coupon": "SAVE-1",
            },
        }
    ]
    sent = [d for t, d in _types_sent(store.pk) if t == "campaign.step_sent"]
    assert sent[0] == {
        "store": store.pk,
        "cart": recovered,
        "step": 1,
        "campaign": campaign.pk,
        "tier": 3,
        "position": 1,
        "channel": "discount",
        "coupon": "SAVE-1",
    }
    assert sent[2]["reason"] == "in_flight_at_order"


def test_an_accepted_offer_and_a_redeemed_coupon_are_sent_without_personal_data(store):
    outbound.endpoint_create(store_id=store.pk, url="https://hooks.example/a")
    cart = _cart(store.pk)
    now = timezone.now()
    offer = {
        "id": "of-1",
        "kind": "percent_discount",
        "percent": 10,
        "discount_cap": None,
        "discount_code": "TEN-1",
        "discount_amount": 450,
        "currency": "EUR",
        "headline": "Hi Ana",
        "expires_at": now.isoformat(),
    }
    services.events_append(
        store_id=store.pk,
        source=Source.system("recovery"),
        events=[
            services.NewEvent(
                event_id=uuid.uuid4(),
                cart=cart,
                type="recovery.offer_decided",
                schema_version=1,
                occurred_at=now - timedelta(minutes=2),
                data={"decision": "offer", "campaign": None, "tier": 4, "offer": offer},
            ),
            services.NewEvent(
                event_id=uuid.uuid4(),
                cart=cart,
                type="recovery.offer_accepted",
                schema_version=1,
                occurred_at=now - timedelta(minutes=1),
                data={"offer_id": "of-1"},
            ),
        ],
    )
    _system(
        store.pk,
        cart,
        campaign_events.COUPON_REDEEMED,
        {
            "code": "TEN-1",
            "order_id": "o-9",
            "kind": "percent",
            "amount": 10,
            "currency": "EUR",
            "cart_value": 4500,
            "discount_applied": 450,
        },
        now,
    )
    _order(store.pk, cart, now + timedelta(seconds=1))

    _project()

    sent = _types_sent(store.pk)
    assert [t for t, _ in sent] == ["offer.accepted", "coupon.redeemed", "cart.recovered"]
    assert sent[0][1] == {
        "store": store.pk,
        "cart": cart,
        "offer_id": "of-1",
        "campaign": None,
        "tier": 4,
        "kind": "percent_discount",
        "percent": 10,
        "discount_cap": None,
        "discount_code": "TEN-1",
        "discount_amount": 450,
        "currency": "EUR",
        "expires_at": now.isoformat(),
    }
    assert sent[1][1] == {
        "store": store.pk,
        "cart": cart,
        "code": "TEN-1",
        "order_id": "o-9",
        "kind": "percent",
        "amount": 10,
        "currency": "EUR",
        "cart_value": 4500,
        "discount_applied": 450,
    }
    assert sent[2][1]["recovered_by"] == "offer"
    assert sent[2][1]["offer"]["id"] == "of-1"
    assert "ana" not in json.dumps([d for _, d in sent]).lower()


def test_endpoints_get_only_their_types_and_their_stores_events(store, credentials):
    from carts.services import store_create

    other = store_create(name="Other", domain="other.example")
    only_redeemed = outbound.endpoint_create(
        store_id=store.pk, url="https://hooks.example/r", event_types=["coupon.redeemed"]
    )
    inactive = outbound.endpoint_create(store_id=store.pk, url="https://hooks.example/i")
    outbound.endpoint_update(endpoint=inactive, active=False)
    elsewhere = outbound.endpoint_create(store_id=other.store_id, url="https://hooks.example/o")
    cart = _cart(store.pk)
    _enrolled(store.pk, cart, timezone.now())
    _system(store.pk, cart, campaign_events.COUPON_REDEEMED, {"code": "A"}, timezone.now())

    _project()

    assert list(
        OutboundDelivery.objects.filter(endpoint=only_redeemed).values_list("event_type", flat=True)
    ) == ["coupon.redeemed"]
    assert OutboundDelivery.objects.filter(endpoint__in=[inactive, elsewhere]).count() == 0


def test_an_event_it_cannot_read_is_skipped_and_a_rebuild_sends_nothing_again(store, receiver):
    endpoint = outbound.endpoint_create(store_id=store.pk, url=receiver.url)
    cart = _cart(store.pk)
    _system(store.pk, cart, campaign_events.STEP_SENT, ["not", "an", "object"], timezone.now())
    _system(store.pk, cart, campaign_events.ENROLLED, {"campaign": 1}, timezone.now())
    _project()
    outbound.deliveries_send(now=timezone.now)

    projectors.projector_rebuild(name=outbound.NAME)
    counts = outbound.deliveries_send(now=lambda: timezone.now() + timedelta(days=1))

    types = list(
        OutboundDelivery.objects.filter(endpoint=endpoint)
        .order_by("position")
        .values_list("event_type", "status")
    )
    assert types == [("campaign.step_sent", "delivered"), ("cart.abandoned", "delivered")]
    assert counts["claimed"] == 0
    assert len(receiver.requests) == 2


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.example.com/cart?x=1", True),
        ("http://127.0.0.1:8000/hook", True),
        ("ftp://hooks.example.com/", False),
        ("https://user:pw@hooks.example.com/", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://metadata.google.internal/computeMetadata", False),
        ("https://hooks.example.com/a b", False),
        ("https://hooks.example.com:70000/", False),
        ("https://hooks.example.com/#frag", False),
    ],
)
def test_endpoint_urls(url, ok):
    assert (outbound.url_problem(url) is None) is ok
