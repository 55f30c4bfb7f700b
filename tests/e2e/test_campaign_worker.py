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
from django.db import DatabaseError, transaction
from django.test import Client
from django.utils import timezone

from campaigns import clock, enrolment, steps
from campaigns.models import CampaignSettings, Coupon, Step
from carts.models import CartEvent
from config import env as config_env
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned
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
    app = Celery("test-publisher", broker=config_env.celery_broker_url(redis_url))

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
                "delay_minutes": 8,
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


def _locked_elsewhere(step_id: int) -> bool:
    try:
        with transaction.atomic():
            list(Step.objects.select_for_update(nowait=True).filter(pk=step_id))
    except DatabaseError:
        return True
    return False


def test_a_worker_killed_mid_step_neither_loses_the_email_nor_sends_it_twice(
    committed_store, isolated_redis, tmp_path, settings
):
    store, _ = committed_store
    settings.CAMPAIGNS_REDELIVER_SECONDS = 1.0
    campaign_with_tiers(
        store.pk,
        activated_at=timezone.now() - timedelta(days=1),
        tiers=[{"channel": "email", "subject_template": "Come back"}],
    )
    cart = cart_abandoned(store.pk, at=timezone.now() - timedelta(hours=1))
    enrolment.abandoned_carts_enroll(now=timezone.now())
    step = Step.objects.get(store=store)
    app, publish = _publisher(isolated_redis)
    with SmtpSink() as sink:
        doomed = _worker(
            tmp_path, _email_env(sink, CAMPAIGNS_PAUSE_BEFORE_SEND="60"), "doomed", concurrency=1
        )
        try:
            assert steps.due_steps_enqueue(now=timezone.now(), publish=publish) == 1
            # The worker holds the cart and the step, about to send.
            procs.wait_for(lambda: _locked_elsewhere(step.pk), timeout=30, what="the step lock")
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=10)
        finally:
            procs.stop(doomed, sig=signal.SIGKILL)
        assert sink.received == []
        step.refresh_from_db()
        assert step.status == "enqueued"  # its transaction rolled back with the worker

        survivor = _worker(tmp_path, _email_env(sink), "survivor")
        try:
            time.sleep(1.2)  # the step has now been out for longer than the redelivery time
            assert steps.due_steps_enqueue(now=timezone.now(), publish=publish) == 1
            [received] = sink.wait_for(1, timeout=30)
            procs.wait_for(
                lambda: Step.objects.get(pk=step.pk).status == "sent",
                timeout=30,
                what="the step to be recorded as sent",
            )
            time.sleep(1.2)
            assert steps.due_steps_enqueue(now=timezone.now(), publish=publish) == 0
            time.sleep(1)
        finally:
            procs.stop(survivor)
            app.close()
        assert len(sink.received) == 1
    assert received.rcpt_tos == ("ana@example.com",)
    assert _sent_events(store.pk, cart.token) == 1


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
        # Two worker processes; each batch takes a moment under its locks, so deliveries overlap.
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
