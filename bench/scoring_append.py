"""What scoring costs the append path: ``events_append`` with the scorer registered against the
same calls with no scorer, interleaved in the same run.

    .venv/bin/python bench/scoring_append.py [--rounds 5] [--single 300] [--batches 10]

In-process, against the development database (embedded servers under var/ unless DATABASE_URL is
set), in a store of its own. Each round appends (a) ``--single`` one-event calls (item added, page
viewed, checkout started... over fresh carts) and (b) ``--batches`` batches of 500 events over 50
carts, once with scoring and once without, in alternating order. Reports medians of per-call
latency and events/s, and the ratio without/with scoring. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

STORE_NAME = "Bench: scoring on append"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _events(run: str, carts: int, per_cart: int) -> list[list[Any]]:
    """Per cart, a plausible journey of ``per_cart`` events (as NewEvent)."""
    from carts import event_types
    from carts.services import NewEvent

    product = {"url": "https://shop.example/p/1", "page_type": "product", "device": "mobile"}
    item = {"sku": "A", "name": "A", "quantity": 1, "unit_price": 2500, "currency": "EUR"}
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("page.viewed", product),
        ("cart.item_added", item),
        ("page.viewed", {"url": "https://shop.example/cart", "page_type": "cart"}),
        ("checkout.started", {}),
        ("checkout.contact_captured", {"email": "ann@example.com", "timezone": "Europe/Paris"}),
        ("checkout.shipping_quoted", {"amount": 490}),
        ("shopper.exit_intent", {"trigger": "mouse_leave"}),
    ]  # fmt: skip
    out = []
    for c in range(carts):
        journey = []
        for i in range(per_cart):
            kind, data = kinds[i % len(kinds)]
            if kind == "cart.item_added":
                data = {**data, "sku": f"S{i}"}
            elif kind == "checkout.contact_captured":  # a shopper per cart, some returning
                data = {**data, "email": f"{run}-shopper-{c % 40}@example.com"}
            version, payload = event_types.validate(kind, None, data)
            journey.append(
                NewEvent(
                    event_id=uuid.uuid4(),
                    cart=f"{run}-{c}",
                    type=kind,
                    schema_version=version,
                    occurred_at=T0 + timedelta(seconds=30 * i),
                    data=payload,
                )
            )
        out.append(journey)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--single", type=int, default=300)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)  # the development database may predate this code
    from carts import services, sources
    from carts.models import Store

    scorer = services.cart_scorer_get()
    assert scorer is not None, "recovery registers its scorer when Django starts"
    store = Store.objects.filter(name=STORE_NAME).order_by("pk").first()
    if store is None:
        store = Store.objects.get(pk=services.store_create(name=STORE_NAME).store_id)

    def single(run: str) -> float:
        journeys = _events(run, max(1, args.single // 7), 7)
        calls = [e for j in journeys for e in j][: args.single]
        started = time.perf_counter()
        for event in calls:
            services.events_append(
                store_id=store.pk, events=[event], source=sources.Source.server("bench")
            )
        return (time.perf_counter() - started) / len(calls)

    def batch(run: str) -> float:
        total = 0.0
        for b in range(args.batches):
            journeys = _events(f"{run}-{b}", 50, 10)
            events = [e for j in journeys for e in j]
            started = time.perf_counter()
            services.events_append(
                store_id=store.pk, events=events, source=sources.Source.server("bench")
            )
            total += time.perf_counter() - started
        return args.batches * 500 / total

    figures: dict[str, list[float]] = {
        k: [] for k in ("single_on", "single_off", "batch_on", "batch_off")
    }
    single(f"warm-{uuid.uuid4().hex[:6]}")
    for r in range(args.rounds):
        order = [True, False] if r % 2 == 0 else [False, True]
        for on in order:
            services.cart_scorer_set(scorer if on else None)
            tag = f"r{r}-{'on' if on else 'off'}-{uuid.uuid4().hex[:6]}"
            figures[f"single_{'on' if on else 'off'}"].append(single(tag))
            figures[f"batch_{'on' if on else 'off'}"].append(batch(tag))
    services.cart_scorer_set(scorer)

    med = {k: statistics.median(v) for k, v in figures.items()}
    summary = {
        "benchmark": "scoring_append",
        "rounds": args.rounds,
        "single_ms_with_scoring": round(med["single_on"] * 1000, 3),
        "single_ms_without": round(med["single_off"] * 1000, 3),
        "single_overhead_ms": round((med["single_on"] - med["single_off"]) * 1000, 3),
        "single_ratio_without_over_with": round(med["single_off"] / med["single_on"], 3),
        "batch_events_per_s_with_scoring": round(med["batch_on"]),
        "batch_events_per_s_without": round(med["batch_off"]),
        "batch_ratio_with_over_without": round(med["batch_on"] / med["batch_off"], 3),
    }
    print(
        f"single event append: {summary['single_ms_with_scoring']} ms with scoring, "
        f"{summary['single_ms_without']} ms without (medians of {args.rounds} rounds)"
    )
    print(
        f"batches of 500: {summary['batch_events_per_s_with_scoring']} events/s with scoring, "
        f"{summary['batch_events_per_s_without']} without"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
