"""Pieces the benchmarks share: servers in their own process group, ports, Django, the commit, and
a database and Redis logical database of a run's own."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Subprocess:
    """A server in its own process group (session), its output in a file, stopped on any exit."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.cmd = cmd
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        # A session of its own: a Ctrl-C in the terminal reaches only us, and we stop it in order.
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=BASE_DIR,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def exited(self) -> int | None:
        """The exit code once it has exited (None while it runs or before it starts)."""
        return None if self.proc is None else self.proc.poll()

    def log_size(self) -> int:
        self.log.flush()
        return os.fstat(self.log.fileno()).st_size

    def log_text(self, offset: int = 0) -> str:
        self.log.seek(offset)
        text = self.log.read().decode(errors="replace")
        self.log.seek(0, os.SEEK_END)
        return text

    def output(self) -> str:
        return self.log_text()[-4000:]

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Workers left behind by a supervisor that died abnormally share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        self.log.close()


def django_setup() -> None:
    """Django on the development database (embedded servers unless the URLs are set), migrated."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def git_head() -> str:
    """The commit measured, marked ``+dirty`` when tracked files differ from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "."], cwd=BASE_DIR, capture_output=True
    ).returncode
    return f"{head}+dirty" if dirty else head


# Isolation: a database and a Redis logical database of the run's own ----------------------------


def redis_url_with_db(url: str, db: int) -> str:
    """The same Redis server, another logical database."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        return f"unix://{parts.netloc}{parts.path}?{urlencode(query)}"
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=10)


def redis_db_claim(base_url: str, run: str, *, bench: str) -> int:
    """An empty logical database (1-15), claimed with a key ``bench:<bench>:run``; an offset from
    our pid first."""
    start = os.getpid() % 15
    for i in range(15):
        db = 1 + (start + i) % 15
        client = redis_client(redis_url_with_db(base_url, db))
        try:
            if client.dbsize() == 0 and client.set(f"bench:{bench}:run", run, nx=True, ex=86400):
                return db
        finally:
            client.close()
    raise RuntimeError("no empty Redis logical database (1-15) for the bench")


def database_url_with_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def databases_drop_stale(admin_url: str, prefix: str) -> None:
    """Drop the databases ``<prefix><pid>_...`` of earlier runs whose process is gone (a run
    killed with SIGKILL)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"]
            ).fetchall()
        ]
        for name in names:
            pid = name.removeprefix(prefix).split("_")[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                log(f"dropping {name}, left by an earlier run")
                with contextlib.suppress(psycopg.Error):
                    conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


def database_create(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_drop(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def results_print(bench: str, figures: dict[str, Any]) -> None:
    """The benchmark's last line: one JSON object, also saved under bench/results/ (ignored by
    git) as <bench>-<UTC time>.json."""
    import json
    from datetime import UTC, datetime

    line = json.dumps(figures, separators=(",", ":"))
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"{bench}-{datetime.now(UTC):%Y%m%dT%H%M%S}.json").write_text(line + "\n")
    print(line)


# Writer processes: a group of spawned processes driven in lock-step by the parent -------------


def _group_child(factory: Any, args: tuple, conn: Any) -> None:
    """A group member: build the worker, then run the methods the parent names until "stop"."""
    # Ctrl-C in the terminal reaches the whole process group: the parent stops us in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = None
    while True:
        message = conn.recv()
        if message is None:
            break
        name, kwargs = message
        try:
            if worker is None:
                worker = factory(*args)
            conn.send(("ok", getattr(worker, name)(**kwargs)))
        except BaseException as exc:  # reported to the parent, which raises it
            import traceback

            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    close = getattr(worker, "close", None)
    if close is not None:
        close()


class ProcessGroup:
    """``len(args)`` processes (multiprocessing, spawn), each holding ``factory(*args[i])``.

    ``call(name, **kwargs)`` runs that method in every process at once and returns their results in
    order. ``factory`` must be importable (module level): with spawn, a child imports the main
    module again (as ``__mp_main__``), so a bench script must not do work at import time. The
    processes are daemons: they die with the parent even when it is killed."""

    def __init__(self, factory: Any, args: list[tuple]) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conns = []
        self.procs = []
        for a in args:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_group_child, args=(factory, a, child), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def call(self, name: str, **kwargs: Any) -> list[Any]:
        self.send(name, **kwargs)
        return self.collect()

    def send(self, name: str, **kwargs: Any) -> None:
        """Start ``name`` in every process without waiting (``collect`` gets the results)."""
        for conn in self.conns:
            conn.send((name, kwargs))

    def collect(self) -> list[Any]:
        results: list[Any] = []
        errors: list[str] = []
        for conn in self.conns:
            status, value = conn.recv()
            (results if status == "ok" else errors).append(value)
        if errors:
            raise RuntimeError(f"{len(errors)} worker(s) failed; first:\n{errors[0]}")
        return results

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()


def timed_loop(step: Any, start: float, end: float) -> dict[str, Any]:
    """Call ``step()`` from wall-clock time ``start`` (shared by every process of a round) until
    ``end``; each call is one unit of work. Returns the count, the time the last call ended and
    each call's latency (s)."""
    import time

    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)
    latencies = []
    now = time.time()
    while now < end:
        step()
        after = time.time()
        latencies.append(after - now)
        now = after
    return {"count": len(latencies), "last": now, "latencies": latencies}


def timed_summary(results: list[dict[str, Any]], start: float) -> dict[str, float]:
    """A round's events/s over its processes (from the common start to the last call's end) and
    the latency percentiles in ms (nearest rank)."""
    import math

    count = sum(r["count"] for r in results)
    seconds = max(r["last"] for r in results) - start
    ordered = sorted(x for r in results for x in r["latencies"])

    def pct(p: float) -> float:
        if not ordered:
            return float("nan")
        rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return round(ordered[rank] * 1000, 2)

    return {
        "events": count,
        "seconds": round(seconds, 3),
        "eps": round(count / seconds, 1),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
    }


# Measurement -------------------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


# Processes' memory and the machine's load ----------------------------------------------------


def process_tree_rss(pid: int) -> int:
    """Resident memory (bytes) of a process and its descendants (a Celery worker's pool, uvicorn's
    workers); 0 once it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += int(proc.memory_info().rss)
    return total


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += float(times.user + times.system)
    return total


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (other people's work included)."""
    return [round(x, 2) for x in os.getloadavg()]
