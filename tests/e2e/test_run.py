"""`make run` (python -m config.devrun) end to end: everything healthy, then Ctrl-C stops it all.

It runs with a var directory of its own, so it starts (and must stop) its own embedded PostgreSQL
and Redis rather than attach to the ones this test run uses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e import procs

STARTUP_TIMEOUT = 180  # a fresh var directory: initdb, every migration, four processes
STOP_TIMEOUT = 30


def _devrun_env(var_dir: Path, port: int) -> dict[str, str]:
    env = procs.child_env(CARTS_VAR_DIR=str(var_dir), PORT=str(port))
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)  # embedded servers of its own, and devrun's own settings
    return env


def _pid_file(path: Path) -> tuple[int, int] | None:
    try:
        pid = int(path.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    return procs.process_identity(pid)


def _cleanup(var_dir: Path, leftovers: dict[tuple[int, int], str]) -> None:
    """After a failure: leave nothing running."""
    for identity in leftovers:
        if procs.alive(identity):
            os.kill(identity[0], signal.SIGKILL)
    subprocess.run(
        [procs.PYTHON, "-m", "config.embedded", "stop"],
        cwd=procs.ROOT,
        env=_devrun_env(var_dir, 0),
        timeout=60,
        check=False,
        capture_output=True,
    )


def _kill_the_scheduler(devrun: subprocess.Popen[bytes], children: dict) -> None:
    [pid] = [i[0] for i, cmd in children.items() if "manage.py run_scheduler" in cmd]
    os.kill(pid, signal.SIGKILL)


STOPS = {
    # Ctrl-C in a terminal signals the whole foreground process group.
    "ctrl-c": (lambda devrun, children: os.killpg(devrun.pid, signal.SIGINT), 0),
    "sigterm": (lambda devrun, children: os.kill(devrun.pid, signal.SIGTERM), 0),
    # One process dying takes the others down with it (128 + SIGKILL, as a shell reports it).
    "a-child-dies": (_kill_the_scheduler, 128 + signal.SIGKILL),
}


@pytest.mark.slow
@pytest.mark.parametrize("how", list(STOPS))
def test_make_run_serves_everything_then_stops_it_all(tmp_path, how):
    stop_it, expected_returncode = STOPS[how]
    var_dir, log, port = tmp_path / "var", tmp_path / "devrun.log", procs.free_port()
    base = f"http://127.0.0.1:{port}"
    started_at = time.monotonic()
    env = _devrun_env(var_dir, port)
    devrun = procs.start([procs.PYTHON, "-m", "config.devrun"], env=env, log=log)
    children: dict[tuple[int, int], str] = {}
    try:

        def healthy() -> bool:
            assert devrun.poll() is None, f"devrun exited early:\n{procs.tail(log)}"
            return procs.get_json(f"{base}/healthz")[0] == 200

        procs.wait_for(healthy, timeout=STARTUP_TIMEOUT, interval=0.5, what="/healthz 200")
        startup = time.monotonic() - started_at
        status, body = procs.get_json(f"{base}/healthz")
        assert status == 200, body
        assert body is not None
        assert {name: c["ok"] for name, c in body["components"].items()} == {
            "database": True,
            "redis": True,
            "worker": True,
            "scheduler": True,
        }
        assert procs.status_of(f"{base}/api/docs/") == 200
        assert procs.status_of(f"{base}/admin/") == 302  # to the login page
        output = log.read_text()
        for url in ("/", "/api/docs/", "/admin/", "/healthz"):
            assert f"{base}{url}" in output
        assert "Created store #1 'Demo store'." in output
        assert "sk_" in output

        children = {
            identity: cmd
            for pid, cmd in procs.descendants(devrun.pid).items()
            if (identity := procs.process_identity(pid)) is not None
        }
        commands = " | ".join(children.values())
        for expected in ("uvicorn config.asgi:application", "celery -A config worker",
                         "manage.py run_scheduler"):  # fmt: skip
            assert expected in commands, commands
        servers = {
            "postgres": _pid_file(var_dir / "postgres" / "postmaster.pid"),
            "redis": _pid_file(var_dir / "redis" / "redis.pid"),
        }
        assert all(servers.values()), servers
        children.update({identity: name for name, identity in servers.items() if identity})

        stopping_at = time.monotonic()
        stop_it(devrun, children)
        returncode = devrun.wait(timeout=STOP_TIMEOUT)
        stopped = time.monotonic() - stopping_at

        assert returncode == expected_returncode, procs.tail(log)
        assert not procs.group_exists(devrun.pid)
        left = {identity: cmd for identity, cmd in children.items() if procs.alive(identity)}
        assert left == {}
        assert not (var_dir / "postgres" / "postmaster.pid").exists()
        assert [p.name for p in (var_dir / "leases").iterdir()] == []
        print(f"\nmake run ({how}): healthy after {startup:.1f}s, all gone {stopped:.1f}s later")
    finally:
        if devrun.poll() is None:
            procs.stop(devrun, sig=signal.SIGKILL)
        _cleanup(var_dir, children)
