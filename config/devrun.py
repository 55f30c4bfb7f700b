"""``make run``: migrate, ensure the demo store, then run every process in the foreground.

The ASGI server (HTTP + websockets; WEB uvicorn worker processes, default 2), WORKERS Celery
workers (default 1, each a program of its own: worker-1, worker-2...), the scheduler, the
projectors and the shopper simulator (unless SIMULATE=0) run as children, each in a session of
its own (so a terminal's Ctrl-C reaches only this supervisor, which stops them in order), with
their output prefixed by name. Ctrl-C or SIGTERM sends SIGTERM to every child's process group,
then SIGKILL to whatever is left after a grace period; a second Ctrl-C kills at once. A child that
exits on its own is restarted (what is left of its process group killed first) after a back-off:
1 s, doubling to 30 s while it keeps dying, back to 1 s once it has stayed up for a minute. The
others run on. Every child gets PROMETHEUS_MULTIPROC_DIR (var/prometheus, emptied at start,
unless the environment sets it) for prometheus-client's multiprocess metrics.

This process exits only after its children are gone, so with embedded PostgreSQL/Redis its lease
is the last one (config.embedded) and the servers stop with it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, TextIO

from django.core.mail.backends.base import BaseEmailBackend

from config import env

if TYPE_CHECKING:
    from carts.services import StoreCredentials

_mail_log = logging.getLogger("config.devrun.email")
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
# Celery workers: WORKERS programs of their own (worker-1..N), each a prefork pool of this many.
WORKERS_DEFAULT = 1
WORKER_CONCURRENCY = 2
PROCESSES_MAX = 32
# Each web process holds up to DB_POOL_SIZE connections; past this many in all, the banner warns
# (PostgreSQL's default max_connections, the embedded server's, is 100).
CONNECTIONS_WARN = 80
# prometheus-client's multiprocess mode: every child writes its metrics as files in one directory.
PROMETHEUS_DIR = "prometheus"


class CountError(ValueError):
    """WEB or WORKERS is not a whole number in 1..PROCESSES_MAX."""


@dataclass(frozen=True, slots=True)
class Counts:
    web: int = WEB_WORKERS
    workers: int = WORKERS_DEFAULT


def _count(name: str, default: int, what: str) -> int:
    raw = env.get_str(name).strip()
    if not raw:
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= value <= PROCESSES_MAX:
        raise CountError(
            f"{name}={raw!r}: {name} is the number of {what}, a whole number from 1 to"
            f" {PROCESSES_MAX} (default {default}); e.g. {name}=2 make run"
        )
    return value


def counts() -> Counts:
    """How many web and worker processes make run starts (WEB, WORKERS); CountError naming the
    variable when one is not a whole number from 1 to PROCESSES_MAX."""
    return Counts(
        web=_count("WEB", WEB_WORKERS, "web (uvicorn worker) processes"),
        workers=_count("WORKERS", WORKERS_DEFAULT, "Celery worker processes"),
    )


def worker_names(workers: int) -> list[str]:
    return [f"worker-{n}" for n in range(1, workers + 1)]


def programs(*, port: int, web: int = WEB_WORKERS, workers: int = WORKERS_DEFAULT) -> list[Program]:
    python = sys.executable
    manage = str(env.BASE_DIR / "manage.py")
    listed = [
        Program(
            "web",
            (
                python, "-m", "uvicorn", "config.asgi:application",
                "--host", "127.0.0.1", "--port", str(port),
                "--lifespan", "off", "--timeout-graceful-shutdown", "5",
                "--workers", str(web),
            ),
            WEB_ENV,
        ),
        # Each worker a node of its own name (two with one name would be one to Celery's
        # inspect and control, and their logs would not tell them apart).
        *(
            Program(
                name,
                (python, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                 "--concurrency", str(WORKER_CONCURRENCY), "-n", f"{name}@%h"),
            )
            for name in worker_names(workers)
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
# runs in real time (a cart counts as abandoned 2 minutes after it goes quiet, an email 3 minutes
# later, a discount email at 15: campaigns.services.campaign_demo_ensure), so shoppers who left are
# still around when it reaches them.
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


# The admin password and the demo store's keys, written when they are made (they are stored hashed
# and shown only then): mode 0600, created once, never overwritten; newer ones are appended.
CREDENTIALS_FILE = "credentials.txt"
DOCS = "docs/first-hour.md"


def links(base: str) -> list[tuple[str, str]]:
    """What a newcomer opens, in the order the banner (and the site root) lists them."""
    return [
        ("site", f"{base}/"),
        ("demo", f"{base}/demo/"),
        ("dashboard", f"{base}/dashboard/"),
        ("admin", f"{base}/admin/"),
        ("API docs", f"{base}/api/docs/"),
        ("health", f"{base}/healthz"),
        ("guide", DOCS),
    ]


def display_path(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it (var/credentials.txt)."""
    try:
        return str(path.relative_to(env.BASE_DIR))
    except ValueError:
        return str(path)


def credentials_text(
    *,
    base: str,
    admin_password: str | None,
    store: StoreCredentials | None,
    store_name: str,
    now: datetime,
) -> str:
    lines = [f"# Written {now:%Y-%m-%d %H:%M:%S %Z} by make run for {base}"]
    if admin_password is not None:
        lines += [
            "",
            f"admin user ({base}/admin/ and {base}/dashboard/)",
            "  username         admin",
            f"  password         {admin_password}",
        ]
    if store is not None:
        lines += [
            "",
            f"store #{store.store_id} {store_name!r} ({base}/demo/)",
            f"  secret key       {store.secret_key}",
            "                   server to server: 'Authorization: Bearer <secret key>'",
            f"  publishable key  {store.publishable_key}",
            "                   in the browser snippet",
            f"  webhook secret   {store.webhook_secret}",
        ]
    return "\n".join(lines) + "\n"


def credentials_record(path: Path, text: str) -> None:
    """Create ``path`` (0600) with ``text``; if it exists, append ``text``: never overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        header = (
            "# make run's credentials: the admin password and the demo store's keys as they were\n"
            "# made (stored hashed, never shown again). Newer ones are appended below.\n"
            "# New admin password: .venv/bin/python manage.py changepassword admin\n"
            "# New store keys:     .venv/bin/python manage.py rotate_store_keys --store <id>\n\n"
        )
    except FileExistsError:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        header = "\n"
    with os.fdopen(fd, "w") as out:
        out.write(header + text)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


def first_start(*, port: int, var_dir: Path | None = None, out: TextIO | None = None) -> str:
    """The demo store (allowing this server's origins) and the admin user, each made on the first
    start only: their secrets printed once and recorded in ``var_dir/credentials.txt``. Returns
    the line the banner shows about where the credentials are."""
    from django.core.management import call_command
    from django.core.management.base import BaseCommand

    from carts.management.commands.create_store import DEMO_STORE_NAME, print_credentials
    from carts.services import StoreCredentials

    out = sys.stdout if out is None else out
    path = (env.VAR_DIR if var_dir is None else var_dir) / CREDENTIALS_FILE
    base = f"http://127.0.0.1:{port}"
    answer = io.StringIO()
    # The demo storefront (/demo/) is served from here, so the demo store allows this origin.
    call_command(
        "create_store",
        "--demo",
        "--json",
        "--origin",
        base,
        "--origin",
        f"http://localhost:{port}",
        stdout=answer,
        stderr=io.StringIO(),
    )
    made = json.loads(answer.getvalue())
    store = StoreCredentials(**made) if made["secret_key"] else None
    printer = BaseCommand(stdout=out)
    if store is not None:
        heading = f"Created store #{store.store_id} {DEMO_STORE_NAME!r}."
        print_credentials(printer, store, as_json=False, heading=heading)
    password = ensure_admin_user()
    if password:
        out.write(f"Created the admin user: username 'admin', password {password!r}.\n")
    if store is not None or password:
        text = credentials_text(
            base=base,
            admin_password=password,
            store=store,
            store_name=DEMO_STORE_NAME,
            now=datetime.now(UTC),
        )
        credentials_record(path, text)
        out.write(f"Written to {display_path(path)} (mode 0600), to read again later.\n")
    out.flush()
    if path.exists():
        return f"credentials: {display_path(path)}"
    return (
        f"credentials: shown when store #{made['store_id']} and the admin user were first made"
        " (before make run kept them in var/); new ones: manage.py changepassword admin,"
        f" manage.py rotate_store_keys --store {made['store_id']}"
    )


def prometheus_dir_prepare(var_dir: Path | None = None) -> Path:
    """The directory every child writes its metrics to (prometheus-client's multiprocess mode):
    PROMETHEUS_MULTIPROC_DIR when the environment sets it (made if missing, never emptied: it is
    someone else's); else var/prometheus, emptied (the files of an earlier run's processes would
    count as this run's) and exported to the children."""
    given = env.get_str("PROMETHEUS_MULTIPROC_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        return Path(given)
    path = (env.VAR_DIR if var_dir is None else var_dir) / PROMETHEUS_DIR
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def banner(printer: Printer, *, port: int, credentials: str, counts: Counts | None = None) -> None:
    counts = Counts() if counts is None else counts
    for label, url in links(f"http://127.0.0.1:{port}"):
        printer.system(f"{label:<10}{url}")
    printer.system(credentials)
    workers = worker_names(counts.workers)
    named = workers[0] if len(workers) == 1 else f"{workers[0]}..{workers[-1]}"
    printer.system(
        f"processes: web {counts.web} (uvicorn workers), workers {counts.workers} ({named},"
        f" {WORKER_CONCURRENCY} each), scheduler, projectors;"
        " WEB=<n> WORKERS=<n> make run for more"
    )
    connections = counts.web * int(dict(WEB_ENV)["DB_POOL_SIZE"])
    if connections > CONNECTIONS_WARN:
        printer.system(
            f"warning: WEB={counts.web} web processes may hold {connections} database"
            " connections (PostgreSQL's default max_connections is 100)"
        )
    metrics = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics:
        printer.system(f"metrics: each process writes them in {display_path(Path(metrics))}/")
    if os.environ.get("EMAIL_BACKEND") == "config.devrun.EmailBackend":
        emails = display_path(env.VAR_DIR / EMAILS_DIR)
        printer.system(f"emails: not sent; each saved in {emails}/ and logged as one line")
    printer.system("logs: progress only; LOG_LEVEL=DEBUG make run for every request and batch")
    printer.system("Ctrl-C stops everything")


# -- emails in make run: each saved whole under var/emails/, one line in the worker's log ---------

EMAILS_DIR = "emails"
_RESTORE_LINK = re.compile(r"https?://\S+/r/[^\s/]+(?=\s|$)")


class EmailBackend(BaseEmailBackend):
    """``make run``'s email backend (EMAIL_BACKEND=config.devrun.EmailBackend, which make run sets
    unless the environment says otherwise): no email leaves the machine; each is saved whole as
    ``var/emails/<time>-<n>.eml`` (open it in a mail client) and logged as one line with its
    recipient, subject and restore link, instead of a hundred lines of MIME in the worker's log."""

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        folder = env.VAR_DIR / EMAILS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        sent = 0
        for message in email_messages:
            if not message.recipients():
                continue
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
            path = folder / f"{stamp}-{os.getpid()}-{sent}.eml"
            path.write_bytes(message.message().as_bytes(linesep="\n"))
            link = _RESTORE_LINK.search(str(message.body))
            _mail_log.info(
                "email to %s: %r; restore link %s; saved in %s",
                ", ".join(message.recipients()),
                message.subject,
                link.group(0) if link else "(none)",
                display_path(path),
            )
            sent += 1
        return sent


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Until the supervisor takes over, SIGTERM unwinds like Ctrl-C, so atexit releases the lease.
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    try:
        # Before anything starts (embedded servers, migrations): a bad count is a typo.
        wanted = counts()
    except CountError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    try:
        # Before django.setup(), so this process and every child agree on it.
        prometheus_dir_prepare()
        import django
        from django.core.management import call_command
        from django.db import connections

        django.setup()  # starts (or attaches to) embedded PostgreSQL/Redis and takes a lease
        call_command("migrate", interactive=False)
        port = env.get_int("PORT", 8000)
        credentials = first_start(port=port)
        connections.close_all()

        # Links in campaign emails lead back to this server unless configured otherwise.
        os.environ.setdefault("CAMPAIGNS_PUBLIC_URL", f"http://127.0.0.1:{port}")
        # Emails saved under var/emails/, one line each in the log (unless configured otherwise).
        os.environ.setdefault("EMAIL_BACKEND", "config.devrun.EmailBackend")
        listed = programs(port=port, web=wanted.web, workers=wanted.workers)
        printer = Printer(sys.stdout, [p.name for p in listed])
        banner(printer, port=port, credentials=credentials, counts=wanted)
        return supervise(listed, printer)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
