"""The campaigns' clock: real time, or real time sped up for demos and tests.

With CAMPAIGNS_CLOCK_SPEED = 60, a minute of campaign time (inactivity, tier delays, quiet hours)
passes in one real second, counted from CAMPAIGNS_CLOCK_EPOCH (a Unix time; every process of a
run must share it). The scheduler and the workers read it; the log keeps what it is given.
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
