"""A Celery worker SIGKILLed mid-batch, talking to a slow mail relay."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest

from tests.chaos.conftest import Chaos
from tests.e2e import procs
from tests.smtp_sink import SmtpSink

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(90)]

STEPS = 20
LEASE = 5.0


def _worker(c: Chaos, sink: SmtpSink, name: str, tmp_path):  # type: ignore[no-untyped-def]
    env = c.env(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST=sink.host,
        EMAIL_PORT=str(sink.port),
        EMAIL_TIMEOUT="1",
        CAMPAIGNS_PUBLIC_URL="http://testserver",
        CAMPAIGNS_LEASE_SECONDS=repr(LEASE),
        CAMPAIGNS_SEND_CONCURRENCY="1",  # one message at a time: the batch takes ~2 s
    )
    argv = [
        procs.PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
        "--concurrency", "1", "--without-mingle", "--without-gossip", "--hostname", f"{name}@%h",
    ]  # fmt: skip
    log = tmp_path / f"{name}.log"
    process = procs.start(argv, env=env, log=log)
    procs.wait_for(
        lambda: "ready." in log.read_text(errors="replace"), timeout=60, what=f"{name} ready"
    )
    return process, env


@pytest.mark.xfail(
    strict=True,
    reason="campaigns/delivery.py reports outcomes to the step runner only every 32 results "
    "(steps._RECORD_EVERY): every message a killed worker had sent since its last record is sent "
    "again after its lease; fix: flush on time too (see docs/operations.md, worker killed)",
)
def test_every_step_of_a_batch_whose_worker_was_killed_is_sent_and_recorded_once(
    servers_up: Chaos, tmp_path
):
    """SIGKILLed after about 5 of 20 messages left (one at a time, 100 ms each at the relay):
    the steps it had not finished are sent by a second worker once their lease runs out; none
    is lost, each is recorded once, and an email goes twice only where SMTP cannot say: the one
    message on the wire when the worker died (its DATA in, the relay's answer not yet read)."""
    c = servers_up
    store_id, ids = c.email_steps(STEPS, prefix="kill", due_in=3600)
    with SmtpSink(delay=0.1) as sink:
        doomed, env = _worker(c, sink, "doomed", tmp_path)
        scheduler = procs.start(
            [procs.PYTHON, "manage.py", "run_scheduler"], env=env, log=tmp_path / "sched.log"
        )
        survivor = None
        try:
            c.due_spread(ids, start=0.0, over=0.0)
            procs.wait_for(lambda: len(sink.received) >= 5, timeout=30, interval=0.02)
            os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool process
            doomed.wait(timeout=10)
            at_kill = len(sink.received)
            survivor, _ = _worker(c, sink, "survivor", tmp_path)
            procs.wait_for(
                lambda: _statuses(c, ids) == {"sent": STEPS},
                timeout=45,
                what=f"every step sent: {_statuses(c, ids)}",
            )
            procs.wait_for(lambda: len({r.rcpt_tos for r in sink.received}) == STEPS, timeout=5)
        finally:
            procs.stop(scheduler)
            procs.stop(doomed, sig=signal.SIGKILL)
            if survivor is not None:
                procs.stop(survivor)
        received = Counter(r.rcpt_tos[0] for r in sink.received)

    assert 5 <= at_kill < STEPS  # killed mid-batch
    # None lost; every step recorded once, with one campaign.step_sent event.
    assert sorted(received) == sorted(f"kill{i}@example.com" for i in range(STEPS))
    sent_events = Counter(
        row[0]
        for row in c.sql(
            "SELECT cart FROM carts_cartevent WHERE store_id = %s AND type = 'campaign.step_sent'",
            [store_id],
        )
    )
    assert len(sent_events) == STEPS and set(sent_events.values()) == {1}
    # No email sent twice, but the one the relay had in hand when the worker died.
    twice = sorted(k for k, n in received.items() if n > 1)
    assert len(twice) <= 1 and max(received.values()) <= 2, (at_kill, twice)


def _statuses(c: Chaos, ids: list[int]) -> dict[str, int]:
    return dict(
        c.sql("SELECT status, count(*) FROM campaigns_step WHERE id = ANY(%s) GROUP BY 1", [ids])
    )
