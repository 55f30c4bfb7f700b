"""GET /healthz: each component's status; 503 naming whatever is down, 200 with the status
"degraded" naming what needs attention while the service runs (open dead letters, a shop
platform silent for too long)."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, Min
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from carts import log_stats
from carts.models import DeadLetter
from carts.scheduler import HEARTBEAT_KEY as SCHEDULER_HEARTBEAT_KEY
from integrations.models import Connection

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


def _dead_letters() -> dict[str, object]:
    """Events some reader of the log could not apply (docs/operations.md, "Dead letters"): per
    projector, how many are open and the oldest position. Any makes the service degraded."""
    open_by_projector = (
        DeadLetter.objects.filter(resolved_at__isnull=True)
        .values("projector")
        .annotate(count=Count("id"), oldest=Min("position"))
        .order_by("projector")
    )
    found = {
        row["projector"]: {"count": row["count"], "oldest_position": row["oldest"]}
        for row in open_by_projector
    }
    count = sum(each["count"] for each in found.values())
    if not count:
        return {"ok": True, "count": 0}
    return {"ok": True, "degraded": True, "count": count, "projectors": found}


def _projectors() -> dict[str, object]:
    """How many events of the log each tailing projector has still to read (each store's head
    against the projector's checkpoint for it: docs/adr/0003), and the log's size."""
    return {"ok": True, "events": log_stats.log_head(), "lag": log_stats.projector_lags()}


def _platforms() -> dict[str, object]:
    """Each active platform connection's last webhook delivery (docs/integrations.md): one
    silent longer than INTEGRATIONS_SILENT_HOURS (or never heard from since it was made that
    long ago) makes the service degraded, never down. /healthz is public: it shows counts;
    the list by store id and platform (never a name or shop domain) is for staff only
    (``healthz`` removes it for anyone else)."""
    now = timezone.now()
    silent_after = float(settings.INTEGRATIONS_SILENT_HOURS) * 3600
    stores: list[dict[str, object]] = []
    silent = []
    rows = Connection.objects.filter(active=True).order_by("store_id", "platform")
    for store_id, platform, last, created in rows.values_list(
        "store_id", "platform", "last_delivery_at", "created_at"
    ):
        age = (now - (last or created)).total_seconds()
        quiet = age > silent_after
        stores.append(
            {
                "store": store_id,
                "platform": platform,
                "last_delivery_at": last.isoformat() if last else None,
                "age_seconds": round(max(age, 0.0)),
                "silent": quiet,
            }
        )
        if quiet:
            silent.append(store_id)
    result: dict[str, object] = {
        "ok": True,
        "count": len(stores),
        "silent": len(silent),
        "connections": stores,
    }
    if silent:
        result.update(degraded=True, silent_stores=silent)
    return result


# What only a signed-in staff member sees of a component (the rest is public).
_OPERATORS_ONLY = {"platforms": ("connections", "silent_stores")}


CHECKS: dict[str, Callable[[], dict[str, object]]] = {
    "database": _database,
    "redis": _redis,
    "worker": _heartbeat(WORKER_HEARTBEAT_KEY),
    "scheduler": _heartbeat(SCHEDULER_HEARTBEAT_KEY),
    "dead_letters": _dead_letters,
    "projectors": _projectors,
    "platforms": _platforms,
}


def healthz(request: HttpRequest) -> JsonResponse:
    components: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        try:
            components[name] = check()
        except Exception as exc:
            components[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    user = getattr(request, "user", None)
    # Merchants are staff too, each of their own stores: the list by store is the operators'.
    if not (user is not None and user.is_active and user.is_superuser):
        for name, fields in _OPERATORS_ONLY.items():
            for field in fields:
                components.get(name, {}).pop(field, None)
    down = [name for name, result in components.items() if not result["ok"]]
    degraded = [name for name, result in components.items() if result.get("degraded")]
    status = "down" if down else "degraded" if degraded else "ok"
    body = {"status": status, "down": down, "degraded": degraded, "components": components}
    return JsonResponse(body, status=503 if down else 200)
