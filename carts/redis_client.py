"""The process's Redis client (rate limits, wake-up hints); redis-py pools its connections."""

from __future__ import annotations

import threading

import redis
from django.conf import settings

_client: redis.Redis | None = None
_lock = threading.Lock()


def client() -> redis.Redis:
    """One client per process, made once even when a fresh server's first requests ask for it at
    the same time: a second client made in a race is dropped, and dropping a client closes its
    pool's connections, under a request that is using one of them (500s at start-up)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = redis.Redis.from_url(
                    settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
                )
    return _client
