"""Celery application. Tasks take ids, re-read the world, and are idempotent (see STYLE.md)."""

import logging
import os
import time
from typing import Any

from celery import Celery, bootsteps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

log = logging.getLogger(__name__)

WORKER_HEARTBEAT_EVERY = 5.0
WORKER_HEARTBEAT_TTL = 120  # an old heartbeat disappears rather than lingering forever

app = Celery("cartrecovery")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Refresh the worker's health key (GET /healthz) every few seconds while it consumes.

    A consumer bootstep on the worker's own timer: the beats come from the consuming event loop,
    so they stop when the worker stops, loses its broker connection or wedges.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._tref: Any = None
        self._redis: Any = None

    def start(self, parent: Any) -> None:
        import redis
        from django.conf import settings

        self._redis = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
        )
        self._beat()
        self._tref = parent.timer.call_repeatedly(WORKER_HEARTBEAT_EVERY, self._beat)

    def stop(self, parent: Any) -> None:
        if self._tref is not None:
            parent.timer.cancel(self._tref)
            self._tref = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    shutdown = stop

    def _beat(self) -> None:
        import redis

        from config.health import WORKER_HEARTBEAT_KEY

        if self._redis is None:
            return
        try:
            self._redis.set(WORKER_HEARTBEAT_KEY, repr(time.time()), ex=WORKER_HEARTBEAT_TTL)
        except redis.RedisError as exc:
            log.warning("could not write the worker heartbeat: %s", exc)


app.steps["consumer"].add(WorkerHeartbeat)
