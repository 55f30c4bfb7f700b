"""Validation micro-benchmark: the events API's request validation against the DRF serializers it
replaced, on the same realistic 500-event batch, in the same run.

    .venv/bin/python bench/validation.py [--rounds 7] [--events 500] [--seconds 0.3]

Pure CPU: no database, no HTTP, no servers. It times ``carts.apis.events_in``, the work
``EventsApi.post`` does between parsing the JSON body and calling ``events_append`` (envelopes,
payloads, building the NewEvents), and the same work done by the DRF serializers of
``bench/drf_baseline.py``. The batch is the one ``bench/ingest.py`` posts (page views, items added
with category and URL, checkouts, a shopper on each cart's first event), decoded from JSON as the
view receives it. Before timing, the run checks that both give the same events.

Each round times each validator for about ``--seconds`` (pydantic first, then DRF); the figures are
medians over rounds, in microseconds per event, and per request for a one-event body. The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
sys.path.insert(0, str(BASE_DIR / "bench"))

# Settings start embedded PostgreSQL and Redis for unset URLs; nothing here connects to either.
os.environ.setdefault("DATABASE_URL", "postgresql://bench@127.0.0.1:9/unused")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:9/0")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

import django  # noqa: E402 - after the environment above

django.setup()

import drf_baseline  # noqa: E402 - needs Django set up
import pydantic  # noqa: E402
import rest_framework  # noqa: E402
from ingest import make_batches  # noqa: E402

from carts import apis  # noqa: E402


def per_call_us(fn: Callable[[Any], Any], body: Any, seconds: float) -> float:
    """Microseconds per ``fn(body)``, over as many calls as fit in about ``seconds``."""
    calls, start = 0, time.perf_counter()
    while True:
        fn(body)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls * 1e6


def comparable(events: list[Any]) -> list[tuple]:
    return [
        (e.event_id, e.cart, e.type, e.schema_version, e.occurred_at, e.data, e.shopper,
         e.expected_version, e.body_hash())
        for e in events
    ]  # fmt: skip


def git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True
        )
    except OSError:
        return ""
    return out.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--events", type=int, default=500, help="events in the batch")
    parser.add_argument("--seconds", type=float, default=0.3, help="per validator and round")
    args = parser.parse_args()

    [batch] = make_batches(random.Random(20261127), "bench", 1, args.events)
    body = json.loads(json.dumps({"events": batch}))  # what request.data holds
    single = json.loads(json.dumps(batch[0]))  # a cart's first event: with a shopper

    new = comparable(apis.events_in(body))
    old = comparable(drf_baseline.events_in(body))
    if new != old or comparable(apis.events_in(single)) != comparable(
        drf_baseline.events_in(single)
    ):
        print("pydantic and DRF give different events", file=sys.stderr)
        return 1
    kinds = sorted({e["type"] for e in batch})
    print(f"{len(batch)} events ({', '.join(kinds)}); both validators give the same events")

    validators = {"pydantic": apis.events_in, "drf": drf_baseline.events_in}
    batch_us: dict[str, list[float]] = {name: [] for name in validators}
    single_us: dict[str, list[float]] = {name: [] for name in validators}
    for r in range(1, args.rounds + 1):
        for name, fn in validators.items():
            batch_us[name].append(per_call_us(fn, body, args.seconds) / len(batch))
            single_us[name].append(per_call_us(fn, single, args.seconds / 5))
        print(
            f"round {r}: batch {batch_us['pydantic'][-1]:.2f} vs {batch_us['drf'][-1]:.1f} "
            f"us/event, one event {single_us['pydantic'][-1]:.1f} vs {single_us['drf'][-1]:.0f} "
            "us/request (pydantic vs DRF)"
        )

    med = {name: statistics.median(values) for name, values in batch_us.items()}
    med_single = {name: statistics.median(values) for name, values in single_us.items()}
    print(
        f"median over {args.rounds} rounds: pydantic {med['pydantic']:.2f} us/event "
        f"({med['pydantic'] * len(batch) / 1000:.1f} ms per {len(batch)}), DRF {med['drf']:.1f} "
        f"us/event ({med['drf'] * len(batch) / 1000:.1f} ms): {med['drf'] / med['pydantic']:.1f}x"
    )
    print(
        f"one-event request: pydantic {med_single['pydantic']:.1f} us, DRF "
        f"{med_single['drf']:.0f} us: {med_single['drf'] / med_single['pydantic']:.1f}x"
    )
    summary = {
        "events": len(batch),
        "rounds": args.rounds,
        "pydantic_us_per_event": round(med["pydantic"], 2),
        "drf_us_per_event": round(med["drf"], 2),
        "speedup": round(med["drf"] / med["pydantic"], 1),
        "pydantic_us_per_event_rounds": [round(v, 2) for v in batch_us["pydantic"]],
        "drf_us_per_event_rounds": [round(v, 2) for v in batch_us["drf"]],
        "single_pydantic_us": round(med_single["pydantic"], 1),
        "single_drf_us": round(med_single["drf"], 1),
        "single_speedup": round(med_single["drf"] / med_single["pydantic"], 1),
        "python": platform.python_version(),
        "pydantic": pydantic.VERSION,
        "djangorestframework": rest_framework.VERSION,
        "cpus": os.cpu_count(),
        "commit": git_head(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
