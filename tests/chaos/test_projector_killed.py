"""A projector runner SIGKILLed in the middle of a batch: a second runner takes its partitions over
once the leases expire, and the read model ends exactly as an uninterrupted run leaves it (each
event applied once: the killed batch's transaction died with its process)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from django.db import connection

from carts import services
from carts.sources import Source
from tests.conftest import BASE_DIR_FOR_TESTS, item, new_event, subprocess_env

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

LEASE_SECONDS = 2
# A projector that records every event it applies in a table of its own, and lingers in the
# middle of each batch (after writing, before its transaction commits), saying so.
_RUNNER = textwrap.dedent(
    """
    import sys
    import time

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from carts import projectors

    name, table, stores = sys.argv[1], sys.argv[2], {int(s) for s in sys.argv[3].split(",")}


    def apply(events):
        mine = [e for e in events if e.store_id in stores]
        if not mine:
            return
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {table} (position) VALUES (%s)", [[e.position] for e in mine]
            )
        print(f"mid-batch {len(mine)}", flush=True)
        time.sleep(0.3)


    projectors.register(projectors.Projector(name, apply, lambda: None))
    call_command("run_projectors", "--poll", "0.1")
    """
)


def _start(name: str, table: str, stores: list[int]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _RUNNER, name, table, ",".join(map(str, stores))],
        cwd=BASE_DIR_FOR_TESTS,
        env=subprocess_env(
            PROJECTOR_LEASE_SECONDS=str(LEASE_SECONDS), PROJECTOR_PARTITIONS="2", LOG_LEVEL="INFO"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _applied(table: str) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT position FROM {table} ORDER BY position")
        return [row[0] for row in cursor.fetchall()]


def test_a_projector_killed_mid_batch_is_taken_over_and_applies_each_event_once(committed_db):
    # given 4 stores' events in the log, and a table the projector writes to
    stores = [services.store_create(name=f"Chaos shop {n}").store_id for n in range(4)]
    positions: list[int] = []
    for n in range(40):
        results = services.events_append(
            store_id=stores[n % 4],
            events=[new_event("cart.item_added", f"c{n % 7}", item(f"S{n}"))],
            source=Source.server("test"),
        )
        positions += [r.position for r in results]
    name = f"chaos_{uuid.uuid4().hex[:8]}"
    table = f"chaos_applied_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (position bigint NOT NULL)")

    first = _start(name, table, stores)
    second = None
    try:
        # when the first runner is SIGKILLed in the middle of a batch
        assert first.stdout is not None
        for line in first.stdout:
            if "mid-batch" in line:
                break
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()

        # and a second runner starts
        second = _start(name, table, stores)

        # then it takes the partitions over once the leases expire, and catches up
        deadline = time.monotonic() + 30
        while sorted(_applied(table)) != sorted(positions):
            assert time.monotonic() < deadline, (
                f"applied {len(_applied(table))} of {len(positions)}"
            )
            time.sleep(0.1)
        assert time.monotonic() - killed_at < LEASE_SECONDS + 10
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=15)
    # and each event was applied exactly once, as an uninterrupted run applies it
    applied = _applied(table)
    assert applied == sorted(positions)
    assert len(set(applied)) == len(applied)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {table}")
