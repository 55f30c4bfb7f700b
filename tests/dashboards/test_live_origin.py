"""The dashboard websocket's Origin check (review finding 13): the full origin, scheme, host and
port, against our own (the server's Host over the scheme it runs) and CSRF_TRUSTED_ORIGINS."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings

from config.asgi import application
from dashboards.routing import origin_allowed, parse_origin
from tests.dashboards.test_live import marketer


def _scope(origin: str | None, host: str | None = "127.0.0.1:8000", **extra: Any) -> dict:
    headers = [(b"origin", origin.encode())] if origin is not None else []
    if host is not None:
        headers.append((b"host", host.encode()))
    headers += [(k.encode(), v.encode()) for k, v in extra.pop("headers", {}).items()]
    return {"type": "websocket", "scheme": "ws", "headers": headers, **extra}


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("http://127.0.0.1:8000", ("http", "127.0.0.1", 8000)),
        ("HTTPS://Dash.Example.com", ("https", "dash.example.com", 443)),
        ("http://[::1]", ("http", "::1", 80)),
        ("null", None),
        ("", None),
        ("ftp://example.com", None),
        ("http://example.com/path", None),
        ("http://user@example.com", None),
        ("http://example.com:99999", None),
    ],
)
def test_an_origin_is_compared_as_scheme_host_and_port(text, origin):
    assert parse_origin(text) == origin


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://127.0.0.1:8000", True),  # the page the server itself served
        ("http://127.0.0.1:9999", False),  # another port of the same host
        ("http://127.0.0.1", False),
        ("https://127.0.0.1:8000", False),  # another scheme
        ("https://127.0.0.1", False),
        ("http://localhost:8000", False),  # another allowed host is another origin
        ("http://localhost:1234", False),
        ("http://evil.example", False),
        ("null", False),
        (None, False),
    ],
)
def test_only_the_servers_own_origin_is_allowed(settings, origin, allowed):
    settings.ALLOWED_HOSTS, settings.CSRF_TRUSTED_ORIGINS = ["127.0.0.1", "localhost"], []
    assert origin_allowed(_scope(origin)) is allowed


def test_a_host_that_is_not_allowed_or_missing_gives_no_own_origin(settings):
    settings.ALLOWED_HOSTS, settings.CSRF_TRUSTED_ORIGINS = ["127.0.0.1"], []
    assert origin_allowed(_scope("http://evil.example", host="evil.example")) is False
    assert origin_allowed(_scope("http://127.0.0.1:8000", host=None)) is False


def test_the_scheme_is_the_servers_wss_or_the_proxys_header(settings):
    settings.ALLOWED_HOSTS, settings.CSRF_TRUSTED_ORIGINS = ["dash.example.com"], []
    host = "dash.example.com"
    # TLS on the server itself
    assert origin_allowed(_scope("https://dash.example.com", host, scheme="wss")) is True
    assert origin_allowed(_scope("http://dash.example.com", host, scheme="wss")) is False
    # plain websocket, no proxy header configured: http only
    assert origin_allowed(_scope("https://dash.example.com", host)) is False
    # behind a TLS proxy that says so (as Django's request.is_secure() reads it)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    forwarded = {"headers": {"x-forwarded-proto": "https"}}
    assert origin_allowed(_scope("https://dash.example.com", host, **forwarded)) is True
    assert origin_allowed(_scope("http://dash.example.com", host, **forwarded)) is False
    plain = {"headers": {"x-forwarded-proto": "http"}}
    assert origin_allowed(_scope("https://dash.example.com", host, scheme="wss", **plain)) is False


def test_csrf_trusted_origins_are_allowed_exactly_or_by_subdomain(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://dash.example.com", "https://*.shop.example"]

    assert origin_allowed(_scope("https://dash.example.com")) is True
    assert origin_allowed(_scope("https://dash.example.com:443")) is True
    assert origin_allowed(_scope("https://dash.example.com:8443")) is False
    assert origin_allowed(_scope("http://dash.example.com")) is False
    assert origin_allowed(_scope("https://eu.shop.example")) is True
    assert origin_allowed(_scope("https://shop.example")) is True
    assert origin_allowed(_scope("https://evilshop.example")) is False
    assert origin_allowed(_scope("http://eu.shop.example")) is False


async def _open(origin: str, m: dict) -> tuple[WebsocketCommunicator, bool, Any]:
    """A marketer's socket opened on the server at 127.0.0.1:8000 from a page of ``origin``."""
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"origin", origin.encode()),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={m['cookie'].value}".encode()),
    ]
    socket = WebsocketCommunicator(application, f"/ws/v1/dashboard/?store={m['store'].pk}", headers)
    connected, code = await socket.connect(timeout=5)
    return socket, connected, code


@pytest.mark.asyncio
async def test_a_page_on_another_port_or_scheme_of_the_host_is_refused_at_the_handshake(
    committed_db,
):
    # given a marketer's session cookie, as any page of the dashboards' host would send it
    m = await marketer()

    # when pages of other ports and schemes of the host open the store's socket
    foreign = (
        "http://127.0.0.1:9999",
        "http://localhost:1234",
        "https://127.0.0.1",
        "https://127.0.0.1:8000",
        "http://127.0.0.1",
    )
    answers = {}
    for origin in foreign:
        socket, connected, code = await _open(origin, m)
        await socket.disconnect()  # (an accepted one's consumer would hold up the loop)
        answers[origin] = (connected, code)

    # then each is refused before the socket is accepted (a 403 at the HTTP handshake)
    assert answers == dict.fromkeys(foreign, (False, 1000))

    # and the server's own page gets its store's snapshot
    socket, connected, _ = await _open("http://127.0.0.1:8000", m)
    assert connected
    assert (await socket.receive_json_from(timeout=5))["type"] == "snapshot"
    await socket.disconnect()
