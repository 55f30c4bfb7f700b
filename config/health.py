"""GET /healthz: each component's status; 503 naming whatever is down."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from carts.scheduler import HEARTBEAT_KEY as SCHEDULER_HEARTBEAT_KEY

# The worker (config.celery) and the scheduler (carts.scheduler) each refresh a key in Redis;
# stale means down.
WORKER_HEARTBEAT_KEY = "health:worker"
HEARTBEAT_MAX_AGE = 30.0


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)


def _database() -> dict[str, object]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True}


def _redis() -> dict[str, object]:
    _client().ping()
    return {"ok": True}


def _heartbeat(key: str) -> Callable[[], dict[str, object]]:
    def check() -> dict[str, object]:
        raw = _client().get(key)
        if raw is None:
            return {"ok": False, "error": "no heartbeat"}
        age = time.time() - float(raw)
        if age > HEARTBEAT_MAX_AGE:
            return {"ok": False, "error": f"last heartbeat {age:.0f}s ago"}
        return {"ok": True, "age_seconds": round(age, 1)}

    return check


CHECKS: dict[str, Callable[[], dict[str, object]]] = {
    "database": _database,
    "redis": _redis,
    "worker": _heartbeat(WORKER_HEARTBEAT_KEY),
    "scheduler": _heartbeat(SCHEDULER_HEARTBEAT_KEY),
}


def healthz(request: HttpRequest) -> JsonResponse:
    components: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        try:
            components[name] = check()
        except Exception as exc:
            components[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    down = [name for name, result in components.items() if not result["ok"]]
    body = {"status": "ok" if not down else "down", "down": down, "components": components}
    return JsonResponse(body, status=503 if down else 200)
