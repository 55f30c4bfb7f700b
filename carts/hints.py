"""Best-effort wake-up hints over Redis pub/sub. Readers never rely on them: they poll too."""

from __future__ import annotations

import logging

import redis

from carts import redis_client

log = logging.getLogger(__name__)


def publish(channel: str, message: object) -> None:
    try:
        redis_client.client().publish(channel, str(message))
    except redis.RedisError:
        log.warning("could not publish hint on %s; readers will catch up by polling", channel)
