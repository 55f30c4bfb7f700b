"""Where integrations' requests may go, and how long their answers may take (egress.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from integrations import egress, outbound
from integrations.platforms import api


@pytest.mark.parametrize(
    ("address", "allowed_private", "refused"),
    [
        ("93.184.216.34", False, False),
        ("169.254.169.254", True, True),  # metadata: never
        ("::ffff:169.254.169.254", True, True),  # the same, IPv4-mapped
        ("fe80::1", True, True),
        ("0.0.0.0", True, True),  # noqa: S104 (an address refused, not bound)
        ("127.0.0.1", False, True),
        ("::ffff:127.0.0.1", False, True),
        ("10.0.0.5", False, True),
        ("192.168.1.10", False, True),
        ("::1", False, True),
        ("127.0.0.1", True, False),  # development and tests
        ("10.0.0.5", True, False),
    ],
)
def test_addresses_refused(settings, address, allowed_private, refused):
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = allowed_private

    assert (egress.address_refused(address) is not None) is refused


def test_a_name_is_judged_by_the_addresses_it_resolves_to(settings):
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = False

    assert egress.host_refused("http://localhost:5432/") == (
        "the host resolves to a private or loopback address (127.0.0.1; "
        "INTEGRATIONS_ALLOW_PRIVATE_URLS is off)"
    )
    assert egress.host_refused("http://metadata.google.internal/") == (
        "a cloud metadata host (metadata.google.internal)"
    )
    assert egress.host_refused("ftp://shop.example/") == "not an http(s) URL with a host"


def test_a_platform_call_to_a_private_address_is_refused_for_good_before_it_leaves(settings):
    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = False
    target = api.Target(
        platform="woocommerce",
        api_url="https://localhost:8443",
        shop_domain="",
        credentials={"consumer_key": "ck_secret", "consumer_secret": "cs_secret"},
    )
    request = api.CodeRequest(
        code="SAVE-1",
        kind="percent",
        amount=10,
        currency="EUR",
        min_cart_value=0,
        starts_at=datetime(2026, 12, 1, tzinfo=UTC),
        expires_at=datetime(2026, 12, 8, tzinfo=UTC),
        idempotency_key="k",
    )

    with pytest.raises(api.Permanent) as refused:
        api.code_create(target=target, request=request, timeout=2)

    assert "not called: the host resolves to a private or loopback address" in str(refused.value)


def test_a_shopify_api_url_over_plain_http_is_refused_in_production(settings):
    from integrations.platforms import shopify_api

    settings.INTEGRATIONS_ALLOW_PRIVATE_URLS = False
    target = api.Target("shopify", "http://shop.example", "shop.myshopify.com", {})

    with pytest.raises(api.Permanent):
        shopify_api.endpoint(target)


@pytest.fixture
def dribbler() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers 200 and then its body one byte every 0.2 s."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    def answer(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ in range(100):
                if stop.is_set():
                    break
                conn.sendall(b"x")
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    stop.set()
    thread.join(timeout=2)
    server.close()


def test_an_answer_dribbled_byte_by_byte_is_cut_at_the_timeout(settings, dribbler):
    """Each byte arrives well within the socket timeout; the whole answer does not."""
    settings.INTEGRATIONS_HTTP_TIMEOUT = 1.0
    started = time.monotonic()

    outcome = outbound.deliver_once(
        url=dribbler,
        webhook_id="msg_1",
        key=b"k" * 32,
        payload={"type": "cart.abandoned"},
        at=datetime(2026, 12, 6, tzinfo=UTC),
    )

    assert (outcome.status_code, outcome.error) == (None, "timed out after 1 s")
    assert time.monotonic() - started < 1.8
