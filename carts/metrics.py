"""Every Prometheus metric the processes record (exposed at /metrics by config/metrics.py), and
the helpers that record them. docs/operations.md, "Metrics", lists each with its labels.

prometheus-client's own registry: per process, or, when PROMETHEUS_MULTIPROC_DIR is set in the
environment (``make run`` and the servers it starts), in files in that directory that the
scraped process sums over every web, worker and scheduler process. Labels take values from
small fixed sets only (source kinds, channels, outcomes, limit and lease names): never a store,
cart or key.

The bottom of the apps: imports nothing from them (carts.sources is pure), and every app may
import it. Recording costs microseconds and never raises into the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ParamSpec

from prometheus_client import Counter, Histogram

from carts.sources import Kind

log = logging.getLogger(__name__)

PREFIX = "cartrecovery"
P = ParamSpec("P")

# Seconds: from a fraction of a millisecond (one small append) to seconds (a stalled database).
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

EVENTS_APPENDED = Counter(
    f"{PREFIX}_events_appended",
    "Events appended to the log (duplicates of an event already there excluded), by who sent "
    "them (server, browser, platform, system).",
    ["source"],
)
APPEND_SECONDS = Histogram(
    f"{PREFIX}_append_seconds",
    "Time one call of the append service took, commit included, by source kind.",
    ["source"],
    buckets=_LATENCY_BUCKETS,
)
for _kind in Kind:  # each series present from the start, at 0: rate() and absent() alerts work
    EVENTS_APPENDED.labels(source=_kind.value)
OFFER_DECISION_SECONDS = Histogram(
    f"{PREFIX}_offer_decision_seconds",
    "Exit intent received on the shopper socket to its on-site offer decided, in the web "
    "process (decision: offer or none).",
    ["decision"],
    buckets=_LATENCY_BUCKETS,
)
STEP_OUTCOMES = Counter(
    f"{PREFIX}_step_outcomes",
    "Campaign steps finished (or given up by their worker), by channel and outcome: sent, "
    "skipped, suppressed, deferred, cancelled, failed; lease_lost and unrecorded where the "
    "worker could not record one.",
    ["channel", "outcome"],
)
LEASE_EXPIRIES = Counter(
    f"{PREFIX}_lease_expiries",
    "Leases that ran out on their holder and were taken over (lease: what was leased).",
    ["lease"],
)
RATE_LIMIT_HITS = Counter(
    f"{PREFIX}_rate_limit_hits",
    "Requests, messages or logins refused by a rate limit, by the limit's name.",
    ["limit"],
)
SCRAPE_ERRORS = Counter(
    f"{PREFIX}_scrape_errors",
    "Scrapes of /metrics that could not read a source (database, broker); its gauges were "
    "left out of that scrape.",
    ["source"],
)


def _never_raises(record: Callable[P, None]) -> Callable[P, None]:
    """A metric that cannot be recorded (a full disk under PROMETHEUS_MULTIPROC_DIR) is logged,
    never a reason for the caller's work to fail."""

    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:
            log.warning("metric %s not recorded", record.__name__, exc_info=True)

    guarded.__name__ = record.__name__
    guarded.__doc__ = record.__doc__
    return guarded


@_never_raises
def append_observe(*, source_kind: str, events: int, seconds: float) -> None:
    """One call of the append service: ``events`` newly appended (duplicates excluded) from a
    source of kind ``source_kind`` in ``seconds``."""
    if events > 0:
        EVENTS_APPENDED.labels(source=source_kind).inc(events)
    APPEND_SECONDS.labels(source=source_kind).observe(max(seconds, 0.0))


@_never_raises
def offer_decided(*, decision: str, seconds: float) -> None:
    """An exit intent's offer decided (``decision``: offer or none) ``seconds`` after the event
    was received."""
    OFFER_DECISION_SECONDS.labels(decision=decision).observe(max(seconds, 0.0))


@_never_raises
def step_outcome(*, channel: str, outcome: str, count: int = 1) -> None:
    """``count`` campaign steps of ``channel`` recorded with ``outcome``."""
    if count > 0:
        STEP_OUTCOMES.labels(channel=channel, outcome=outcome).inc(count)


@_never_raises
def lease_expired(kind: str, count: int = 1) -> None:
    """``count`` leases of ``kind`` (a projector's, the scheduler's, campaign steps') ran out on
    their holder and were taken over."""
    if count > 0:
        LEASE_EXPIRIES.labels(lease=kind).inc(count)


@_never_raises
def rate_limit_hit(limit: str) -> None:
    """Limit ``limit`` refused one hit."""
    RATE_LIMIT_HITS.labels(limit=limit).inc()


@_never_raises
def scrape_error(source: str) -> None:
    """A scrape could not read ``source`` (database, broker)."""
    SCRAPE_ERRORS.labels(source=source).inc()
