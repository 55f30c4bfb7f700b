"""API authentication by store key and per-store rate limiting."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import redis
from django.conf import settings
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from carts import ratelimits, redis_client, selectors
from carts.models import Store, StoreKey

log = logging.getLogger(__name__)


class StorePrincipal:
    """The authenticated party of a server-to-server request: a store, not a Django user."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, store: Store, key_prefix: str = "") -> None:
        self.store = store
        self.key_prefix = key_prefix  # which of its keys (as the admin shows keys): provenance

    def __str__(self) -> str:
        return f"store:{self.store.pk}"


class StoreSecretKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer sk_...``."""

    kind = StoreKey.Kind.SECRET

    def authenticate(self, request: Request) -> tuple[StorePrincipal, Store] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer sk_...'.")
        store = selectors.store_for_key(key=key.strip(), kind=self.kind)
        if store is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked key.")
        return StorePrincipal(store, key.strip()[:10]), store

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class IsStore(permissions.BasePermission):
    message = "Authentication with the store's secret key (sk_...) is required."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, Store)


# The per-store API limit's name in /metrics and the logs (its rule is the store's own
# rate_limit_per_minute, or CARTS_RATE_LIMIT_PER_MINUTE, not a RATE_LIMITS entry).
API_STORE_LIMIT = "api_store"


class StoreRateThrottle(throttling.BaseThrottle):
    """Fixed one-minute window per store, counted in Redis (shared by every process). A refused
    request is counted in ``cartrecovery_rate_limit_hits_total{limit="api_store"}`` and logged
    at WARNING once per store and minute in each process, as carts/ratelimits.py does for its
    limits. While Redis cannot be reached, requests are let through and that is logged (as
    carts/ratelimits.py does): the limit protects the service, it must not take ingestion down
    with Redis."""

    def allow_request(self, request: Request, view: Any) -> bool:
        store = request.auth
        if not isinstance(store, Store):
            return True
        limit = store.rate_limit_per_minute or settings.CARTS_RATE_LIMIT_PER_MINUTE
        now = time.time()
        window = int(now // 60)
        key = f"ratelimit:store:{store.pk}:{window}"
        # One round trip on the process's shared client (Django's cache builds a client object
        # per call, which cost more than the Redis call itself).
        self._wait = 60 - (now % 60)
        try:
            pipe = redis_client.client().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            _uncounted(store.pk, exc)
            return True
        if int(count) <= limit:
            return True
        wait = math.ceil(self._wait)
        ratelimits.bite(API_STORE_LIMIT, [str(store.pk)], wait, f"store {store.pk}, {limit}/minute")
        return False

    def wait(self) -> float:
        return self._wait


# One warning per _UNCOUNTED_LOG_SECONDS in each process while Redis is down, with how many
# requests went uncounted meanwhile: an outage must not also flood the logs (one line a request).
_UNCOUNTED_LOG_SECONDS = 10.0
_uncounted_lock = threading.Lock()
_uncounted_since_log = 0
_uncounted_logged_at = float("-inf")


def _uncounted(store_id: int, exc: Exception) -> None:
    global _uncounted_since_log, _uncounted_logged_at
    now = time.monotonic()
    with _uncounted_lock:
        _uncounted_since_log += 1
        if now - _uncounted_logged_at < _UNCOUNTED_LOG_SECONDS:
            return
        count, _uncounted_since_log, _uncounted_logged_at = _uncounted_since_log, 0, now
    log.warning(
        "store rate limit could not be counted (Redis: %s); %d request(s) let through "
        "(store %s the last)",
        exc,
        count,
        store_id,
    )
