"""Celery entry points of the integrations app: thin wrappers over its services.

Tasks carry no state of their own and re-read everything: ``outbound_send`` claims due
deliveries with a lease (integrations/outbound.py), so a duplicate delivery of the task finds them
leased or finished and sends nothing twice.
"""

from __future__ import annotations

from celery import shared_task

from integrations import outbound


@shared_task(name="integrations.outbound_send")
def outbound_send() -> dict[str, int]:
    """Send the outbound webhook deliveries that are due (a batch), recording each attempt."""
    return outbound.deliveries_send()
