"""Rate limits on public surfaces (docs/security.md), counted in Redis and shared by every process.

Each limit has a name and a rule in ``settings.RATE_LIMITS`` ("60/minute", "20/second", "5 per 5
minutes"; "" turns it off), and is counted per key (a client IP, a store, a socket, a username)
with the ``limits`` library's sliding window counter (in Redis; in the process's memory for keys
that live in one process, such as one websocket's messages: ``hit(..., local=True)``):

    verdict = ratelimits.hit("shopper_session_ip", ratelimits.client_ip(request))
    if not verdict.allowed:
        return ratelimits.too_many(verdict)      # 429 with Retry-After

A limit that bites is logged (WARNING, once per name and key per window in each process) and
counted in ``bitten()`` and in ``cartrecovery_rate_limit_hits_total{limit}`` (/metrics). When
Redis cannot be reached the request is let through and the failure logged: a limit protects the
service, it must not take it down.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.crypto import salted_hmac
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from carts import metrics

log = logging.getLogger(__name__)

# The websocket close code for a socket over its message limit (4000-4999: the application's).
CLOSE_RATE_LIMITED = 4429
_DIGEST_SALT = "carts.ratelimits"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    name: str = ""
    retry_after: int = 0  # seconds until a hit would be allowed again (when not allowed)


_ALLOWED = Verdict(True)


@cache
def _limiter(url: str) -> SlidingWindowCounterRateLimiter:
    storage = RedisStorage(url, socket_timeout=2, socket_connect_timeout=2)
    return SlidingWindowCounterRateLimiter(storage)


@cache
def _local_limiter() -> SlidingWindowCounterRateLimiter:
    return SlidingWindowCounterRateLimiter(MemoryStorage())


@cache
def _rule(text: str) -> RateLimitItem:
    return parse(text)


def rule(name: str) -> RateLimitItem | None:
    """The limit named ``name``, or None when it is off (""). KeyError for an unknown name."""
    text = settings.RATE_LIMITS[name]
    return _rule(text) if text else None


def hit(name: str, *key: str, cost: int = 1, local: bool = False) -> Verdict:
    """Count one hit (``cost``) of limit ``name`` for ``key``; whether it is within the limit.
    ``local``: counted in this process's memory, for keys that live in one process only (a
    websocket's own messages): no network round trip on every message."""
    return _verdict(name, key, cost=cost, local=local)


def test(name: str, *key: str) -> Verdict:
    """Whether a hit of ``name`` for ``key`` would be within the limit, counting nothing (a
    login form asks before checking the password, and counts only failures)."""
    return _verdict(name, key, cost=0)


def _verdict(name: str, key: tuple[str, ...], *, cost: int, local: bool = False) -> Verdict:
    """Hit (``cost`` > 0) or only test (0) limit ``name`` for ``key``."""
    try:
        item = rule(name)
    except ValueError:  # a malformed setting (manage.py check says so): not a reason for a 500
        log.error("rate limit %s: its rule does not parse; request let through", name)
        return _ALLOWED
    if item is None:
        return _ALLOWED
    # Counted in this process's memory, a key never leaves it: no digest (two on every message
    # of a shopper's socket). In Redis, keys carry no address or username in clear.
    parts = list(key) if local else [_digest(k) for k in key]
    try:
        limiter = _local_limiter() if local else _limiter(settings.REDIS_URL)
        if cost:
            allowed = limiter.hit(item, name, *parts, cost=cost)
        else:
            allowed = limiter.test(item, name, *parts)
        if allowed:
            return _ALLOWED
        reset = limiter.get_window_stats(item, name, *parts).reset_time
    except Exception:  # Redis down or slow: let it through, say so
        log.warning("rate limit %s could not be counted; request let through", name, exc_info=True)
        return _ALLOWED
    retry = max(1, math.ceil(reset - time.time()))
    bite(name, parts, retry)
    return Verdict(False, name, retry)


def clear(name: str, *key: str) -> None:
    """Forget ``key``'s hits of ``name`` (a successful login clears its username's failures)."""
    item = rule(name)
    if item is None:
        return
    try:
        _limiter(settings.REDIS_URL).clear(item, name, *[_digest(k) for k in key])
    except Exception:
        log.warning("rate limit %s could not be cleared", name, exc_info=True)


def too_many(verdict: Verdict, detail: str = "") -> JsonResponse:
    """The documented answer to a request over a limit: 429, ``Retry-After``, a JSON body."""
    response = JsonResponse(
        {
            "code": "rate_limited",
            "detail": detail or f"Too many requests; try again in {verdict.retry_after} s.",
            "limit": verdict.name,
        },
        status=429,
    )
    response["Retry-After"] = str(verdict.retry_after)
    return response


def client_ip(request: HttpRequest | None = None, *, scope: dict[str, Any] | None = None) -> str:
    """The client's address for rate limits: the peer's, or, behind RATE_LIMIT_PROXY_HOPS
    trusted proxies, the one the outermost trusted proxy saw (X-Forwarded-For)."""
    hops = settings.RATE_LIMIT_PROXY_HOPS
    if request is not None:
        peer = request.META.get("REMOTE_ADDR", "") or ""
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "") or ""
    else:
        assert scope is not None
        client = scope.get("client") or ("", 0)
        peer = str(client[0] or "")
        headers = dict(scope.get("headers") or [])
        forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
    if hops and forwarded:
        chain = [part.strip() for part in forwarded.split(",") if part.strip()]
        if len(chain) >= hops:
            return chain[-hops]
    return peer or "unknown"


# What bit, for logs and tests --------------------------------------------------------------------

_lock = threading.Lock()
_bitten: Counter[str] = Counter()
_logged: dict[tuple[str, str], float] = {}


def bite(name: str, parts: list[str], retry: int, detail: str = "") -> None:
    """Count a refused hit of limit ``name`` (metrics, ``bitten()``) and log it at WARNING, once
    per limit and key until ``retry`` seconds have passed in this process; the log names the
    hashed key, or ``detail`` when given (nothing secret: the API's limit gives the store id)."""
    key = ":".join(parts)
    now = time.monotonic()
    metrics.rate_limit_hit(name)
    with _lock:
        _bitten[name] += 1
        if _logged.get((name, key), 0.0) > now:
            return
        if len(_logged) > 10_000:  # bounded: an attacker's many keys cannot grow it
            _logged.clear()
        _logged[(name, key)] = now + retry
    shown = detail or f"key {key[:16]}"
    log.warning("rate limit %s hit (%s); retry after %d s", name, shown, retry)


def bitten() -> dict[str, int]:
    """How many hits each limit refused in this process since it started."""
    with _lock:
        return dict(_bitten)


def _digest(value: str) -> str:
    # Keys in Redis carry no IP address, username or token in clear, and have a bounded length.
    # An HMAC keyed by a secret derived from the SECRET_KEY, not a plain hash: the hash of an
    # IPv4 address is found by trying all 2**32 of them, this one not without the key.
    return salted_hmac(_DIGEST_SALT, str(value), algorithm="sha256").hexdigest()[:24]
