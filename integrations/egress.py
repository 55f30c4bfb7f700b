"""Every request integrations makes to a URL a merchant or a platform gave us (outbound webhooks,
platforms' admin APIs, Saleor's JWKS) goes through here: where it may go, and how much time and
how many bytes its answer may take.

- Never to link-local addresses (cloud metadata lives there) or metadata host names; and unless
  INTEGRATIONS_ALLOW_PRIVATE_URLS (development, tests), never to loopback, private, reserved or
  unspecified addresses either, IPv4-mapped IPv6 addresses included. The host's addresses are
  checked when the request leaves (a name that resolves elsewhere later, DNS rebinding, is the
  limit of this check: docs/integrations.md, "Security").
- The answer's body is read within the request's wall-clock deadline and up to a size, so a
  server that dribbles its answer byte by byte cannot hold a worker past its timeout.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

ALWAYS_BLOCKED = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
    ipaddress.ip_network("0.0.0.0/8"),
)
BLOCKED_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
BODY_LIMIT = 64 * 1024


class TooSlow(Exception):
    """The answer did not arrive in full within the deadline."""


def address_refused(address: str) -> str | None:
    """Why a request must not go to this IP address (None: it may)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in ALWAYS_BLOCKED if net.version == ip.version):
        return f"a link-local or metadata address ({ip})"
    if settings.INTEGRATIONS_ALLOW_PRIVATE_URLS:
        return None
    if ip.is_loopback or ip.is_private or ip.is_reserved or ip.is_unspecified or ip.is_multicast:
        return f"a private or loopback address ({ip}; INTEGRATIONS_ALLOW_PRIVATE_URLS is off)"
    return None


def host_refused(url: str) -> str | None:
    """Why a request to ``url`` must not leave now (None: it may): its scheme, its host's name,
    or an address the host resolves to."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL with a host"
    host = parts.hostname.lower()
    if host in BLOCKED_HOSTS:
        return f"a cloud metadata host ({host})"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        return f"cannot resolve the host: {exc}"
    for info in infos:
        refused = address_refused(str(info[4][0]))
        if refused is not None:
            return f"the host resolves to {refused}"
    return None


def body_read(response: Any, *, deadline: float, limit: int = BODY_LIMIT) -> bytes:
    """The body of a streamed ``requests`` response, at most ``limit`` bytes (the rest is not
    read), by ``deadline`` (time.monotonic()); TooSlow past it. Each read waits at most the time
    left (the socket's timeout is set to it), so the whole answer is bounded by the deadline, not
    each byte by the socket timeout. Sets it as the response's content, so ``response.json()``
    and ``.text`` read it."""
    sock = _socket_of(response)
    chunks: list[bytes] = []
    size = 0
    try:
        while size < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TooSlow("the answer took longer than the timeout")
            if sock is not None:
                try:
                    sock.settimeout(left)
                except OSError:  # closed: the whole answer is in the buffer already
                    sock = None
            try:
                chunk = response.raw.read1(min(65536, limit - size), decode_content=True)
            except Exception as exc:  # a read past the time left: the socket timed out
                if time.monotonic() >= deadline - 0.01:
                    raise TooSlow("the answer took longer than the timeout") from None
                raise TooSlow(f"the answer broke off: {type(exc).__name__}") from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        response.close()
    body = b"".join(chunks)[:limit]
    response._content = body  # what .json() and .text read
    return body


def _socket_of(response: Any) -> socket.socket | None:
    """The socket under a streamed response (urllib3 over http.client), or None."""
    raw = getattr(getattr(getattr(response.raw, "_fp", None), "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def retry_after(value: str | None, *, cap: float, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds, possibly fractional as Shopify sends,
    or an HTTP-date), between 0 and ``cap``; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)
