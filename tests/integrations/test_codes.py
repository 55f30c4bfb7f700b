"""Codes made on the store's platform before they are mailed or shown (integrations/codes.py):
the discount step's email leaves only once the platform confirmed its code; a platform that
fails or throttles holds the step back, to be retried; one that refuses fails it for good; an
on-site offer shows its code only once made (made by a task after the offer commits).

The platform is a real HTTP server on loopback. Until the platform clients land
(integrations/platforms/*_api.py), ``api.code_create`` is a minimal client of that server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from campaigns import steps
from campaigns.models import Coupon, Step, Tier
from carts.models import CartEvent
from integrations import codes, services
from integrations.models import PlatformCode
from integrations.platforms import api
from tests.campaigns.conftest import T0, _campaign_step, _shop_cart
from tests.smtp_sink import SmtpSink

NOW = T0 + timedelta(hours=2)
TOKEN = "tok-very-secret-123"


class _Platform:
    """A platform's discount API on 127.0.0.1: answers from ``script`` (status, headers), then
    200; records each request (body, headers, time.monotonic())."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.requests: list[dict[str, Any]] = []
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                platform.requests.append(
                    {"body": body, "auth": self.headers["Authorization"], "at": time.monotonic()}
                )
                status, headers = platform.script.pop(0) if platform.script else (200, {})
                payload = json.dumps({"id": f"remote-{body['code']}"}).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _client(*, target: api.Target, request: api.CodeRequest, timeout: float) -> api.RemoteCode:
    """A stand-in platform client: one attempt, its answer mapped as the real clients do."""
    try:
        response = requests.post(
            f"{target.api_url}/codes",
            json={"code": request.code, "amount": request.amount, "key": request.idempotency_key},
            headers={"Authorization": f"Bearer {target.credentials['token']}"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise api.Transient(str(exc)) from exc
    if response.status_code == 429 or response.status_code >= 500:
        after = response.headers.get("Retry-After")
        raise api.Transient(
            f"HTTP {response.status_code}", retry_after=float(after) if after else None
        )
    if response.status_code >= 400:
        raise api.Permanent(f"HTTP {response.status_code}")
    return api.RemoteCode(remote_id=response.json()["id"])


@pytest.fixture
def platform(monkeypatch) -> Iterator[_Platform]:
    server = _Platform()
    monkeypatch.setattr(api, "code_create", _client)
    yield server
    server.stop()


@pytest.fixture
def smtp_sink(settings) -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = sink.host, sink.port
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        yield sink


def _connect(store_id: int, url: str, **fields: Any) -> None:
    services.connection_create(
        store_id=store_id, platform="saleor", api_url=url, credentials={"token": TOKEN}, **fields
    )


def _discount_step(store_id: int) -> Step:
    cart = _shop_cart(store_id, "cart-1")
    return _campaign_step(
        cart,
        channel=Tier.Channel.DISCOUNT,
        status=Step.Status.ENQUEUED,
        offer_kind="percent_discount",
        discount_min=10,
        discount_max=10,
        code_expiry_hours=48,
    )


def _run(step: Step, now: Any) -> dict[str, int]:
    Step.objects.filter(pk=step.pk).update(status=Step.Status.ENQUEUED)  # as the scheduler does
    return steps.steps_execute(step_ids=[step.pk], now=lambda: now)


def _types(store_id: int) -> list[str]:
    return list(
        CartEvent.objects.filter(store_id=store_id, type__startswith="campaign.")
        .order_by("version")
        .values_list("type", flat=True)
    )


def test_the_code_is_made_on_the_platform_before_the_email_leaves(db, store, platform, smtp_sink):
    _connect(store.pk, platform.url)
    step = _discount_step(store.pk)

    assert _run(step, NOW) == {"sent": 1}

    coupon = Coupon.objects.get(store=store, cart="cart-1")
    [made] = platform.requests
    code = PlatformCode.objects.get(coupon=coupon)
    assert made["body"] == {"code": coupon.code, "amount": 10, "key": str(code.idempotency_key)}
    assert made["auth"] == f"Bearer {TOKEN}"
    assert (code.state, code.remote_id, code.attempts, code.confirmed_at) == (
        "confirmed",
        f"remote-{coupon.code}",
        1,
        NOW,
    )
    [mail] = smtp_sink.wait_for(1)
    assert coupon.code in mail.raw.decode()
    assert made["at"] < mail.arrived_at  # the platform had it before the email left


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [(500, {}, "HTTP 500"), (429, {"Retry-After": "1"}, "HTTP 429")],
)
def test_a_failing_platform_holds_the_email_back_until_it_made_the_code(
    db, store, platform, smtp_sink, status, headers, error
):
    _connect(store.pk, platform.url)
    step = _discount_step(store.pk)
    platform.script = [(status, headers)]

    assert _run(step, NOW) == {"deferred": 1}

    # Deferred to the code's retry time (30 s after its first failed attempt): the step's own
    # attempts are not used; the code's bound the wait.
    step.refresh_from_db()
    assert (step.status, step.reason, step.attempts) == ("pending", "platform_pending", 0)
    assert step.due_at == NOW + timedelta(seconds=30)
    coupon = Coupon.objects.get(store=store, cart="cart-1")
    code = PlatformCode.objects.get(coupon=coupon)
    assert (code.state, code.attempts, code.last_error) == ("pending", 1, error)
    assert smtp_sink.messages == []
    assert _types(store.pk) == ["campaign.coupon_issued", "campaign.step_deferred"]
    deferred = CartEvent.objects.get(store=store, type="campaign.step_deferred")
    assert (deferred.data["reason"], deferred.data["until"]) == (
        "platform_pending",
        (NOW + timedelta(seconds=30)).isoformat(),
    )

    # tried again then: the platform answers, the same code leaves once
    assert _run(step, step.due_at) == {"sent": 1}
    keys = [r["body"]["key"] for r in platform.requests]
    assert keys == [str(code.idempotency_key)] * 2
    code.refresh_from_db()
    assert (code.state, code.attempts) == ("confirmed", 2)
    [mail] = smtp_sink.wait_for(1)
    assert coupon.code in mail.raw.decode()
    assert Coupon.objects.filter(store=store).count() == 1


def test_a_platform_down_longer_than_the_codes_attempts_fails_the_step_without_an_email(
    db, store, platform, smtp_sink, settings
):
    settings.INTEGRATIONS_CODE_ATTEMPTS = 3
    _connect(store.pk, platform.url)
    step = _discount_step(store.pk)
    platform.script = [(503, {}), (503, {}), (503, {})]

    runs = []
    for _ in range(3):
        at = step.due_at
        runs.append(_run(step, at))
        step.refresh_from_db()

    assert runs == [{"deferred": 1}, {"deferred": 1}, {"failed": 1}]
    assert (step.status, step.reason) == ("failed", "platform_refused")
    assert PlatformCode.objects.get(coupon__store=store).state == "failed"
    assert len(platform.requests) == 3
    assert smtp_sink.messages == []


def test_a_refused_code_fails_the_step_for_good_and_no_email_leaves(db, store, platform, smtp_sink):
    _connect(store.pk, platform.url)
    step = _discount_step(store.pk)
    platform.script = [(403, {})]

    assert _run(step, NOW) == {"failed": 1}

    step.refresh_from_db()
    assert (step.status, step.reason, step.finished_at) == ("failed", "platform_refused", NOW)
    code = PlatformCode.objects.get(coupon__store=store)
    assert (code.state, code.last_error) == ("failed", "HTTP 403")
    assert TOKEN not in code.last_error
    assert smtp_sink.messages == []
    assert _types(store.pk) == ["campaign.coupon_issued", "campaign.step_failed"]


def test_the_code_is_given_up_after_the_last_attempt(db, store, platform, settings):
    settings.INTEGRATIONS_CODE_ATTEMPTS = 2
    _connect(store.pk, platform.url)
    step = _discount_step(store.pk)
    platform.script = [(503, {}), (503, {})]
    _run(step, NOW)
    coupon = Coupon.objects.get(store=store)

    state = codes.code_publish(coupon, NOW + timedelta(minutes=1))  # the step runner's hook

    assert (state.usable, state.reason, state.transient) == (False, "platform_refused", False)
    code = PlatformCode.objects.get(coupon=coupon)
    assert (code.state, code.attempts) == ("failed", 2)
    assert code.last_error == "gave up after 2 attempts: HTTP 503"


def test_a_store_without_a_platform_sends_its_code_as_before(db, store, platform, smtp_sink):
    step = _discount_step(store.pk)

    assert _run(step, NOW) == {"sent": 1}

    assert platform.requests == []
    assert PlatformCode.objects.count() == 0
    smtp_sink.wait_for(1)


def test_a_store_that_keeps_codes_off_its_platform_sends_at_once(db, store, platform, smtp_sink):
    _connect(store.pk, platform.url, codes_on_platform=False)
    step = _discount_step(store.pk)

    assert _run(step, NOW) == {"sent": 1}

    assert (platform.requests, PlatformCode.objects.count()) == ([], 0)


# On-site offers ----------------------------------------------------------------------------------


def test_an_onsite_offer_shows_its_code_only_once_the_platform_made_it(
    committed_db, platform, settings, monkeypatch
):
    from config.celery import app
    from recovery import live, serving
    from tests.recovery import test_onsite_coupons as onsite

    settings.RECOVERY_MODEL_REFRESH_SECONDS = 0
    settings.RECOVERY_CAMPAIGN_REFRESH_SECONDS = 0
    serving.MODELS.clear()
    live.onsite_tiers_forget()
    # The task queued after the offer commits runs here, in this process.
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    shop = onsite.make_shop()
    store_id = shop["store"].pk
    _connect(store_id, platform.url)
    platform.script = [(502, {})]  # the task's first attempt fails; its retry makes the code

    first = onsite.exit_intent(store_id, "cart-1")

    # the first offer goes without its code, which the cart keeps
    assert first.decision is not None and first.decision.offer is not None
    assert first.decision.reason == "platform_pending"
    assert "discount_code" not in first.decision.offer
    coupon = Coupon.objects.get(store_id=store_id, cart="cart-1")
    code = PlatformCode.objects.get(coupon=coupon)
    assert (code.state, code.attempts, code.remote_id) == (
        "confirmed",
        2,
        f"remote-{coupon.code}",
    )
    assert [r["body"]["code"] for r in platform.requests] == [coupon.code] * 2

    # a later offer for the cart shows the code the platform now has
    later = onsite.exit_intent(store_id, "cart-1", at=onsite.T + timedelta(minutes=61))
    assert onsite.offer_of(later)["discount_code"] == coupon.code
    assert len(platform.requests) == 2


@pytest.mark.parametrize(
    ("kind", "amount", "cap", "value", "expected"),
    [
        ("percent", 10, None, 900, ("percent", 10)),  # no cap: the percentage
        ("percent", 10, 2000, 900, ("percent", 10)),  # the cap does not bind on this cart
        ("percent", 10, 2000, 2000, ("fixed", 2000)),  # it binds: the cap, as a fixed amount
        ("percent", 20, 1500, 4000, ("fixed", 1500)),
        ("fixed", 500, None, 500, ("fixed", 500)),
        ("free_shipping", 0, None, 0, ("free_shipping", 0)),
    ],
)
def test_a_capped_percentage_goes_to_the_platform_as_the_cap_where_it_binds(
    kind, amount, cap, value, expected
):
    coupon = Coupon(kind=kind, amount=amount, cap=cap, value=value)

    assert codes._platform_terms(coupon) == expected


def test_an_offer_for_a_store_without_a_platform_asks_nothing_once_known(
    db, store, settings, django_assert_num_queries
):
    """The on-site decision runs under its cart's lock: a store known to have no platform making
    its codes costs it no query for INTEGRATIONS_CONNECTION_REFRESH_SECONDS."""
    settings.INTEGRATIONS_CONNECTION_REFRESH_SECONDS = 60.0
    coupon = Coupon(store_id=store.pk, code="NOPLAT-1", cart="c")
    codes._UNCONNECTED.clear()

    with django_assert_num_queries(1):
        assert codes.code_ready(coupon).usable
    with django_assert_num_queries(0):
        assert codes.code_ready(coupon).usable
    codes._UNCONNECTED.clear()
