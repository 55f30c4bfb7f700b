"""The projector runner survives a catch-up that raises: it logs, backs off and tries again.

An event a projector cannot apply is dead-lettered (carts/projectors.py); what still escapes a
catch-up is an error that says nothing about the events, such as the database going away. The
runner is a real process; a projector that raises such an error is registered by a small script
that then runs the command, as ``manage.py run_projectors`` would.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable

from django.db.models import Max

from carts import services
from carts.models import CartEvent, ProjectorCheckpoint
from carts.sources import Source
from tests.conftest import BASE_DIR_FOR_TESTS, item, new_event, subprocess_env

_RUNNER = textwrap.dedent(
    """
    import sys

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import OperationalError

    from carts import projectors

    name, failures = sys.argv[1], int(sys.argv[2])
    calls = 0


    def apply(events):
        global calls
        calls += 1
        if failures < 0 or calls <= failures:
            raise OperationalError(f"flaky projector: failure {calls}")
        print(f"flaky projector applied {len(events)} events", flush=True)


    projectors.register(projectors.Projector(name, apply, lambda: None))
    call_command("run_projectors", *sys.argv[3:])
    """
)


def _runner(name: str, failures: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _RUNNER, name, str(failures), *args],
        cwd=BASE_DIR_FOR_TESTS,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _position(name: str, store_id: int) -> int:
    row = ProjectorCheckpoint.objects.filter(name=name, store_id=store_id).first()
    return row.position if row else 0


def _lines_until(runner: subprocess.Popen[str], text: str, timeout: float) -> list[str]:
    """Lines of output up to the first one containing ``text``."""
    assert runner.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    for line in runner.stdout:
        seen.append(line)
        if text in line:
            return seen
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"{text!r} not seen within {timeout}s:\n{''.join(seen)}")


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def _append_some(store_id: int) -> int:
    services.events_append(
        source=Source.server("test"),
        store_id=store_id,
        events=[new_event("cart.item_added", f"c{i}", item()) for i in range(3)],
    )
    return CartEvent.objects.filter(store_id=store_id).aggregate(last=Max("store_position"))["last"]


def test_the_runner_keeps_running_through_errors_and_catches_up_after(committed_store):
    store, _ = committed_store
    last = _append_some(store.pk)
    name = f"flaky_{uuid.uuid4().hex[:8]}"
    runner = _runner(name, 2, "--poll", "0.2")
    try:
        started = time.monotonic()
        seen = _lines_until(runner, "flaky projector applied", timeout=30)
        recovered_after = time.monotonic() - started
        assert runner.poll() is None  # still running
        output = "".join(seen)
        # Each failure logged with its traceback; backed off 1 s, then 2 s.
        assert output.count("catching up failed") == 2, output
        assert "trying again in 1 s" in output
        assert "trying again in 2 s" in output
        assert output.count("Traceback (most recent call last)") == 2
        assert "django.db.utils.OperationalError: flaky projector: failure 2" in output
        assert recovered_after >= 3.0
        _wait_for(
            lambda: _position(name, store.pk) >= last
        )  # the batch commits after apply returns

        # And it keeps working: new events reach the projector without a restart.
        later = _append_some(store.pk)
        _wait_for(lambda: _position(name, store.pk) >= later)
    finally:
        runner.send_signal(signal.SIGTERM)
        output, _ = runner.communicate(timeout=10)
    assert runner.returncode == 0, output
    assert "projectors stopped" in output


def test_a_stop_signal_ends_the_back_off_promptly(committed_store):
    store, _ = committed_store
    _append_some(store.pk)
    name = f"broken_{uuid.uuid4().hex[:8]}"
    runner = _runner(name, -1, "--poll", "0.2")  # fails every time
    try:
        # Three failures: the back-off is now 4 s; the signal comes half a second into it.
        _lines_until(runner, "trying again in 4 s", timeout=30)
        assert runner.poll() is None
        time.sleep(0.5)
        stopping = time.monotonic()
        runner.send_signal(signal.SIGTERM)
        output, _ = runner.communicate(timeout=10)
        assert time.monotonic() - stopping < 2.0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    assert runner.returncode == 0, output
    assert "projectors stopped" in output
    assert _position(name, store.pk) == 0


def test_once_still_exits_with_the_error(committed_store):
    """``--once`` (a one-off catch-up, used by scripts) reports a failure instead of waiting."""
    store, _ = committed_store
    _append_some(store.pk)
    name = f"broken_{uuid.uuid4().hex[:8]}"
    runner = _runner(name, -1, "--once")
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 1, output
    assert "django.db.utils.OperationalError: flaky projector: failure 1" in output
    assert "catching up failed" not in output


def test_once_catches_up_and_exits(committed_store):
    store, _ = committed_store
    last = _append_some(store.pk)
    name = f"fine_{uuid.uuid4().hex[:8]}"
    runner = _runner(name, 0, "--once")
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 0, output
    assert "applied " in output
    assert _position(name, store.pk) >= last
