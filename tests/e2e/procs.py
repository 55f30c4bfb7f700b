"""Helpers for multi-process tests: child environments, waiting, and finding processes in /proc."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable


def redis_url_with_db(url: str, db: int) -> str:
    """The same Redis server, another logical database (so tests don't share keys or queues)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        return f"unix://{parts.netloc}{parts.path}?{urlencode(query)}"
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def isolated_redis_db() -> int:
    """A logical database other than 0 (the default everything else uses), per pytest process."""
    return 1 + os.getpid() % 15


def database_url() -> str:
    """A URL for the database this pytest process is using (the test database, during tests)."""
    from django.db import connection

    db = connection.settings_dict
    host = str(db["HOST"] or "")
    host = quote(host, safe="") if host.startswith("/") else host
    auth = quote(str(db["USER"] or ""), safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(str(db["PASSWORD"]), safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgresql://{auth}@{host}{port}/{quote(str(db['NAME']), safe='')}"


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", **overrides)
    return env


def start(argv: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a child in a session of its own (so its whole process group can be signalled)."""
    out = log.open("wb")
    try:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


@contextlib.contextmanager
def web_server(port: int, *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """uvicorn serving config.asgi on ``port``, up (``/healthz`` answers) until the block ends."""
    process = web_server_start(port, env=env, log=log)
    try:
        web_server_wait(port, process, log=log)
        yield process
    finally:
        stop(process)


def web_server_start(
    port: int, *, env: dict[str, str], log: Path, options: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """uvicorn (one process) serving config.asgi on ``port``, with uvicorn's ``options``;
    web_server_wait waits for it. Its graceful shutdown is bounded to 3 s (as make run's is to
    5 s): shoppers' sockets still open at the end of a test would otherwise hold it until stop()
    gives up on it, 20 s later."""
    argv = [
        PYTHON, "-m", "uvicorn", "config.asgi:application", "--port", str(port),
        "--timeout-graceful-shutdown", "3", *options,
    ]  # fmt: skip
    return start(argv, env=env, log=log)


def web_server_wait(
    port: int, process: subprocess.Popen[bytes], *, log: Path, timeout: float = 60
) -> None:
    """Until ``/healthz`` on ``port`` answers (200 or 503); fails at once if the server exits."""

    def up() -> bool:
        assert process.poll() is None, f"the web server on {port} exited:\n{tail(log)}"
        return status_of(f"http://127.0.0.1:{port}/healthz") in (200, 503)

    wait_for(up, timeout=timeout, what=f"the web server on {port}\n{tail(log)}")


def celery_worker_start(
    name: str, *, env: dict[str, str], log: Path, concurrency: int = 1
) -> subprocess.Popen[bytes]:
    """A Celery worker named ``name@<host>``; log_wait(..., "ready.") waits for it."""
    argv = [
        PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
        "--concurrency", str(concurrency), "--without-mingle", "--without-gossip",
        "--hostname", f"{name}@%h",
    ]  # fmt: skip
    return start(argv, env=env, log=log)


def log_wait(
    process: subprocess.Popen[bytes], log: Path, text: str, *, timeout: float, what: str
) -> None:
    """Until ``text`` appears in the child's ``log``; fails at once if the child exits."""

    def written() -> bool:
        assert process.poll() is None, f"{what}: the process exited\n{tail(log)}"
        return text in log.read_text(errors="replace")

    wait_for(written, timeout=timeout, what=f"{what}\n{tail(log)}")


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the child's process group, if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 20
) -> int:
    """Signal the child's process group and wait; SIGKILL the group if it does not stop in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers in its group, if any
    return process.returncode


def wait_for(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any] | None]:
    """(status, body) of a GET; (0, None) when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return 0, None


def post_json(
    url: str, body: Any, *, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """(status, parsed body) of a JSON POST; the body is None when it is not JSON."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def status_of(url: str, timeout: float = 5.0) -> int:
    """The status of a GET (redirects not followed); 0 when nothing answers."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no output)"


# /proc ------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def parent_of(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else stat[0]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def process_identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time): tells a process apart from a later one that reuses its pid."""
    stat = _stat(pid)
    return None if stat is None else (pid, stat[2])


def alive(identity: tuple[int, int]) -> bool:
    stat = _stat(identity[0])
    return stat is not None and stat[2] == identity[1] and stat[1] != "Z"


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``, with its command line."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)] = stat[0]
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = cmdline(pid)
                frontier.append(pid)
    return found


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
