"""PostgreSQL stopped (as a crash) and started again while events stream in over HTTP."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.chaos.conftest import Chaos
from tests.chaos.ingest import Ingest
from tests.e2e import procs

# 150 s: the first test of the package also waits for the private servers to start and migrate.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

# Longer than the web server's pool waits for a connection (10 s, config/settings/base.py): a
# shorter outage only delays the requests made during it, which then succeed.
DOWN_SECONDS = 12.0


def test_ingestion_answers_503_while_postgres_is_down_and_loses_no_acknowledged_event(
    servers_up: Chaos, tmp_path
):
    """While the database is down every request is answered 503 with Retry-After (never a 500,
    never a dropped connection); every event answered 2xx before, during or after is in the log;
    the events answered 503 are accepted when sent again (once, however far they had got)."""
    c = servers_up
    store = c.store()
    port = procs.free_port()
    # A connection pool, as in production (make run, docs/operations.md): it must survive its
    # connections being cut too.
    env = c.env(DB_POOL_SIZE="4", HTTP_THREADS="4")
    with procs.web_server(port, env=env, log=tmp_path / "web.log") as web:
        with Ingest(port, store["secret_key"]) as load:
            procs.wait_for(
                lambda: sum(a.status == 201 for a in load.snapshot()) >= 40,
                timeout=20,
                what="events accepted before the fault",
            )
            c.pg.stop("immediate")  # as a crash: sessions cut, recovery at the next start
            down_from = time.monotonic()
            time.sleep(DOWN_SECONDS)
            c.pg.start()
            up_at = time.monotonic()
            procs.wait_for(
                lambda: sum(a.status == 201 and a.at > up_at for a in load.snapshot()) >= 40,
                timeout=30,
                what=f"events accepted after the restart\n{procs.tail(tmp_path / 'web.log')}",
            )
        answers = load.snapshot()
        assert web.poll() is None, procs.tail(tmp_path / "web.log")

        statuses = Counter(a.status for a in answers)
        assert set(statuses) <= {200, 201, 503}, (statuses, procs.tail(tmp_path / "web.log"))
        assert statuses[200] == 0  # each event sent once so far
        unavailable = [a for a in answers if a.status == 503]
        assert unavailable, statuses  # the outage was seen
        assert all(a.retry_after is not None and int(a.retry_after) >= 1 for a in unavailable)
        assert all('"service_unavailable"' in a.body for a in unavailable)
        # Answers while it was down (allowing for requests that finished as it stopped).
        while_down = [a for a in answers if down_from + 0.5 < a.at < up_at]
        assert while_down and {a.status for a in while_down} == {503}, Counter(
            a.status for a in while_down
        )

        acknowledged = {a.event_id for a in answers if a.status in (200, 201)}
        in_log = _logged(c, store["store_id"], [a.event_id for a in answers])
        assert acknowledged <= in_log, sorted(acknowledged - in_log)[:5]

        # An event answered 503 may have committed before the connection was cut: sent again,
        # it is accepted (201) or recognised (200, duplicate), and is in the log once.
        again = {a.event_id: load.post(a.event_id, "chaos-retry") for a in unavailable}
    assert {a.status for a in again.values()} <= {200, 201}, Counter(
        (a.status, a.body[:80]) for a in again.values()
    )
    counts = dict(
        c.sql(
            "SELECT event_id::text, count(*) FROM carts_cartevent"
            " WHERE store_id = %s AND event_id::text = ANY(%s) GROUP BY 1",
            [store["store_id"], [a.event_id for a in answers]],
        )
    )
    assert set(counts.values()) == {1}
    assert set(counts) == acknowledged | set(again)


def _logged(c: Chaos, store_id: int, event_ids: list[str]) -> set[str]:
    rows = c.sql(
        "SELECT event_id::text FROM carts_cartevent"
        " WHERE store_id = %s AND event_id::text = ANY(%s)",
        [store_id, event_ids],
    )
    return {row[0] for row in rows}
