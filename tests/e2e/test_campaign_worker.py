"""Campaigns against real processes: a Celery worker on the real Redis broker, the scheduler, and
a real SMTP server on loopback receiving the messages."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Collection
from datetime import datetime, timedelta
from datetime import time as dtime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from django.test import Client
from django.utils import timezone

from campaigns import clock, enrolment, steps
from campaigns.models import CampaignSettings, Coupon, Step
from carts.models import CartEvent
from config import env as config_env
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned, order_placed
from tests.conftest import subprocess_env
from tests.e2e import procs
from tests.smtp_sink import SmtpSink

SMTP = "django.core.mail.backends.smtp.EmailBackend"


def _worker(tmp_path, env: dict[str, str], name: str, concurrency: int = 1):
    argv = [
        procs.PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
        "--concurrency", str(concurrency), "--without-mingle", "--without-gossip",
        "--hostname", f"{name}@%h",
    ]  # fmt: skip
    log = tmp_path / f"{name}.log"
    process = procs.start(argv, env=env, log=log)

    def ready() -> bool:
        assert process.poll() is None, procs.tail(log)
        return "ready." in log.read_text(errors="replace")

    procs.wait_for(ready, timeout=60, what=f"{name} to be ready")
    return process


def _publisher(redis_url: str):
    """Publish step batches to the isolated broker the children use (this process's own Celery
    app was configured with the default Redis database at import)."""
    # Not the current app: shared tasks in this process (eager in some tests) keep the project's.
    app = Celery(
        "test-publisher", broker=config_env.celery_broker_url(redis_url), set_as_current=False
    )

    def publish(ids: list[int]) -> None:
        app.send_task("campaigns.steps_run", args=[ids])

    return app, publish


def _sent_events(store_id: int, cart: str) -> int:
    return CartEvent.objects.filter(store_id=store_id, cart=cart, type="campaign.step_sent").count()


ZONES = (
    "Pacific/Auckland",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Europe/Berlin",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Los_Angeles",
    "Pacific/Honolulu",
)  # fmt: skip  (no two offsets more than 4.5 hours apart)


def _zone_where(now: datetime, hours: Collection[int]) -> str:
    """A zone whose local hour at ``now`` is in ``hours`` (7 or more hours wide)."""
    for name in ZONES:
        if now.astimezone(ZoneInfo(name)).hour in hours:
            return name
    raise AssertionError(f"none of the zones is at {hours} now")


def _email_env(sink: SmtpSink, **extra: str) -> dict[str, str]:
    return subprocess_env(
        EMAIL_BACKEND=SMTP,
        EMAIL_HOST=sink.host,
        EMAIL_PORT=str(sink.port),
        CAMPAIGNS_PUBLIC_URL="http://testserver",
        **extra,
    )


def test_nudge_email_and_discount_run_in_sequence_on_a_compressed_clock(
    committed_store, isolated_redis, tmp_path, settings
):
    """One real minute of campaign time per second: the scheduler enrols and enqueues, the worker
    sends; one shopper unsubscribes by one click from the first email and gets no discount."""
    store, _ = committed_store
    epoch = time.time()
    settings.CAMPAIGNS_CLOCK_SPEED = 60.0
    settings.CAMPAIGNS_CLOCK_EPOCH = epoch
    settings.CAMPAIGNS_PUBLIC_URL = "http://testserver"
    campaign_with_tiers(
        store.pk,
        activated_at=clock.now() - timedelta(hours=1),
        inactivity_minutes=1,
        quiet_start=dtime(21, 0),
        quiet_end=dtime(8, 0),
        tiers=[
            {"channel": "onsite", "delay_minutes": 0},
            {"channel": "email", "delay_minutes": 2, "subject_template": "Still thinking?"},
            {
                "channel": "discount",
                # 15 s real after the email's 2: time for the one-click unsubscribe to land first
                # on a loaded machine (8 left it ~6 s, which a slow start could use up).
                "delay_minutes": 15,
                "offer_kind": "percent_discount",
                "discount_min": 5,
                "discount_max": 15,
                "discount_cap": 3000,
                "subject_template": "A code for you",
            },
        ],
    )
    stays = cart_abandoned(store.pk, at=clock.now(), email="stays@example.com")
    leaves = cart_abandoned(store.pk, at=clock.now(), email="leaves@example.com")
    # The store's zone (for shoppers of unknown zone) is in its daytime for the whole test; for
    # one shopper it is the middle of the night, and emails wait for 08:00 there.
    CampaignSettings.objects.filter(store=store).update(
        timezone=_zone_where(clock.now(), range(10, 17))
    )
    night_zone = _zone_where(clock.now(), (22, 23, 0, 1, 2, 3, 4))
    sleeps = cart_abandoned(
        store.pk, at=clock.now(), email="sleeps@example.com", timezone=night_zone
    )
    with SmtpSink() as sink:
        env = _email_env(
            sink,
            CAMPAIGNS_CLOCK_SPEED="60",
            CAMPAIGNS_CLOCK_EPOCH=repr(epoch),
            CAMPAIGNS_SCAN_SECONDS="0.2",
        )
        worker = _worker(tmp_path, env, "campaigns-worker")
        scheduler = procs.start(
            [procs.PYTHON, "manage.py", "run_scheduler"], env=env, log=tmp_path / "scheduler.log"
        )
        try:
            first = sink.wait_for(2, timeout=60)
            assert sorted(r.rcpt_tos for r in first) == [
                ("leaves@example.com",),
                ("stays@example.com",),
            ]
            assert {r.message["Subject"] for r in first} == {"Still thinking?"}
            # One click, as a mail provider sends it (RFC 8058).
            [to_leaves] = [r for r in first if r.rcpt_tos == ("leaves@example.com",)]
            header = str(to_leaves.message["List-Unsubscribe"])
            url = next(u.strip("<> ") for u in header.split(",") if "http" in u)
            response = Client().post(
                urlsplit(url).path,
                data="List-Unsubscribe=One-Click",
                content_type="application/x-www-form-urlencoded",
            )
            assert response.status_code == 200

            third = sink.wait_for(3, timeout=60)[2]
            assert third.rcpt_tos == ("stays@example.com",)
            assert third.message["Subject"] == "A code for you"
            # Past the discount's due time for both carts: nothing more arrives.
            procs.wait_for(
                lambda: (
                    not Step.objects.filter(store=store, status__in=Step.OPEN)
                    .exclude(cart=sleeps.token)
                    .exists()
                ),
                timeout=30,
                what="every step to finish (but the sleeping shopper's)",
            )
            time.sleep(1)
            assert len(sink.received) == 3
        finally:
            procs.stop(scheduler)
            procs.stop(worker)

    def outcomes(cart: str) -> list[tuple[int, str, str, str]]:
        return [
            (s.tier.position, s.channel, s.status, s.reason)
            for s in Step.objects.filter(store=store, cart=cart).order_by("tier__position")
        ]

    assert outcomes(stays.token) == [
        (1, "onsite", "sent", "eligible"),
        (2, "email", "sent", "eligible"),
        (3, "discount", "sent", "eligible"),
    ]
    [nudge, email, discount] = Step.objects.filter(store=store, cart=sleeps.token).order_by(
        "tier__position"
    )
    assert (nudge.status, email.status, email.reason) == ("sent", "pending", "quiet_hours")
    local_due = email.due_at.astimezone(ZoneInfo(night_zone))
    assert (local_due.hour, local_due.minute) == (8, 0)
    assert discount.status == "pending"
    assert outcomes(leaves.token) == [
        (1, "onsite", "sent", "eligible"),
        (2, "email", "sent", "eligible"),
        (3, "discount", "skipped", "unsubscribed"),
    ]
    sent = Step.objects.filter(store=store, cart=stays.token).order_by("tier__position")
    finished = [s.finished_at for s in sent]
    assert None not in finished
    assert finished == sorted(finished)  # type: ignore[type-var]
    [coupon] = Coupon.objects.filter(store=store)
    assert coupon.cart == stays.token
    body = third.message.get_body(preferencelist=("plain",))
    assert body is not None and coupon.code in body.get_content()
    assert _sent_events(store.pk, stays.token) == 3


def _leased(step_id: int) -> str:
    """The step's lease owner while it is ``sending``, else ""."""
    step = Step.objects.get(pk=step_id)
    return step.lease_owner if step.status == "sending" else ""


def test_a_worker_killed_mid_batch_leaves_its_steps_to_another_worker_after_the_lease(
    committed_store, isolated_redis, tmp_path, settings
):
    """SIGKILLed holding a batch's lease, before sending: its steps are sent once, by another
    worker, once the lease has run out (and not before)."""
    store, _ = committed_store
    campaign_with_tiers(
        store.pk,
        activated_at=timezone.now() - timedelta(days=1),
        tiers=[{"channel": "email", "subject_template": "Come back"}],
    )
    carts = [
        cart_abandoned(store.pk, at=timezone.now() - timedelta(hours=1), email=f"k{n}@example.com")
        for n in range(3)
    ]
    enrolment.abandoned_carts_enroll(now=timezone.now())
    ids = sorted(Step.objects.filter(store=store).values_list("pk", flat=True))
    app, publish = _publisher(isolated_redis)
    lease = 10.0
    with SmtpSink() as sink:
        doomed = _worker(
            tmp_path,
            _email_env(sink, CAMPAIGNS_PAUSE_BEFORE_SEND="60", CAMPAIGNS_LEASE_SECONDS=repr(lease)),
            "doomed",
        )
        survivor = None
        try:
            assert steps.due_steps_enqueue(now=timezone.now(), publish=publish) == 3
            procs.wait_for(
                lambda: all(_leased(i) for i in ids), timeout=30, what="the batch's lease"
            )
            leased_at = time.monotonic()
            owner = _leased(ids[0])
            # The survivor starts while the lease runs (a loaded machine takes seconds to start
            # a worker; the lease must not run out during that), then the doomed worker dies.
            survivor = _worker(tmp_path, _email_env(sink), "survivor")
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=10)
            assert sink.received == []
            assert {_leased(i) for i in ids} == {owner}  # still leased by the dead worker

            # Not handed out while the lease runs; handed out once it has run out.
            assert time.monotonic() - leased_at < lease  # (the lease is long enough for this)
            assert steps.due_steps_enqueue(now=timezone.now(), publish=publish) == 0
            handed = procs.wait_for(
                lambda: steps.due_steps_enqueue(now=timezone.now(), publish=publish),
                timeout=30,
                interval=0.1,
                what="the lease to run out",
            )
            assert handed == 3
            assert time.monotonic() - leased_at >= lease - 1.0  # not before the lease ran out
            sink.wait_for(3, timeout=30)
            procs.wait_for(
                lambda: Step.objects.filter(pk__in=ids, status="sent").count() == 3,
                timeout=30,
                what="the steps to be recorded as sent",
            )
            time.sleep(0.5)
            assert steps.due_steps_enqueue(now=timezone.now(), publish=publish) == 0
        finally:
            procs.stop(doomed, sig=signal.SIGKILL)
            if survivor is not None:
                procs.stop(survivor)
            app.close()
    received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert received == [f"k{n}@example.com" for n in range(3)]
    owners = set(Step.objects.filter(pk__in=ids).values_list("lease_owner", flat=True))
    assert len(owners) == 1 and owner not in owners  # all sent by the survivor
    for cart in carts:
        assert _sent_events(store.pk, cart.token) == 1


def test_an_order_commits_at_once_while_its_cart_is_in_a_batch_talking_to_a_slow_relay(
    committed_store, isolated_redis, tmp_path
):
    """A relay answering each message after 300 ms, a batch of 10 email steps: an order for one
    of its carts commits within 100 ms, and its message, not started yet, is never sent."""
    store, _ = committed_store
    campaign_with_tiers(
        store.pk,
        activated_at=timezone.now() - timedelta(days=1),
        tiers=[{"channel": "email", "subject_template": "Come back"}],
    )
    emails = [f"s{n}@example.com" for n in range(10)]
    for n, email in enumerate(emails):
        cart_abandoned(
            store.pk, at=timezone.now() - timedelta(hours=1), token=f"slow-{n}", email=email
        )
    enrolment.abandoned_carts_enroll(now=timezone.now())
    app, publish = _publisher(isolated_redis)
    with SmtpSink(delay=0.3) as sink:
        # One message at a time: the batch takes 3 s, and the last cart's message starts last.
        worker = _worker(tmp_path, _email_env(sink, CAMPAIGNS_SEND_CONCURRENCY="1"), "slow")
        try:
            assert steps.due_steps_enqueue(now=timezone.now(), publish=publish) == 10
            procs.wait_for(lambda: sink.in_flight, timeout=30, interval=0.01, what="a send")
            assert len(sink.received) < 5  # the batch is talking to the relay
            started = time.monotonic()
            order_placed(store.pk, "slow-9", at=timezone.now())
            took = time.monotonic() - started
            procs.wait_for(
                lambda: not Step.objects.filter(store=store, status="sending").exists(),
                timeout=30,
                what="the batch to finish",
            )
        finally:
            procs.stop(worker)
            app.close()
        received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert took < 0.1, took
    assert received == sorted(emails[:9])
    step = Step.objects.get(store=store, cart="slow-9")
    assert (step.status, step.reason) == ("cancelled", "converted")
    assert _sent_events(store.pk, "slow-9") == 0


def test_a_stalled_relay_costs_at_most_the_lease_and_loses_or_repeats_no_step(
    committed_store, isolated_redis, tmp_path
):
    """A relay that takes the message and never answers (EMAIL_TIMEOUT 1 s, a 4 s lease): within
    the lease every step is out of ``sending``, failed to retry or released; once the relay is
    back, each is sent once."""
    store, _ = committed_store
    campaign_with_tiers(
        store.pk,
        activated_at=timezone.now() - timedelta(days=1),
        tiers=[{"channel": "email", "subject_template": "Come back"}],
    )
    emails = [f"t{n}@example.com" for n in range(6)]
    for email in emails:
        cart_abandoned(store.pk, at=timezone.now() - timedelta(hours=1), email=email)
    enrolment.abandoned_carts_enroll(now=timezone.now())
    ids = list(Step.objects.filter(store=store).values_list("pk", flat=True))
    app, publish = _publisher(isolated_redis)
    lease = 4.0
    with SmtpSink(stall=True) as sink:
        env = _email_env(
            sink,
            EMAIL_TIMEOUT="1",
            CAMPAIGNS_LEASE_SECONDS=repr(lease),
            CAMPAIGNS_SEND_CONCURRENCY="2",
        )
        worker = _worker(tmp_path, env, "stalled")
        try:
            started = time.monotonic()
            assert steps.due_steps_enqueue(now=timezone.now(), publish=publish) == 6
            procs.wait_for(
                lambda: Step.objects.filter(pk__in=ids, status="sending").exists(),
                timeout=30,
                interval=0.05,
                what="the batch's lease",
            )
            procs.wait_for(
                lambda: not Step.objects.filter(pk__in=ids, status="sending").exists(),
                timeout=30,
                interval=0.05,
                what="the batch to give its steps back",
            )
            assert time.monotonic() - started <= lease + 1.0
            statuses = dict(Step.objects.filter(pk__in=ids).values_list("pk", "status"))
            assert set(statuses.values()) == {"pending"}  # failed to retry, or released
            assert Step.objects.filter(pk__in=ids, reason="failed").exists()
            assert sink.received == []

            sink.stall = False  # the relay is back (the stalled messages stay unanswered)
            later = timezone.now() + timedelta(minutes=5)  # past the retry backoff
            assert steps.due_steps_enqueue(now=later, publish=publish) == 6
            sink.wait_for(6, timeout=30)
            procs.wait_for(
                lambda: Step.objects.filter(pk__in=ids, status="sent").count() == 6,
                timeout=30,
                what="every step sent",
            )
            time.sleep(0.5)
        finally:
            procs.stop(worker)
            app.close()
        received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert received == sorted(emails)
    for step in Step.objects.filter(pk__in=ids):
        assert _sent_events(store.pk, step.cart) == 1


@pytest.mark.parametrize("deliveries", [3])
def test_duplicate_deliveries_of_the_same_steps_send_each_once(
    committed_store, isolated_redis, tmp_path, deliveries
):
    store, _ = committed_store
    campaign_with_tiers(
        store.pk,
        activated_at=timezone.now() - timedelta(days=1),
        tiers=[{"channel": "email", "subject_template": "Come back"}],
    )
    carts = [
        cart_abandoned(store.pk, at=timezone.now() - timedelta(hours=1), email=f"d{n}@example.com")
        for n in range(5)
    ]
    enrolment.abandoned_carts_enroll(now=timezone.now())
    app, publish = _publisher(isolated_redis)
    with SmtpSink() as sink:
        # Two worker processes; each batch holds its lease a moment, so deliveries overlap.
        worker = _worker(
            tmp_path, _email_env(sink, CAMPAIGNS_PAUSE_BEFORE_SEND="0.3"), "dup", concurrency=2
        )
        try:
            claimed: list[list[int]] = []
            steps.due_steps_enqueue(now=timezone.now(), publish=claimed.append)
            [ids] = claimed
            for _ in range(deliveries):
                publish(ids)
            publish(list(reversed(ids)))
            sink.wait_for(len(carts), timeout=30)
            procs.wait_for(
                lambda: Step.objects.filter(store=store, status="sent").count() == len(carts),
                timeout=30,
                what="every step sent",
            )
            time.sleep(1.5)  # every duplicate delivery has had time to run
        finally:
            procs.stop(worker)
            app.close()
        received = sorted(r.rcpt_tos[0] for r in sink.received)
    assert received == sorted(f"d{n}@example.com" for n in range(5))
    for cart in carts:
        assert _sent_events(store.pk, cart.token) == 1
