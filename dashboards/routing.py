"""The dashboards' websocket route: the Django session (cookie) identifies the marketer, and the
page's Origin must be one of ours, scheme, host and port compared (``OwnOriginValidator``); the
storefront's shopper socket has rules of its own (recovery.routing).

Our origins, as Django's CSRF check has them for forms: the origin of the server the socket was
opened on (``http`` or ``https``, as the server runs: ``wss`` or the proxy's
``SECURE_PROXY_SSL_HEADER``, and the ``Host`` header, which must be in ``ALLOWED_HOSTS``), and
those listed in ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` for any subdomain). A page
served from another port or scheme of the same host is another site to a browser's same-origin
policy, yet shares the session cookie (SameSite is per host): it is refused. A refused socket is
closed before it is accepted (403 at the handshake)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.urls import path
from django.utils.http import is_same_domain

from dashboards.consumers import DashboardConsumer

_DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]  # scheme, host (lower case), port


def parse_origin(text: str) -> Origin | None:
    """``scheme://host[:port]`` as a comparable triple (the default port filled in); None for
    ``null``, another scheme, or anything with more than an origin (a path, credentials)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def _headers(scope: dict[str, Any]) -> dict[bytes, str]:
    return {
        name.lower(): value.decode("latin-1") for name, value in scope.get("headers") or () if name
    }


def _secure(scope: dict[str, Any], headers: dict[bytes, str]) -> bool:
    """Whether the server runs https for this socket, as Django's ``request.is_secure()``."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure_value = proxy
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        if header in headers:
            return headers[header].split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "wss"


def own_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin of the server the socket was opened on (its Host header, which must be an
    allowed host); None without a valid Host."""
    headers = _headers(scope)
    host = headers.get(b"host", "")
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:  # as Django's request.get_host()
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed):
        return None
    return parse_origin(f"{'https' if _secure(scope, headers) else 'http'}://{host}")


def _trusted(origin: Origin, trusted: Iterable[str]) -> bool:
    """Whether ``origin`` is listed: exactly, or under ``scheme://*.domain[:port]`` (the domain
    and its subdomains, as Django's CSRF check reads CSRF_TRUSTED_ORIGINS)."""
    for text in trusted:
        if "://*." in text:
            pattern = parse_origin(text.replace("://*.", "://.", 1))
            if (
                pattern is not None
                and (pattern[0], pattern[2]) == (origin[0], origin[2])
                and is_same_domain(origin[1], pattern[1])
            ):
                return True
        elif parse_origin(text) == origin:
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the socket's Origin header is one of ours (see the module's docstring)."""
    origin = parse_origin(_headers(scope).get(b"origin", ""))
    if origin is None:
        return False
    return origin == own_origin(scope) or _trusted(origin, settings.CSRF_TRUSTED_ORIGINS)


class OwnOriginValidator:
    """ASGI middleware: passes a websocket whose Origin is one of ours, denies any other."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("OwnOriginValidator is for websockets only")
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


websocket_urlpatterns = [
    path(
        "ws/v1/dashboard/",
        OwnOriginValidator(AuthMiddlewareStack(DashboardConsumer.as_asgi())),
    ),
]
