"""GET /metrics: Prometheus exposition (docs/operations.md, "Metrics"), behind a bearer token.

What the processes count is recorded where it happens (carts/metrics.py); with
PROMETHEUS_MULTIPROC_DIR set, every process's values come from that directory's files, summed.
The gauges of shared state (queue depth, projector lag, dead letters) are read here, at scrape
time, once per scrape, and are registered on this scrape's registry only: never a process's.

A scrape never fails for a source that is down: that source's gauges are left out,
``cartrecovery_scrape_up{source}`` is 0 and ``cartrecovery_scrape_errors_total{source}`` counts
it; the answer is still 200. /healthz stays the liveness check.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from urllib.parse import parse_qsl, urlencode

import prometheus_client
import redis
from django.conf import settings
from django.db import connection, transaction
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from carts import log_stats
from carts import metrics as recorded

log = logging.getLogger(__name__)

PREFIX = recorded.PREFIX
# A source slower than this is reported down for the scrape (Prometheus's own timeout is 10 s).
SOURCE_TIMEOUT_SECONDS = 1.0
# Kombu's Redis transport keeps a queue's messages of priority > 0 in lists of their own
# ("<queue>\x06\x16<priority>", priority_steps 0, 3, 6, 9); a queue's depth is their sum.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
# Kombu's hash of messages delivered to a worker and not acknowledged yet (acks_late).
_UNACKED_KEY = "unacked"


# Scrape-time sources ----------------------------------------------------------------------------


def broker_redis_url(broker_url: str) -> str:
    """The redis-py URL of Celery's broker: kombu spells a unix socket ``redis+socket://`` and
    its database ``virtual_host`` (config.env.celery_broker_url), redis-py ``unix://`` and
    ``db``."""
    if not broker_url.startswith("redis+socket://"):
        return broker_url
    path, _, query = broker_url.removeprefix("redis+socket://").partition("?")
    pairs = [
        ("db" if key == "virtual_host" else key, value)
        for key, value in parse_qsl(query, keep_blank_values=True)
    ]
    return "unix://" + path + ("?" + urlencode(pairs) if pairs else "")


@cache
def _broker(url: str) -> redis.Redis:
    # One client (and connection pool) per broker URL per process, with short timeouts: a
    # scrape must not hang on a broker that is away.
    return redis.Redis.from_url(
        url, socket_timeout=SOURCE_TIMEOUT_SECONDS, socket_connect_timeout=SOURCE_TIMEOUT_SECONDS
    )


def queue_depths(queues: Iterable[str]) -> tuple[dict[str, int], int]:
    """Messages waiting in each Celery queue of the broker (every priority), and messages
    delivered to workers but not acknowledged yet: one round trip."""
    names = list(queues)
    client = _broker(broker_redis_url(str(settings.CELERY_BROKER_URL)))
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(name)
            for step in _PRIORITY_STEPS:
                pipe.llen(f"{name}{_PRIORITY_SEPARATOR}{step}")
        pipe.hlen(_UNACKED_KEY)
        sizes = [int(size) for size in pipe.execute()]
    per_queue = 1 + len(_PRIORITY_STEPS)
    depths = {name: sum(sizes[i * per_queue : (i + 1) * per_queue]) for i, name in enumerate(names)}
    return depths, sizes[-1]


def _database_stats() -> tuple[dict[str, int], dict[str, int]]:
    """Projector lags and open dead letters, under a statement timeout."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, true)",
            [str(int(SOURCE_TIMEOUT_SECONDS * 1000))],
        )
        return log_stats.projector_lags(), log_stats.dead_letters_open()


# Collectors: registered on each scrape's registry ------------------------------------------------


class _SourceCollector:
    """Gauges read from one source at scrape time; on failure none of them, ``scrape_up`` 0."""

    source = ""

    def read(self) -> list[Metric]:
        raise NotImplementedError

    def collect(self) -> list[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}_scrape_up",
            "1 when this scrape could read the source (database, broker), else 0 and that "
            "source's gauges are absent.",
            labels=["source"],
        )
        try:
            families = self.read()
        except Exception as exc:
            log.warning(
                "metrics: %s could not be read: %s: %s", self.source, type(exc).__name__, exc
            )
            recorded.scrape_error(self.source)
            up.add_metric([self.source], 0)
            return [up]
        up.add_metric([self.source], 1)
        return [up, *families]


class BrokerCollector(_SourceCollector):
    source = "broker"

    def read(self) -> list[Metric]:
        depths, unacked = queue_depths(settings.METRICS_QUEUES)
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Celery messages waiting in the broker, by queue.",
            labels=["queue"],
        )
        for name, size in depths.items():
            depth.add_metric([name], size)
        delivered = GaugeMetricFamily(
            f"{PREFIX}_queue_unacked",
            "Celery messages delivered to a worker and not acknowledged yet (running or "
            "reserved; redelivered after the visibility timeout if their worker died).",
            value=unacked,
        )
        return [depth, delivered]


class DatabaseCollector(_SourceCollector):
    source = "database"

    def read(self) -> list[Metric]:
        lags, dead = _database_stats()
        lag = GaugeMetricFamily(
            f"{PREFIX}_projector_lag_events",
            "Events of the log a projector has still to read (every store's head minus the "
            "projector's checkpoint for it, summed).",
            labels=["projector"],
        )
        for name, value in lags.items():
            lag.add_metric([name], value)
        letters = GaugeMetricFamily(
            f"{PREFIX}_dead_letters",
            "Open dead letters: events a projector could not apply and skipped "
            '(docs/operations.md, "Dead letters").',
            labels=["projector"],
        )
        for name, value in dead.items():
            letters.add_metric([name], value)
        return [lag, letters]


class _Recorded:
    """What the processes recorded: this process's registry, or with PROMETHEUS_MULTIPROC_DIR
    every process's files, summed."""

    def __init__(self, multiprocess_dir: str) -> None:
        self._collect: Callable[[], Iterable[Metric]]
        if multiprocess_dir:
            self._collect = MultiProcessCollector(None, path=multiprocess_dir).collect
        else:
            self._collect = prometheus_client.REGISTRY.collect

    def collect(self) -> Iterator[Metric]:
        yield from self._collect()


def scrape_registry() -> CollectorRegistry:
    """A registry for one scrape: the sources read now first (so a scrape error they count is
    in this scrape's counters), then what the processes recorded."""
    registry = CollectorRegistry(auto_describe=False)
    collectors: list[Collector] = [
        DatabaseCollector(),
        BrokerCollector(),
        _Recorded(settings.METRICS_MULTIPROC_DIR),
    ]
    for collector in collectors:
        registry.register(collector)
    return registry


# The view ----------------------------------------------------------------------------------------


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    # Compared in constant time, as bytes (compare_digest refuses non-ASCII str).
    return scheme.lower() == "bearer" and hmac.compare_digest(
        offered.strip().encode(), token.encode()
    )


def metrics(request: HttpRequest) -> HttpResponse:
    """The exposition, for ``Authorization: Bearer <METRICS_TOKEN>``; 404 when no token is
    configured (the endpoint is off), 401 otherwise."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("metrics are off")
    if not _authorized(request, token):
        response = HttpResponse(
            "A bearer token is required.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encode(scrape_registry()), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
