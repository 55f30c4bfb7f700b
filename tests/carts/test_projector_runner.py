"""The projector runner as a real process: woken by the Redis hint, correct by polling alone."""

import subprocess
import sys
import time

import pytest

from carts import services
from carts.models import DailyEventCount
from carts.sources import Source
from tests.conftest import BASE_DIR_FOR_TESTS, item, new_event, subprocess_env


def _count(store_id: int) -> int:
    return sum(DailyEventCount.objects.filter(store_id=store_id).values_list("count", flat=True))


def _wait_for(predicate, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"not reached within {timeout}s")


@pytest.mark.parametrize(
    ("poll", "extra_env", "within"),
    [
        (30.0, {}, 5.0),  # polls rarely: only the hint can make it this fast
        (0.3, {"CARTS_HINTS": "0"}, 10.0),  # no hints at all: polling alone catches up
    ],
    ids=["woken-by-hint", "polling-alone"],
)
def test_runner_applies_new_events(committed_store, poll, extra_env, within):
    store, _ = committed_store
    runner = subprocess.Popen(
        [sys.executable, "manage.py", "run_projectors", "--poll", str(poll)],
        cwd=BASE_DIR_FOR_TESTS,
        env=subprocess_env(**extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert runner.stdout is not None
        for line in runner.stdout:  # started; then give it time to catch up and subscribe
            if "projectors running" in line:
                break
        time.sleep(1.0)
        services.events_append(
            source=Source.server("test"),
            store_id=store.pk,
            events=[new_event("cart.item_added", f"c{i}", item()) for i in range(5)],
        )
        _wait_for(lambda: _count(store.pk) == 5, within)
    finally:
        runner.terminate()
        output, _ = runner.communicate(timeout=5)  # stops promptly even mid-wait
    assert runner.returncode == 0, output
    assert "projectors stopped" in output
