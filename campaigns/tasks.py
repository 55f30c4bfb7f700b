"""Celery entry points of the campaigns app: thin wrappers over campaigns.steps.

Tasks carry step ids only and re-read everything; a step is run by one worker at a time whatever
the deliveries: a batch claims its steps with a lease (campaigns.steps.steps_execute), and a
duplicate delivery finds them leased or finished and does nothing. Settings that make
redelivery safe (acks_late, reject on worker lost, prefetch 1, the visibility timeout) are in
config/settings/base.py and asserted by tests/campaigns/test_celery_settings.py.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from campaigns import clock, steps


@shared_task(name="campaigns.steps_run")
def steps_run(step_ids: list[int]) -> dict[str, int]:
    """Run a batch of due steps; steps leased by another worker or already finished (a duplicate
    delivery) are left alone."""
    return steps.steps_execute(step_ids=[int(i) for i in step_ids], now=clock.now)


def steps_publish(step_ids: list[int]) -> None:
    """One task per CAMPAIGNS_TASK_STEPS steps, published over one broker connection."""
    size = max(1, settings.CAMPAIGNS_TASK_STEPS)
    chunks = [step_ids[i : i + size] for i in range(0, len(step_ids), size)]
    app = steps_run.app
    with app.producer_or_acquire() as producer:
        for chunk in chunks:
            steps_run.apply_async(args=[chunk], producer=producer)
