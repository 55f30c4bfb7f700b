"""Web origins (``scheme://host[:port]``) as browsers send them in the ``Origin`` header."""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_normalise(value: str) -> str:
    """The canonical form of an origin: lower-case scheme and host, default port dropped.

    Raises ValueError with a readable message for anything that is not an http(s) origin.
    """
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an origin: {exc}.") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin: write scheme://host[:port].")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{value!r} is not an origin: no path, query or user part.")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    if not origin:
        return False
    try:
        return origin_normalise(origin) in allowed
    except ValueError:
        return False
