"""Saleor's signing keys: the instances' JWKS documents, fetched outside any transaction with a
timeout, through integrations/egress.py, cached per process; verification of Saleor-Signature
lives in integrations/platforms/saleor.py."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from dataclasses import dataclass

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from integrations import egress
from integrations.facts import BadDelivery

logger = logging.getLogger("integrations.inbound")

JWKS_TTL_SECONDS = 300.0
# An unknown kid refetches the JWKS at most this often (a forged kid must not make every request
# a fetch).
JWKS_REFETCH_SECONDS = 10.0
JWKS_MAX_BYTES = 256 * 1024
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


@dataclass(slots=True)
class _Keys:
    keys: dict[str, rsa.RSAPublicKey]
    fetched_at: float


class JwksCache:
    """The instances' public keys, per JWKS URL, for JWKS_TTL_SECONDS; an unknown kid refetches
    once (at most every JWKS_REFETCH_SECONDS). A failed fetch keeps serving keys already held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_url: dict[str, _Keys] = {}
        # A fetch that failed, per URL: (when, why). Requests in the next JWKS_REFETCH_SECONDS
        # are answered 503 at once instead of each waiting on the same unreachable server.
        self._failed: dict[str, tuple[float, str]] = {}
        self._fetching: dict[str, threading.Lock] = {}

    def clear(self) -> None:
        with self._lock:
            self._by_url.clear()
            self._failed.clear()

    def key(self, url: str, kid: str, *, timeout: float) -> rsa.RSAPublicKey | None:
        now = time.monotonic()
        with self._lock:
            held = self._by_url.get(url)
            failed = self._failed.get(url)
            fetching = self._fetching.setdefault(url, threading.Lock())
        if held and now - held.fetched_at < JWKS_TTL_SECONDS and kid in held.keys:
            return held.keys[kid]
        if held and kid not in held.keys and now - held.fetched_at < JWKS_REFETCH_SECONDS:
            return None
        if failed and now - failed[0] < JWKS_REFETCH_SECONDS:
            if held and kid in held.keys:
                return held.keys[kid]
            raise BadDelivery(503, "Saleor's signing keys could not be fetched; retry later.")
        # One fetch per URL at a time; the others wait for it (bounded by its timeout).
        with fetching:
            with self._lock:
                done = self._by_url.get(url)
            if done is not None and done is not held and kid in done.keys:
                return done.keys[kid]
            try:
                keys = fetch_jwks(url, timeout=timeout)
            except _Unavailable as exc:
                logger.warning("Saleor JWKS %s could not be fetched: %s", url, exc)
                with self._lock:
                    self._failed[url] = (time.monotonic(), str(exc))
                if held and kid in held.keys:
                    return held.keys[kid]  # stale, but Saleor's key rarely changes
                # (Where and why is logged, never told to an anonymous caller.)
                raise BadDelivery(
                    503, "Saleor's signing keys could not be fetched; retry later."
                ) from None
        with self._lock:
            self._by_url[url] = _Keys(keys=keys, fetched_at=time.monotonic())
        return keys.get(kid)


class _Unavailable(Exception):
    pass


def fetch_jwks(url: str, *, timeout: float) -> dict[str, rsa.RSAPublicKey]:
    """The RSA keys of a JWKS document, by kid. Never call it inside a transaction."""
    refused = egress.host_refused(url)
    if refused is not None:
        raise _Unavailable(f"not fetched: {refused}")
    deadline = time.monotonic() + timeout
    try:
        with requests.get(url, timeout=timeout, allow_redirects=False, stream=True) as response:
            if response.status_code != 200:
                raise _Unavailable(f"HTTP {response.status_code} from {url}")
            raw = egress.body_read(response, deadline=deadline, limit=JWKS_MAX_BYTES + 1)
    except egress.TooSlow:
        raise _Unavailable(f"no whole answer within {timeout:g} s from {url}") from None
    except requests.RequestException as exc:
        raise _Unavailable(f"{type(exc).__name__} from {url}") from None
    if len(raw) > JWKS_MAX_BYTES:
        raise _Unavailable(f"the JWKS at {url} is larger than {JWKS_MAX_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise _Unavailable(f"the JWKS at {url} is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise _Unavailable(f"the JWKS at {url} has no keys")
    keys: dict[str, rsa.RSAPublicKey] = {}
    for entry in entries[:100]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid, n, e = entry.get("kid"), entry.get("n"), entry.get("e")
        if not (isinstance(kid, str) and isinstance(n, str) and isinstance(e, str)):
            continue
        try:
            numbers = rsa.RSAPublicNumbers(_b64_int(e), _b64_int(n))
            keys[kid] = numbers.public_key()
        except ValueError:
            continue
    return keys


def _b64_int(value: str) -> int:
    return int.from_bytes(b64decode(value), "big")


def b64decode(value: str) -> bytes:
    if not _B64URL.match(value):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


JWKS = JwksCache()
