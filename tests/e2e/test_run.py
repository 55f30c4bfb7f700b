"""`make run` (python -m config.devrun) end to end: everything healthy, then Ctrl-C stops it all.

It runs with a var directory of its own, so it starts (and must stop) its own embedded PostgreSQL
and Redis rather than attach to the ones this test run uses.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e import procs

STARTUP_TIMEOUT = 180  # a fresh var directory: initdb, every migration, four processes
STOP_TIMEOUT = 30


def _devrun_env(var_dir: Path, port: int) -> dict[str, str]:
    env = procs.child_env(CARTS_VAR_DIR=str(var_dir), PORT=str(port))
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG",
                 "DJANGO_SECRET_KEY", "RECOVERY_TICKET_KEYS", "CAMPAIGNS_LINK_KEYS",
                 "WEB", "WORKERS", "PROMETHEUS_MULTIPROC_DIR"):  # fmt: skip
        env.pop(name, None)  # embedded servers, settings and keys of its own (a fresh clone)
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


STOPS = {
    # Ctrl-C in a terminal signals the whole foreground process group.
    "ctrl-c": (lambda devrun, children: os.killpg(devrun.pid, signal.SIGINT), 0),
    "sigterm": (lambda devrun, children: os.kill(devrun.pid, signal.SIGTERM), 0),
    # A child that dies is restarted instead: test_make_run_restarts_a_process_that_dies.
}


@pytest.mark.slow
@pytest.mark.parametrize("how", list(STOPS))
def test_make_run_serves_everything_then_stops_it_all(tmp_path, how):
    stop_it, expected_returncode = STOPS[how]
    var_dir, log, port = tmp_path / "var", tmp_path / "devrun.log", procs.free_port()
    base = f"http://127.0.0.1:{port}"
    # An earlier run's metrics, which must not count as this run's.
    (var_dir / "prometheus").mkdir(parents=True)
    (var_dir / "prometheus" / "counter_4242.db").write_bytes(b"old")
    started_at = time.monotonic()
    env = _devrun_env(var_dir, port) | {"WEB": "2", "WORKERS": "2"}
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
            "dead_letters": True,
            "projectors": True,
            "platforms": True,  # no connection is silent (docs/integrations.md, "Health")
        }
        assert procs.status_of(f"{base}/api/docs/") == 200
        assert procs.status_of(f"{base}/admin/") == 302  # to the login page
        # DEBUG is off, and WhiteNoise still serves static files; keys of its own, made once
        assert procs.status_of(f"{base}/static/admin/css/base.css") == 200
        assert procs.status_of(f"{base}/demo/") == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/no-such-page", timeout=5)  # noqa: S310
        assert missing.value.code == 404
        assert b"URLconf" not in missing.value.read()  # the debug page would list the patterns
        assert stat.S_IMODE((var_dir / "secrets.json").stat().st_mode) == 0o600
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
        # WEB=2 WORKERS=2: one uvicorn of two worker processes, two Celery workers of their own
        # names; every child writes its metrics in the emptied var/prometheus.
        direct = {pid: cmd for pid, cmd in procs.descendants(devrun.pid).items()
                  if procs.parent_of(pid) == devrun.pid}  # fmt: skip
        [uvicorn] = [cmd for cmd in direct.values() if "uvicorn config.asgi" in cmd]
        assert uvicorn.endswith("--workers 2"), uvicorn
        workers = sorted(cmd.rsplit(" -n ", 1)[1] for cmd in direct.values()
                         if "celery -A config worker" in cmd)  # fmt: skip
        assert workers == ["worker-1@%h", "worker-2@%h"], direct
        assert "processes: web 2 (uvicorn workers), workers 2 (worker-1..worker-2" in output
        metrics = var_dir / "prometheus"
        assert not (metrics / "counter_4242.db").exists()
        for pid in direct:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"PROMETHEUS_MULTIPROC_DIR={metrics}".encode() in environ, direct[pid]
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


# The processes killed, by a part of their command line: each of make run's children but the
# simulator (uvicorn's main process, whose workers it leaves behind holding the port).
KILLED = {
    "web": "uvicorn config.asgi:application",
    "worker-1": "celery -A config worker",  # WORKERS=1 (the default): worker-1 only
    "scheduler": "manage.py run_scheduler",
    "projectors": "manage.py run_projectors",
}


def _children_of(devrun: subprocess.Popen[bytes]) -> dict[str, tuple[int, int]]:
    """make run's direct children that KILLED names, by name: (pid, start time)."""
    found: dict[str, tuple[int, int]] = {}
    for pid, cmd in procs.descendants(devrun.pid).items():
        if procs.parent_of(pid) != devrun.pid:
            continue
        for name, part in KILLED.items():
            if part in cmd and (identity := procs.process_identity(pid)) is not None:
                found[name] = identity
    return found


@pytest.mark.slow
def test_make_run_restarts_a_process_that_dies(tmp_path):
    """SIGKILL each of the web server, worker-1, scheduler and projectors: make run starts each
    again (a new process, same command), /healthz is ok again with heartbeats newer than the kill,
    the web serves, and Ctrl-C then still stops everything, the new processes included."""
    var_dir, log, port = tmp_path / "var", tmp_path / "devrun.log", procs.free_port()
    base = f"http://127.0.0.1:{port}"
    devrun = procs.start(
        [procs.PYTHON, "-m", "config.devrun"], env=_devrun_env(var_dir, port), log=log
    )
    seen: dict[tuple[int, int], str] = {}
    try:

        def healthy() -> bool:
            assert devrun.poll() is None, f"devrun exited early:\n{procs.tail(log)}"
            return procs.get_json(f"{base}/healthz")[0] == 200

        procs.wait_for(healthy, timeout=STARTUP_TIMEOUT, interval=0.5, what="/healthz 200")
        before = _children_of(devrun)
        assert set(before) == set(KILLED), procs.tail(log)
        commands = {name: procs.cmdline(pid) for name, (pid, _) in before.items()}
        seen.update({i: cmd for p, cmd in procs.descendants(devrun.pid).items()
                     if (i := procs.process_identity(p))})  # fmt: skip

        killed_at = time.time()
        for identity in before.values():
            os.kill(identity[0], signal.SIGKILL)

        def restarted() -> dict[str, tuple[int, int]] | None:
            assert devrun.poll() is None, f"devrun exited:\n{procs.tail(log)}"
            now = _children_of(devrun)
            new = {n: i for n, i in now.items() if i != before[n]}
            return new if set(new) == set(KILLED) else None

        after = procs.wait_for(restarted, timeout=15, interval=0.2, what="every process restarted")
        assert {name: procs.cmdline(pid) for name, (pid, _) in after.items()} == commands
        assert not any(procs.alive(i) for i in before.values())

        def fresh() -> bool:
            since_kill = time.time() - killed_at
            status, body = procs.get_json(f"{base}/healthz")
            if status != 200 or body is None:
                return False
            ages = {n: body["components"][n].get("age_seconds") for n in ("worker", "scheduler")}
            # Heartbeats written since the kill, so by the new worker and scheduler.
            return all(a is not None and a < since_kill for a in ages.values())

        # The new scheduler takes over once the dead one's lock expires (carts.scheduler, 15 s).
        restarted_after = time.time() - killed_at
        procs.wait_for(fresh, timeout=45, interval=0.5, what="/healthz ok with fresh heartbeats")
        healthy_after = time.time() - killed_at
        assert procs.status_of(f"{base}/api/docs/") == 200
        assert procs.status_of(f"{base}/admin/") == 302
        output = log.read_text()
        for name in KILLED:
            assert f"{name} exited with code -9" in output, output
            assert f"{name} restarted (pid {after[name][0]})" in output, output
        assert devrun.poll() is None

        seen.update({i: cmd for p, cmd in procs.descendants(devrun.pid).items()
                     if (i := procs.process_identity(p))})  # fmt: skip
        os.kill(devrun.pid, signal.SIGTERM)
        assert devrun.wait(timeout=STOP_TIMEOUT) == 0, procs.tail(log)
        assert not procs.group_exists(devrun.pid)
        assert {i: cmd for i, cmd in seen.items() if procs.alive(i)} == {}
        assert not (var_dir / "postgres" / "postmaster.pid").exists()
        print(
            f"\nmake run: all four restarted {restarted_after:.1f}s after the kill,"
            f" healthy again after {healthy_after:.1f}s"
        )
        print("\n".join(line for line in output.splitlines() if "devrun" in line[:12]))
    finally:
        if devrun.poll() is None:
            procs.stop(devrun, sig=signal.SIGKILL)
        _cleanup(var_dir, seen)


_SUPERVISE = """
import sys

from config import devrun

devrun.RESTART_RESET = 3.0  # a minute in make run
py = sys.executable
listed = [
    devrun.Program("dies", (py, "-c", "raise SystemExit(3)")),
    devrun.Program("steady", (py, "-c", "import time; time.sleep(3.2)")),
]
sys.exit(devrun.supervise(listed, devrun.Printer(sys.stdout, [p.name for p in listed])))
"""


def test_the_supervisor_backs_off_a_child_that_keeps_dying(tmp_path):
    """A child that dies at once is restarted after 1 s, 2 s, 4 s...; one that stayed up long
    enough is restarted after 1 s every time. SIGTERM then stops the supervisor, exit code 0."""
    supervisor = subprocess.Popen(
        [procs.PYTHON, "-c", _SUPERVISE],
        cwd=procs.ROOT,
        env=procs.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert supervisor.stdout is not None
        deadline = time.monotonic() + 30
        for line in supervisor.stdout:
            lines.append(line.rstrip())
            steady = [x for x in lines if "steady exited" in x]
            if len(steady) >= 2 and any("dies exited" in x and "in 4s" in x for x in lines):
                break
            assert time.monotonic() < deadline, "\n".join(lines)
        supervisor.send_signal(signal.SIGTERM)
        rest, _ = supervisor.communicate(timeout=20)
    finally:
        procs.stop(supervisor, sig=signal.SIGKILL)  # type: ignore[arg-type]
    lines += rest.splitlines()
    output = "\n".join(lines)

    def delays(name: str) -> list[str]:
        return [x.rsplit(" in ", 1)[1] for x in lines if f"{name} exited with code" in x]

    assert delays("dies")[:3] == ["1s", "2s", "4s"], output
    assert output.count("dies exited with code 3 after ") == len(delays("dies"))
    assert delays("steady")[:2] == ["1s", "1s"], output
    assert "SIGTERM received; stopping" in output
    assert supervisor.returncode == 0, output


# WEB and WORKERS ---------------------------------------------------------------------------------


def test_make_run_takes_the_number_of_web_and_worker_processes(monkeypatch):
    from config import devrun

    monkeypatch.delenv("WEB", raising=False)
    monkeypatch.delenv("WORKERS", raising=False)
    assert devrun.counts() == devrun.Counts(web=2, workers=1)  # as make run was before
    monkeypatch.setenv("WEB", "3")
    monkeypatch.setenv("WORKERS", " 2 ")

    wanted = devrun.counts()
    listed = devrun.programs(port=8123, web=wanted.web, workers=wanted.workers)

    assert wanted == devrun.Counts(web=3, workers=2)
    by_name = {p.name: p.argv for p in listed}
    assert [p.name for p in listed][:5] == [
        "web",
        "worker-1",
        "worker-2",
        "scheduler",
        "projectors",
    ]
    assert by_name["web"][-2:] == ("--workers", "3")
    for name in ("worker-1", "worker-2"):
        assert by_name[name][1:5] == ("-m", "celery", "-A", "config")
        assert by_name[name][-2:] == ("-n", f"{name}@%h")
    # The defaults: one uvicorn of 2 worker processes, one Celery worker.
    default = {p.name: p.argv for p in devrun.programs(port=8123)}
    assert default["web"][-2:] == ("--workers", "2")
    assert [n for n in default if n.startswith("worker")] == ["worker-1"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("WEB", "abc"), ("WEB", "0"), ("WEB", "33"), ("WEB", "-1"), ("WEB", "2.0"),
     ("WORKERS", "two"), ("WORKERS", "0"), ("WORKERS", "100"), ("WORKERS", "1e1")],
)  # fmt: skip
def test_a_bad_number_of_processes_is_refused_before_anything_starts(tmp_path, name, value):
    var_dir = tmp_path / "var"
    env = _devrun_env(var_dir, procs.free_port()) | {name: value}

    done = subprocess.run(
        [procs.PYTHON, "-m", "config.devrun"],
        cwd=procs.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        f"make run: {name}={value!r}: {name} is the number of "
        + ("web (uvicorn worker) processes" if name == "WEB" else "Celery worker processes")
        + f", a whole number from 1 to 32 (default {2 if name == 'WEB' else 1});"
        f" e.g. {name}=2 make run\n"
    )
    assert done.stdout == ""
    assert not var_dir.exists()  # no embedded server, no migration, no metrics directory


def test_the_metrics_directory_is_emptied_unless_the_environment_names_one(tmp_path, monkeypatch):
    from config import devrun

    stale = tmp_path / "var" / "prometheus" / "gauge_livesum_77.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # unset (and restored after the test)

    made = devrun.prometheus_dir_prepare(tmp_path / "var")

    assert made == tmp_path / "var" / "prometheus"
    assert list(made.iterdir()) == []
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(made)  # the children inherit it

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "counter_1.db").write_bytes(b"kept")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(theirs))
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"old")

    assert devrun.prometheus_dir_prepare(tmp_path / "var") == theirs
    assert (theirs / "counter_1.db").read_bytes() == b"kept"  # someone else's: left alone
    assert stale.exists()
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(theirs)


def test_the_banner_shows_how_many_processes_run(monkeypatch, tmp_path):
    import io

    from config import devrun

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    out = io.StringIO()
    printer = devrun.Printer(out, ["web"])

    devrun.banner(printer, port=8126, credentials="x", counts=devrun.Counts(web=3, workers=2))
    devrun.banner(printer, port=8126, credentials="x", counts=devrun.Counts(web=11, workers=1))

    text = out.getvalue()
    assert (
        "processes: web 3 (uvicorn workers), workers 2 (worker-1..worker-2, 2 each), scheduler,"
        " projectors; WEB=<n> WORKERS=<n> make run for more\n"
    ) in text
    assert "workers 1 (worker-1, 2 each)" in text
    assert f"metrics: each process writes them in {tmp_path / 'metrics'}/\n" in text
    # 11 web processes of 8 connections each: more than PostgreSQL's default allows.
    assert text.count("warning: ") == 1
    assert "warning: WEB=11 web processes may hold 88 database connections" in text
