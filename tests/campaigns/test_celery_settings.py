"""The Celery settings that make redelivered campaign steps safe (PITFALLS: Celery on Redis)."""

from __future__ import annotations

from config.celery import app


def test_tasks_are_acknowledged_after_they_run_and_requeued_when_their_worker_dies():
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_eta_task_limit == 100


def test_the_visibility_timeout_is_above_the_longest_task():
    conf = app.conf
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.task_time_limit is not None
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility


def test_the_step_task_is_registered_and_uses_the_app_defaults():
    from campaigns.tasks import steps_run

    assert steps_run.name in app.tasks
    task = app.tasks[steps_run.name]
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
