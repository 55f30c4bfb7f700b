"""Celery tasks of the carts app."""

from __future__ import annotations

from celery import shared_task

from carts import privacy


@shared_task(name="carts.retention_sweep", ignore_result=True)
def retention_sweep() -> int:
    """Erase shoppers idle past their store's retention (idempotent: erased ones are gone)."""
    return privacy.retention_sweep()
