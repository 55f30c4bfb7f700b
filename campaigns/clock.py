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
    """Campaign time now."""
    return at(timezone.now())


def _epoch() -> datetime:
    return datetime.fromtimestamp(settings.CAMPAIGNS_CLOCK_EPOCH, tz=UTC)


def at(server: datetime) -> datetime:
    """Campaign time at a server-clock instant (a ``recorded_at``, a cart's ``seen_at``)."""
    speed = settings.CAMPAIGNS_CLOCK_SPEED
    return server if speed == 1 else _epoch() + (server - _epoch()) * speed


def server(campaign: datetime) -> datetime:
    """The server-clock instant at which campaign time reads ``campaign`` (``at``'s inverse)."""
    speed = settings.CAMPAIGNS_CLOCK_SPEED
    return campaign if speed == 1 else _epoch() + (campaign - _epoch()) / speed
