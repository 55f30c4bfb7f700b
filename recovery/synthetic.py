"""Synthetic shopper journeys for the stock model (no real store has data on day one).

A seeded generator of plausible cart journeys: browsing, adding and removing items, checkout
steps, shipping quotes, rejected coupons, exit intents, returning shoppers, devices and local
times. Whether a journey ends in an order is drawn from a latent propensity whose effects follow
what e-commerce studies report (checkout progress and returning customers convert more; shipping
cost shock, rejected coupons, late nights, mobile and removals convert less), and orders arrive
after a realistic delay (some the next day). The stock model trained on it gives sensible scores
from a store's first event; a store should retrain on its own log (``train_scorer``) once it has
a few hundred carts. ``python manage.py build_stock_model`` regenerates recovery/stock_model.json.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from carts.projections import FoldEvent

_ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "Europe/London", "UTC")
_CATEGORIES = ("shoes", "dresses", "electronics", "home", "beauty", "toys", "books", "garden")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def journeys(
    *, carts: int, seed: int = 0, start: datetime | None = None
) -> list[tuple[str, FoldEvent]]:
    """``carts`` journeys as (cart token, event) pairs in time order."""
    rng = random.Random(seed)
    start = start or datetime(2026, 1, 5, tzinfo=UTC)
    shoppers = [f"shopper-{i}" for i in range(max(1, carts // 3))]
    out: list[tuple[datetime, int, str, FoldEvent]] = []
    seq = 0
    for n in range(carts):
        token = f"synthetic-{seed}-{n}"
        at = start + timedelta(seconds=rng.uniform(0, 60 * 86400))
        device = rng.choices(["desktop", "mobile", "tablet"], [0.45, 0.45, 0.10])[0]
        zone = rng.choice(_ZONES)
        shopper_id = rng.choice(shoppers) if rng.random() < 0.4 else None
        envelope: dict[str, Any] | None = (
            {"id": shopper_id, "timezone": zone} if shopper_id else None
        )
        events: list[tuple[datetime, str, dict[str, Any]]] = []
        engaged = rng.random()  # latent interest in buying
        logit = -2.2 + 3.0 * engaged + (-0.5 if device == "mobile" else 0.0)
        local_hour = (at.hour + {"Asia/Tokyo": 9, "America/New_York": -5}.get(zone, 0)) % 24
        if local_hour < 6:
            logit -= 0.6
        # Browsing.
        for _ in range(1 + int(rng.expovariate(1 / (2 + 8 * engaged)))):
            at += timedelta(seconds=rng.expovariate(1 / 40))
            product = rng.random() < 0.6
            events.append(
                (
                    at,
                    "page.viewed",
                    {
                        "url": "https://shop.example/p",
                        "page_type": "product" if product else rng.choice(["home", "category"]),
                        "device": device,
                        **({"dwell_ms": int(rng.expovariate(1 / 30000))} if product else {}),
                    },
                )
            )
        # The basket.
        lines: dict[str, int] = {}
        price_level = rng.lognormvariate(0, 0.6)
        for k in range(1 + int(rng.expovariate(1 / (0.5 + 2 * engaged)))):
            at += timedelta(seconds=rng.expovariate(1 / 60))
            sku = f"sku-{rng.randrange(500)}"
            price = int(2500 * price_level * rng.lognormvariate(0, 0.5)) + 100
            lines[sku] = price
            events.append(
                (
                    at,
                    "cart.item_added",
                    {
                        "sku": sku,
                        "name": f"Product {k}",
                        "quantity": rng.choice([1, 1, 1, 2]),
                        "unit_price": price,
                        "currency": "EUR",
                        "category": rng.choice(_CATEGORIES),
                    },
                )
            )
        logit -= 0.7 * math.log(price_level) + 0.15 * max(0, len(lines) - 3)
        if len(lines) > 1 and rng.random() < 0.25:
            at += timedelta(seconds=rng.expovariate(1 / 60))
            events.append((at, "cart.item_removed", {"sku": next(iter(lines))}))
            logit -= 0.4
        # Checkout.
        if rng.random() < _sigmoid(-1.0 + 2.5 * engaged):
            at += timedelta(seconds=rng.expovariate(1 / 120))
            events.append((at, "checkout.started", {}))
            logit += 1.0
            if rng.random() < 0.7:
                at += timedelta(seconds=rng.expovariate(1 / 90))
                contact: dict[str, Any] = {
                    "email": f"{shopper_id or token}@example.com",
                    "consent": {"email": rng.random() < 0.6},
                    "timezone": zone,
                }
                events.append((at, "checkout.contact_captured", contact))
                logit += 0.8
                if rng.random() < 0.8:
                    at += timedelta(seconds=rng.expovariate(1 / 60))
                    basket = sum(lines.values())
                    shipping = int(basket * rng.choice([0, 0, 0.05, 0.1, 0.25, 0.4]))
                    events.append((at, "checkout.shipping_quoted", {"amount": shipping}))
                    shock = shipping / max(basket, 1)
                    logit += 0.6 - 4.0 * shock
                    if shock > 0.2 and rng.random() < 0.3:
                        at += timedelta(seconds=rng.expovariate(1 / 30))
                        events.append((at, "cart.item_removed", {"sku": next(iter(lines))}))
                        logit -= 0.5
        if rng.random() < 0.15:
            at += timedelta(seconds=rng.expovariate(1 / 40))
            events.append((at, "coupon.rejected", {"code": "SAVE10"}))
            logit -= 0.7
        if rng.random() < 0.3:
            at += timedelta(seconds=rng.expovariate(1 / 30))
            trigger = (
                rng.choice(["tab_hidden", "back_button", "scroll_up"])
                if device != "desktop"
                else rng.choice(["mouse_leave", "idle"])
            )
            events.append((at, "shopper.exit_intent", {"trigger": trigger}))
            logit -= 0.6
        if shopper_id is not None:
            logit += 0.4
        if rng.random() < _sigmoid(logit):
            # Most orders come within the session; some the next day.
            delay = rng.expovariate(1 / 180) if rng.random() < 0.8 else rng.uniform(3600, 30 * 3600)
            at += timedelta(seconds=delay)
            total = sum(lines.values())
            events.append(
                (at, "order.placed", {"order_id": f"o-{token}", "total": total, "currency": "EUR"})
            )
        for moment, kind, data in events:
            seq += 1
            out.append((moment, seq, token, FoldEvent(kind, data, moment, envelope)))
    out.sort(key=lambda row: (row[0], row[1]))
    return [(token, event) for _, _, token, event in out]
