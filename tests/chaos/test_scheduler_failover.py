"""Two schedulers; the active one SIGKILLed while it hands out due steps."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections import Counter

import pytest
import redis

from carts import scheduler
from tests.chaos.conftest import Chaos
from tests.e2e import procs

# 150 s: the first test of the package also waits for the private servers to start and migrate.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

LOCK_TTL = 3.0  # run_scheduler --lock-ttl (carts/scheduler.py LOCK_TTL is 15 s)


def _owner_pid(conn: redis.Redis) -> int | None:
    raw = conn.get(scheduler.LOCK_KEY)
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return int(text.split(":")[1])


def _published(conn: redis.Redis) -> list[int]:
    """Step ids in the steps_run tasks waiting in the broker's queue (no worker runs here)."""
    ids: list[int] = []
    for raw in conn.lrange("celery", 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] != "campaigns.steps_run":
            continue  # the other jobs' tasks (idempotent sweeps, run again on activation)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ids.extend(args[0])
    return ids


def test_the_standby_takes_over_within_two_lock_periods_and_no_step_is_handed_out_twice(
    servers_up: Chaos, tmp_path
):
    c = servers_up
    _, ids = c.email_steps(60, prefix="sched", due_in=3600)  # not due yet
    conn = redis.Redis.from_url(c.redis.url)
    conn.delete("celery", scheduler.LOCK_KEY, scheduler.HEARTBEAT_KEY)
    argv = [procs.PYTHON, "manage.py", "run_scheduler", "--lock-ttl", str(LOCK_TTL)]
    logs = {name: tmp_path / f"{name}.log" for name in ("one", "two")}
    started = {name: procs.start(argv, env=c.env(), log=log) for name, log in logs.items()}
    try:
        owner = procs.wait_for(lambda: _owner_pid(conn), timeout=30, what="a scheduler lock")
        by_pid = {p.pid: name for name, p in started.items()}
        active = by_pid[owner]
        standby = "two" if active == "one" else "one"
        procs.wait_for(
            lambda: "standby" in logs[standby].read_text(), timeout=30, what="the standby"
        )
        # 60 steps falling due over 6 s: the enqueue job has work before, across and after the
        # kill.
        c.due_spread(ids, start=0.0, over=6.0)
        procs.wait_for(lambda: len(_published(conn)) >= 10, timeout=30, what="steps handed out")

        os.killpg(started[active].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        before = len(_published(conn))
        took_over = procs.wait_for(
            lambda: _owner_pid(conn) == started[standby].pid and time.monotonic(),
            timeout=2 * LOCK_TTL + 5,
            interval=0.05,
            what="the takeover",
        )
        handover = took_over - killed_at
        procs.wait_for(
            lambda: len(_published(conn)) >= len(ids), timeout=30, what="every step handed out"
        )
        time.sleep(1.0)  # a few more enqueue turns: nothing more may be handed out
        published = _published(conn)
    finally:
        for process in started.values():
            procs.stop(process, sig=signal.SIGKILL)
        conn.delete("celery", scheduler.LOCK_KEY, scheduler.HEARTBEAT_KEY)
        conn.close()

    assert before < len(ids)  # the kill came while steps were still falling due
    # The lock of the dead one had to run out (it never released it), and then within a tick.
    assert 0 < handover <= 2 * LOCK_TTL, handover
    assert "active:" in logs[standby].read_text()
    counts = Counter(published)
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}, [i for i, n in counts.items() if n > 1]
    status = dict(
        c.sql("SELECT status, count(*) FROM campaigns_step WHERE id = ANY(%s) GROUP BY 1", [ids])
    )
    assert status == {"enqueued": len(ids)}
