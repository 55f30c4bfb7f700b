"""The scheduler: one active instance behind a Redis lock, heartbeats, jobs, clean stops."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from carts import scheduler
from tests.e2e import procs


@pytest.fixture
def conn():
    client = redis.Redis.from_url(
        procs.redis_url_with_db(settings.REDIS_URL, procs.isolated_redis_db())
    )
    yield client
    client.close()


@pytest.fixture
def keys(conn):
    """A lock key and heartbeat key of this test's own."""
    tag = uuid.uuid4().hex[:8]
    lock, heartbeat = f"test:{tag}:lock", f"test:{tag}:heartbeat"
    yield {"lock_key": lock, "heartbeat_key": heartbeat}
    conn.delete(lock, heartbeat)


def make(conn, keys, **kwargs) -> scheduler.Scheduler:
    kwargs.setdefault("lock_ttl", 2.0)
    kwargs.setdefault("tick", 0.1)
    return scheduler.Scheduler(conn=conn, **keys, **kwargs)


def test_only_one_of_two_instances_is_active_and_runs_jobs(conn, keys):
    runs: list[str] = []
    a = make(conn, keys, jobs=[scheduler.Job("job", 60, lambda: runs.append("a"))])
    b = make(conn, keys, jobs=[scheduler.Job("job", 60, lambda: runs.append("b"))])

    for _ in range(3):
        a.step()
        b.step()

    assert (a.active, b.active) == (True, False)
    assert runs == ["a"]  # due once at activation, then every 60 s
    assert conn.get(keys["lock_key"]) == a.identity.encode()
    assert 0 < conn.pttl(keys["lock_key"]) <= 2000
    assert time.time() - float(conn.get(keys["heartbeat_key"])) < 5


def test_the_standby_takes_over_when_the_active_instance_releases_the_lock(conn, keys, caplog):
    a, b = make(conn, keys), make(conn, keys)
    a.step()
    b.step()

    a.release()
    with caplog.at_level("WARNING", logger="carts.scheduler"):
        b.step()

    assert (a.active, b.active) == (False, True)
    assert conn.get(keys["lock_key"]) == b.identity.encode()
    assert "expired" not in caplog.text  # a clean hand-over is no lease expiry


def test_the_standby_takes_over_when_the_lock_of_a_crashed_instance_expires(conn, keys, caplog):
    a, b = make(conn, keys, lock_ttl=0.5), make(conn, keys, lock_ttl=0.5)
    a.step()  # then "crashes": it never renews again
    b.step()
    assert b.active is False

    time.sleep(0.6)
    with caplog.at_level("WARNING", logger="carts.scheduler"):
        b.step()
    a.step()  # back from a pause: it finds the lock is no longer its own

    assert (a.active, b.active) == (False, True)
    assert conn.get(keys["lock_key"]) == b.identity.encode()
    # counted as a lease expiry (cartrecovery_lease_expiries_total{lease="scheduler"})
    assert f"the scheduler lock of {a.identity} expired" in caplog.text


def test_jobs_run_when_due_and_a_failing_job_does_not_stop_the_others(conn, keys):
    now = [0.0]
    runs: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    s = make(
        conn,
        keys,
        jobs=[
            scheduler.Job("boom", 10, boom),
            scheduler.Job("count", 10, lambda: runs.append("x")),
        ],
        clock=lambda: now[0],
    )

    s.step()
    now[0] = 9.9
    s.step()
    now[0] = 10.0
    s.step()

    assert runs == ["x", "x"]
    assert s.active is True


def test_redis_down_means_standby_not_a_crash(keys):
    broken = redis.Redis(
        unix_socket_path="/nonexistent/redis.sock", retry=Retry(NoBackoff(), 0), socket_timeout=0.2
    )
    s = scheduler.Scheduler(conn=broken, **keys, lock_ttl=2.0, tick=0.1)

    s.step()

    assert s.active is False


def test_register_rejects_a_second_job_under_the_same_name():
    def job() -> None:
        pass

    name = f"test-{uuid.uuid4().hex[:8]}"
    scheduler.register(name, 30, job)
    scheduler.register(name, 30, job)  # the same registration again (a module imported twice)
    try:
        assert [j for j in scheduler.registered() if j.name == name] == [
            scheduler.Job(name, 30.0, job)
        ]
        with pytest.raises(ValueError, match="already registered"):
            scheduler.register(name, 30, lambda: None)
        with pytest.raises(ValueError, match="must be positive"):
            scheduler.register(f"{name}-2", 0, job)
    finally:
        scheduler._registry.pop(name, None)


# The command, as separate processes ---------------------------------------------------------------


def _scheduler_env() -> dict[str, str]:
    return procs.child_env(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=procs.database_url(),
        REDIS_URL=procs.redis_url_with_db(settings.REDIS_URL, procs.isolated_redis_db()),
    )


def _owner_pid(conn) -> int | None:
    raw = conn.get(scheduler.LOCK_KEY)
    return None if raw is None else int(raw.decode().split(":")[1])


def test_two_run_scheduler_processes_one_active_the_other_takes_over(db, conn, tmp_path):
    conn.delete(scheduler.LOCK_KEY, scheduler.HEARTBEAT_KEY)
    env = _scheduler_env()
    argv = [procs.PYTHON, "manage.py", "run_scheduler", "--lock-ttl", "3", "--tick", "0.2"]
    logs = {name: tmp_path / f"{name}.log" for name in ("one", "two")}
    started = {name: procs.start(argv, env=env, log=log) for name, log in logs.items()}
    try:
        owner = procs.wait_for(lambda: _owner_pid(conn), timeout=30, what="a scheduler lock")
        by_pid = {p.pid: name for name, p in started.items()}
        active = by_pid[owner]
        standby = "two" if active == "one" else "one"
        procs.wait_for(lambda: "standby" in logs[standby].read_text(), timeout=30, what="a standby")
        assert "active:" not in logs[standby].read_text()
        assert time.time() - float(conn.get(scheduler.HEARTBEAT_KEY)) < 5

        # SIGTERM: a clean stop releases the lock, and the standby takes over within a tick.
        stopped_at = time.monotonic()
        assert procs.stop(started[active], sig=signal.SIGTERM) == 0
        procs.wait_for(
            lambda: _owner_pid(conn) == started[standby].pid, timeout=3, what="the takeover"
        )
        assert time.monotonic() - stopped_at < 5
        assert "active:" in logs[active].read_text()
        assert "SIGTERM received; stopping" in logs[active].read_text()

        # SIGINT stops the last one, which leaves no lock behind.
        assert procs.stop(started[standby], sig=signal.SIGINT) == 0
        assert conn.get(scheduler.LOCK_KEY) is None
    finally:
        for process in started.values():
            procs.stop(process, sig=signal.SIGKILL)
        conn.delete(scheduler.LOCK_KEY, scheduler.HEARTBEAT_KEY)
    assert "SIGINT received; stopping" in logs[standby].read_text()
    assert "active:" in logs[standby].read_text()
