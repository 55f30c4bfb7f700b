"""Fixtures for the recovery app's tests."""

from __future__ import annotations

import pytest

# The limits on the shopper-facing surfaces (recovery/apis.py, recovery/consumers.py).
SHOPPER_LIMITS = (
    "shopper_session_ip",
    "shopper_session_store",
    "offers_ip",
    "ws_connect_ip",
    "ws_message_socket",
    "ws_message_socket_minute",
)


@pytest.fixture(autouse=True)
def shopper_limits_off(settings):
    """The shopper limits are off here: Channels' test sockets all share one client address
    ("unknown"), the test client's requests one IP, and the counts one Redis for the whole run, so
    the shipped limits would refuse tests that have nothing to do with them. The tests of the
    limits (test_shopper_limits.py) set their own rules."""
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, **dict.fromkeys(SHOPPER_LIMITS, "")}
