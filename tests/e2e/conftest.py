"""Fixtures for multi-process tests."""

from __future__ import annotations

import pytest
import redis

from tests.e2e import procs


@pytest.fixture
def isolated_redis(settings):
    """Point this process (and the children it starts) at a Redis database of their own, so
    heartbeats, the scheduler lock and Celery's queue are not shared with a `make run` or another
    test run on the same machine."""
    url = procs.redis_url_with_db(settings.REDIS_URL, procs.isolated_redis_db())
    settings.REDIS_URL = url
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    yield url
    conn.flushdb()
    conn.close()
