"""Best-effort wake-up hints over Redis pub/sub. Readers never rely on them: they poll too."""

from __future__ import annotations

import logging
from functools import cache

import redis
from django.conf import settings

log = logging.getLogger(__name__)


@cache
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def publish(channel: str, position: int) -> None:
    try:
        client().publish(channel, str(position))
    except redis.RedisError:
        log.warning("could not publish hint on %s; readers will catch up by polling", channel)
