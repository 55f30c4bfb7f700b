"""``make run``: migrate, ensure the demo store, then run every process in the foreground.

The ASGI server (HTTP + websockets), a Celery worker, the scheduler, the projectors and the
shopper simulator (unless SIMULATE=0) run as children, each in a session of its own (so a
terminal's Ctrl-C reaches only this supervisor, which stops them in order), with their output
prefixed by name. Ctrl-C or SIGTERM sends SIGTERM to every child's process group, then SIGKILL to
whatever is left after a grace period; a second Ctrl-C kills at once. A child that exits on its
own is restarted (what is left of its process group killed first) after a back-off: 1 s, doubling
to 30 s while it keeps dying, back to 1 s once it has stayed up for a minute. The others run on.

This process exits only after its children are gone, so with embedded PostgreSQL/Redis its lease
is the last one (config.embedded) and the servers stop with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO

from config import env

GRACE_SECONDS = 10.0
POLL_SECONDS = 0.2
# A child that dies is restarted after RESTART_FIRST seconds, doubling up to RESTART_MAX while it
# keeps dying; one that stayed up for RESTART_RESET seconds starts again from RESTART_FIRST.
RESTART_FIRST = 1.0
RESTART_MAX = 30.0
RESTART_RESET = 60.0
_COLOURS = ("36", "33", "32", "35", "34", "31")


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


# The web server's settings, chosen by measurement (docs/benchmarks.md): two uvicorn workers on
# two cores, each with a small connection pool. bench/ingest.py runs the server the same way.
WEB_WORKERS = 2
WEB_ENV = (("DB_POOL_SIZE", "8"),)


def programs(*, port: int) -> list[Program]:
    python = sys.executable
    manage = str(env.BASE_DIR / "manage.py")
    listed = [
        Program(
            "web",
            (
                python, "-m", "uvicorn", "config.asgi:application",
                "--host", "127.0.0.1", "--port", str(port),
                "--lifespan", "off", "--timeout-graceful-shutdown", "5",
                "--workers", str(WEB_WORKERS),
            ),
            WEB_ENV,
        ),
        Program(
            "worker",
            (python, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
             "--concurrency", "2"),
        ),
        Program("scheduler", (python, manage, "run_scheduler")),
        Program("projectors", (python, manage, "run_projectors")),
    ]  # fmt: skip
    if env.get_bool("SIMULATE", True):
        # Shoppers for the demo store, so its dashboard fills within minutes; it waits for
        # /healthz itself. SIMULATE=0 turns it off.
        listed.append(Program("simulator", simulator_argv(port=port)))
    return listed


# Light on purpose (two cores shared by everything): a new shopper every 3 s on average, visits
# 60 times faster than real (a few seconds each), time away 10 times faster: the demo campaign
# runs in real time (on-site nudge 30 minutes after a cart goes quiet, email an hour later), so
# shoppers who left are still around, for a few hours, when it reaches them.
SIMULATOR_RATE = 20
SIMULATOR_SPEED = 60
SIMULATOR_AWAY_SPEED = 10
SIMULATOR_CONCURRENCY = 8


def simulator_argv(*, port: int) -> tuple[str, ...]:
    return (
        sys.executable, str(env.BASE_DIR / "manage.py"), "simulate", "--forever",
        "--rate", str(SIMULATOR_RATE), "--speed", str(SIMULATOR_SPEED),
        "--away-speed", str(SIMULATOR_AWAY_SPEED), "--concurrency", str(SIMULATOR_CONCURRENCY),
        "--url", f"http://127.0.0.1:{port}",
    )  # fmt: skip


class Printer:
    """Writes whole lines, each prefixed with the time and the name of the process it came from."""

    def __init__(self, stream: IO[str], names: Sequence[str]) -> None:
        self._stream = stream
        self._width = max(len(n) for n in [*names, "devrun"])
        self._colour = stream.isatty()
        self._codes = {n: _COLOURS[i % len(_COLOURS)] for i, n in enumerate(names)}
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:<{self._width}} |"
        if self._colour:
            prefix = f"\033[{self._codes.get(name, '1')}m{prefix}\033[0m"
        with self._lock:
            self._stream.write(f"{prefix} {text.rstrip()}\n")
            self._stream.flush()

    def system(self, text: str) -> None:
        self.line("devrun", text)


class Child:
    def __init__(self, program: Program, printer: Printer) -> None:
        self.name = program.name
        self.program = program
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            program.argv,
            cwd=env.BASE_DIR,
            env=env.child_environment(PYTHONUNBUFFERED="1", **dict(program.env)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signalled (and swept) as a whole
        )
        self._pump = threading.Thread(
            target=self._copy_output, args=(printer,), name=f"devrun-{self.name}", daemon=True
        )
        self._pump.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # group already gone
            os.killpg(self.pid, sig)

    def join_output(self) -> None:
        self._pump.join(timeout=5)

    def _copy_output(self, printer: Printer) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            printer.line(self.name, raw.decode(errors="replace"))
        self.process.stdout.close()


def supervise(listed: Sequence[Program], printer: Printer) -> int:
    """Run the programs until a signal, restarting any that exits; stop them all; return 0."""
    signals: list[int] = []
    wake = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)
        wake.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    children: list[Child] = []
    delays = {program.name: RESTART_FIRST for program in listed}
    restart_at: dict[int, float] = {}  # index in children -> when its replacement starts
    try:
        for program in listed:
            if signals:
                break
            children.append(Child(program, printer))
            printer.system(f"{program.name} started (pid {children[-1].pid})")
        while not signals:
            now = time.monotonic()
            for i, child in enumerate(children):
                if i in restart_at or child.running():
                    continue
                # Whatever it left in its process group (pool processes, uvicorn's workers still
                # holding the port) goes first, or its replacement would find them in its way.
                child.signal_group(signal.SIGKILL)
                up = now - child.started_at
                if up >= RESTART_RESET:
                    delays[child.name] = RESTART_FIRST
                delay = delays[child.name]
                delays[child.name] = min(delay * 2, RESTART_MAX)
                restart_at[i] = now + delay
                printer.system(
                    f"{child.name} exited with code {child.process.returncode} after {up:.0f}s;"
                    f" restarting it in {delay:.0f}s"
                )
            for i, when in sorted(restart_at.items()):
                if now >= when and not signals:
                    del restart_at[i]
                    children[i] = Child(children[i].program, printer)
                    printer.system(f"{children[i].name} restarted (pid {children[i].pid})")
            wake.wait(POLL_SECONDS)
        printer.system(f"{signal.Signals(signals[0]).name} received; stopping")
    finally:
        _stop(children, printer, signals)
    return 0


def _stop(children: Sequence[Child], printer: Printer, signals: list[int]) -> None:
    received = len(signals)
    for child in children:
        if child.running():
            printer.system(f"stopping {child.name} (SIGTERM)")
            child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while any(c.running() for c in children):
        if time.monotonic() > deadline or len(signals) > received:
            break
        time.sleep(0.1)
    for child in children:
        if child.running():
            printer.system(f"{child.name} did not stop; killing it (SIGKILL)")
            child.signal_group(signal.SIGKILL)
    for child in children:
        child.process.wait()
        # Anything still in its process group (a pool process whose parent died) goes too.
        child.signal_group(signal.SIGKILL)
        child.join_output()
        printer.system(f"{child.name} stopped (exit code {child.process.returncode})")


def ensure_admin_user() -> str | None:
    """Create an ``admin`` superuser on the first run; return its password (shown once)."""
    import secrets

    from django.contrib.auth import get_user_model

    users = get_user_model()
    if users.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    users.objects.create_superuser(username="admin", email="", password=password)
    return password


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Until the supervisor takes over, SIGTERM unwinds like Ctrl-C, so atexit releases the lease.
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    try:
        import django
        from django.core.management import call_command
        from django.db import connections

        django.setup()  # starts (or attaches to) embedded PostgreSQL/Redis and takes a lease
        call_command("migrate", interactive=False)
        port = env.get_int("PORT", 8000)
        # The demo storefront (/demo/) is served from here, so the demo store allows this origin.
        call_command(
            "create_store",
            "--demo",
            "--origin",
            f"http://127.0.0.1:{port}",
            "--origin",
            f"http://localhost:{port}",
        )
        password = ensure_admin_user()
        if password:
            print(f"Created the admin user: username 'admin', password {password!r} (shown once).")
        connections.close_all()

        # Links in campaign emails lead back to this server unless configured otherwise.
        os.environ.setdefault("CAMPAIGNS_PUBLIC_URL", f"http://127.0.0.1:{port}")
        listed = programs(port=port)
        printer = Printer(sys.stdout, [p.name for p in listed])
        base = f"http://127.0.0.1:{port}"
        for label, url in (
            ("site", f"{base}/"),
            ("API docs", f"{base}/api/docs/"),
            ("admin", f"{base}/admin/"),
            ("health", f"{base}/healthz"),
        ):
            printer.system(f"{label:<9} {url}")
        printer.system("Ctrl-C stops everything")
        return supervise(listed, printer)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
