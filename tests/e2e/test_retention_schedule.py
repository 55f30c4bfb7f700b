"""The retention sweep's schedule (issue 13, carts/apps.py): the scheduler runs ``carts.retention``
every CARTS_RETENTION_SWEEP_SECONDS, and each run enqueues the sweep, which erases the shoppers
idle past their store's retention (run here by Celery in this process)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.apps import apps
from django.utils import timezone

from campaigns import clock
from carts import pii, scheduler, tasks
from carts.models import CartState, ShopperKey
from tests.campaigns.builders import cart_abandoned
from tests.e2e.test_scheduler import conn, keys

__all__ = ["conn", "keys"]  # the scheduler tests' fixtures: a Redis and lock keys of our own

JOB = "carts.retention"


def _job() -> scheduler.Job:
    [job] = [j for j in scheduler.registered() if j.name == JOB]
    return job


def test_the_retention_job_is_registered_with_the_sweeps_setting(settings, monkeypatch):
    assert _job().every_seconds == settings.CARTS_RETENTION_SWEEP_SECONDS
    # Registered again (as at start-up) under another setting: it takes that one.
    monkeypatch.setattr(scheduler, "_registry", {})
    settings.CARTS_RETENTION_SWEEP_SECONDS = 123.0
    apps.get_app_config("carts").ready()
    assert _job().every_seconds == 123.0


def _idle_shopper(store_id: int, days: int) -> tuple[str, str]:
    """A cart whose shopper gave an address and was last seen ``days`` ago: (token, email)."""
    email = f"idle.{uuid.uuid4().hex[:8]}@example.com"
    at = clock.server(timezone.now()) - timedelta(days=days)
    return cart_abandoned(store_id, at=at, email=email).token, email


def _erased(store_id: int, token: str) -> bool:
    return CartState.objects.get(store_id=store_id, token=token).email == ""


def test_the_scheduler_runs_the_sweep_at_activation_and_every_interval(
    store, conn, keys, monkeypatch
):
    from config.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)  # the worker is this process
    enqueued: list[str] = []
    real_delay = tasks.retention_sweep.delay

    def delay(*args, **kwargs):
        enqueued.append(tasks.retention_sweep.name)
        return real_delay(*args, **kwargs)

    monkeypatch.setattr(tasks.retention_sweep, "delay", delay)
    store.pii_retention_days = 30
    store.save(update_fields=["pii_retention_days"])
    old, old_email = _idle_shopper(store.pk, days=40)
    recent, _ = _idle_shopper(store.pk, days=5)
    job = _job()
    now = [0.0]
    active = scheduler.Scheduler(
        conn=conn, **keys, lock_ttl=5.0, tick=0.1, jobs=[job], clock=lambda: now[0]
    )

    active.step()  # activation: every job is due

    assert active.active and enqueued == ["carts.retention_sweep"]
    assert _erased(store.pk, old) and not _erased(store.pk, recent)
    assert not ShopperKey.objects.filter(store=store, subject=pii.subject_of(old_email)).exists()

    # Another shopper goes idle: not swept before the interval, swept when it is up.
    later, _ = _idle_shopper(store.pk, days=40)
    now[0] = job.every_seconds - 0.5
    active.step()
    assert enqueued == ["carts.retention_sweep"] and not _erased(store.pk, later)
    now[0] = job.every_seconds
    active.step()
    assert enqueued == ["carts.retention_sweep"] * 2
    assert _erased(store.pk, later) and not _erased(store.pk, recent)
    active.release()
