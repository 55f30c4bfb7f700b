"""Redis killed (nothing saved) and started again while events stream in and steps run."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.chaos.conftest import Chaos
from tests.chaos.ingest import Ingest
from tests.e2e import procs
from tests.smtp_sink import SmtpSink

# 150 s: the first test of the package also waits for the private servers to start and migrate.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

STEPS = 20
DOWN_SECONDS = 2.0


def test_ingestion_and_steps_survive_a_redis_crash_with_no_500_and_no_step_lost_or_repeated(
    servers_up: Chaos, tmp_path
):
    """Redis SIGKILLed (its queue and locks lost) while events are posted and email steps run:
    ingestion keeps working: each request is answered 201, during the outage too (the per-store
    throttle lets requests through while it cannot count them; never 500, never dropped); every
    acknowledged event is in the log; every step is sent once: the batches lost with the queue
    are handed out again (CAMPAIGNS_REDELIVER_SECONDS), and a step is run by one worker."""
    c = servers_up
    store = c.store()
    store_id, ids = c.email_steps(STEPS, prefix="redis", due_in=3600)
    port = procs.free_port()
    with SmtpSink(delay=0.1) as sink:
        env = c.env(
            DB_POOL_SIZE="4",
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=sink.host,
            EMAIL_PORT=str(sink.port),
            EMAIL_TIMEOUT="1",
            CAMPAIGNS_PUBLIC_URL="http://testserver",
            CAMPAIGNS_SEND_CONCURRENCY="1",
            CAMPAIGNS_TASK_STEPS="4",  # several batches, some queued when Redis dies
            CAMPAIGNS_REDELIVER_SECONDS="3",
        )
        worker = procs.start(
            [
                procs.PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                "--concurrency", "1", "--without-mingle", "--without-gossip",
            ],
            env=env, log=tmp_path / "worker.log",
        )  # fmt: skip
        scheduler = procs.start(
            [procs.PYTHON, "manage.py", "run_scheduler", "--lock-ttl", "3"],
            env=env,
            log=tmp_path / "sched.log",
        )
        try:
            procs.wait_for(
                lambda: "ready." in (tmp_path / "worker.log").read_text(errors="replace"),
                timeout=60,
                what="the worker",
            )
            with procs.web_server(port, env=env, log=tmp_path / "web.log") as web:
                with Ingest(port, store["secret_key"]) as load:
                    c.due_spread(ids, start=0.0, over=3.0)
                    procs.wait_for(lambda: len(sink.received) >= 3, timeout=30, interval=0.02)
                    c.redis.kill()
                    down_at = time.monotonic()
                    time.sleep(DOWN_SECONDS)
                    c.redis.start()
                    up_at = time.monotonic()
                    procs.wait_for(
                        lambda: (
                            sum(a.status == 201 and a.at > up_at for a in load.snapshot()) >= 20
                        ),
                        timeout=30,
                        what="events accepted after the restart",
                    )
                    procs.wait_for(
                        lambda: _statuses(c, ids) == {"sent": STEPS},
                        timeout=45,
                        what=f"every step sent: {_statuses(c, ids)}",
                    )
                answers = load.snapshot()
                assert web.poll() is None
            time.sleep(0.5)
        finally:
            procs.stop(scheduler)
            procs.stop(worker, sig=signal.SIGTERM)
        received = Counter(r.rcpt_tos[0] for r in sink.received)

    statuses = Counter(a.status for a in answers)
    assert set(statuses) == {201}, (statuses, procs.tail(tmp_path / "web.log"))
    # Accepted while Redis was down too, not only before and after.
    assert sum(down_at < a.at < up_at for a in answers) >= 5, statuses
    acknowledged = {a.event_id for a in answers if a.status == 201}
    logged = {
        row[0]
        for row in c.sql(
            "SELECT event_id::text FROM carts_cartevent WHERE store_id = %s",
            [store["store_id"]],
        )
    }
    assert acknowledged <= logged
    assert received == Counter(f"redis{i}@example.com" for i in range(STEPS))
    sent_events = Counter(
        row[0]
        for row in c.sql(
            "SELECT cart FROM carts_cartevent WHERE store_id = %s AND type = 'campaign.step_sent'",
            [store_id],
        )
    )
    assert len(sent_events) == STEPS and set(sent_events.values()) == {1}


def _statuses(c: Chaos, ids: list[int]) -> dict[str, int]:
    return dict(
        c.sql("SELECT status, count(*) FROM campaigns_step WHERE id = ANY(%s) GROUP BY 1", [ids])
    )
