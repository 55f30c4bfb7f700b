"""GET /healthz against real processes: a Celery worker and the scheduler write the heartbeats."""

from __future__ import annotations

import time

import redis
from django.conf import settings

from config import health
from tests.e2e import procs


def healthz(client) -> tuple[int, dict]:
    response = client.get("/healthz")
    return response.status_code, response.json()


def test_healthz_is_503_naming_worker_and_scheduler_without_heartbeats(db, client, isolated_redis):
    status, body = healthz(client)

    assert status == 503
    assert body["status"] == "down"
    assert body["down"] == ["worker", "scheduler"]
    assert body["components"]["database"] == {"ok": True}
    assert body["components"]["redis"] == {"ok": True}
    assert body["components"]["worker"] == {"ok": False, "error": "no heartbeat"}
    assert body["components"]["scheduler"] == {"ok": False, "error": "no heartbeat"}


def test_healthz_names_a_stale_heartbeat(db, client, isolated_redis):
    conn = redis.Redis.from_url(isolated_redis)
    conn.set(health.WORKER_HEARTBEAT_KEY, repr(time.time()))
    conn.set(health.SCHEDULER_HEARTBEAT_KEY, repr(time.time() - 45))

    status, body = healthz(client)

    assert status == 503
    assert body["down"] == ["scheduler"]
    assert body["components"]["scheduler"] == {"ok": False, "error": "last heartbeat 45s ago"}


def test_healthz_is_200_with_a_real_worker_and_scheduler_running(
    db, client, isolated_redis, tmp_path
):
    env = procs.child_env(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=procs.database_url(),
        REDIS_URL=isolated_redis,
    )
    worker_argv = [
        procs.PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
        "--concurrency", "1", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    worker = procs.start(worker_argv, env=env, log=tmp_path / "worker.log")
    scheduler = procs.start(
        [procs.PYTHON, "manage.py", "run_scheduler"], env=env, log=tmp_path / "scheduler.log"
    )
    conn = redis.Redis.from_url(isolated_redis)
    try:

        def healthy() -> bool:
            for process, log in ((worker, "worker.log"), (scheduler, "scheduler.log")):
                assert process.poll() is None, procs.tail(tmp_path / log)
            return healthz(client)[0] == 200

        procs.wait_for(healthy, timeout=60, what="GET /healthz to report 200")
        status, body = healthz(client)
        assert status == 200
        assert body["status"] == "ok"
        assert body["down"] == []
        assert all(c["ok"] for c in body["components"].values())

        # The worker keeps beating (every 5 s) ...
        def beat() -> float:
            return float(conn.get(health.WORKER_HEARTBEAT_KEY) or 0)  # type: ignore[arg-type]

        first = beat()
        procs.wait_for(
            lambda: beat() > first,
            timeout=10,
            what="a second worker heartbeat",
        )

        # ... and its timer does not hold up a warm shutdown.
        stopping = time.monotonic()
        assert procs.stop(worker) == 0
        assert time.monotonic() - stopping < 10
    finally:
        procs.stop(worker)
        procs.stop(scheduler)
        conn.close()
    assert "Warm shutdown" in (tmp_path / "worker.log").read_text()


def test_the_broker_uses_the_redis_database_the_url_names():
    from config import env

    socket_url = "unix:///srv/redis.sock?db=7"

    assert env.celery_broker_url(socket_url) == "redis+socket:///srv/redis.sock?virtual_host=7"
    assert env.celery_broker_url("unix:///srv/redis.sock") == "redis+socket:///srv/redis.sock"
    assert env.celery_broker_url("redis://h:6379/3") == "redis://h:6379/3"
    assert env.celery_broker_url(settings.REDIS_URL) == settings.CELERY_BROKER_URL
