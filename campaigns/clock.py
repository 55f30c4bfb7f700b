"""The campaigns' clock: real time, or real time sped up for demos and tests.

With CAMPAIGNS_CLOCK_SPEED = 60, a minute of campaign time (inactivity, tier delays, quiet hours)
passes in one real second, counted from CAMPAIGNS_CLOCK_EPOCH (a Unix time; every process of a
run must share it). The scheduler and the workers read it; the log keeps what it is given.
Times the server recorded (a cart's ``seen_at``) are real time: ``at`` turns them into campaign
time, ``server`` the other way (docs/campaigns.md, "Time").
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone


def now() -> datetime:
    speed = settings.CAMPAIGNS_CLOCK_SPEED
    real = timezone.now()
    if speed == 1:
        return real
    epoch = datetime.fromtimestamp(settings.CAMPAIGNS_CLOCK_EPOCH, tz=UTC)
    return epoch + (real - epoch) * speed


def at(server: datetime) -> datetime:
    """Campaign time at a server-clock instant (a ``recorded_at``, a cart's ``seen_at``)."""
    speed = settings.CAMPAIGNS_CLOCK_SPEED
    if speed == 1:
        return server
    epoch = datetime.fromtimestamp(settings.CAMPAIGNS_CLOCK_EPOCH, tz=UTC)
    return epoch + (server - epoch) * speed


def server(campaign: datetime) -> datetime:
    """The server-clock instant at which campaign time reads ``campaign`` (``at``'s inverse)."""
    speed = settings.CAMPAIGNS_CLOCK_SPEED
    if speed == 1:
        return campaign
    epoch = datetime.fromtimestamp(settings.CAMPAIGNS_CLOCK_EPOCH, tz=UTC)
    return epoch + (campaign - epoch) / speed
