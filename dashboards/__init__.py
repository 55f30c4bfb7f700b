"""Marketer dashboards (docs/dashboards.md): read models kept by the ``dashboard`` projector and
the selectors that turn them into figures."""

from datetime import timedelta

# How long a shopper must be quiet before a cart with items counts as abandoned on the dashboards
# (campaigns have their own inactivity, for acting; docs/dashboards.md).
ABANDONMENT_WINDOW = timedelta(minutes=30)
# A scored cart's outcome for calibration: an order within this long of the scored moment.
OBSERVATION_WINDOW = timedelta(hours=24)
