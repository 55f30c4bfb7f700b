"""Dashboards benchmark (issue 6): the overview and time-series pages and metrics API over a log of
1,000,000 events, and the rebuild of the dashboard read models from that log.

    .venv/bin/python bench/dashboard.py [--events N] [--rounds N] [--requests N] [--keep-db NAME]
        [--seed S] [--no-catch-up] [--explain] [--profile]

Defaults: 1,000,000 events, 3 rounds, 50 timed requests per endpoint and range (~7 minutes on 2
shared cores, 2.5 of them the set-up). Quick: ``--events 100000 --rounds 1`` (~1 minute).
Iterating: ``--keep-db bench_dashboard_1m`` generates the log once into that database and keeps
it; later runs with the same name, event count and seed skip the generation.

Isolation. The run creates its own PostgreSQL database on the development server (embedded under
var/ unless DATABASE_URL is set), migrates it and drops it at the end (unless ``--keep-db``), and
uses a Redis logical database of its own (the append service's hints, the throttle's counters),
flushed at the end: a million events must not land in the development database. A run killed
with SIGKILL leaves its database behind; the next run drops it.

The log, generated through the one append service (``carts.services.events_append``, 500 events
per call, per store, in time order) from seeded journeys (the same mix for the same seed; times
are relative to the run's start), over the 90 days before now, with fewer carts at night in each
store's zone:
  - four stores: a big one (80% of carts; Europe/Paris; carts in EUR, some GBP and USD; two
    campaigns, one for carts of 150.00 and more), one in New York (USD), one in Tokyo (JPY) and a
    small one without campaign settings (UTC, GBP, no campaign). Products, categories and prices
    from the REES46 catalogue in bench/data/rees46, weighted by views;
  - each cart a journey: page views, items added (some removed or changed), checkout with contact
    and email consent, shipping quotes, exit intents with the offer decision the server would
    append (offers made, shown, accepted, dismissed; or none, by reason), orders in the session;
    carts left are enrolled by a campaign (holdout share per campaign) with their steps: sent,
    skipped by reason, suppressed (holdout), deferred, failed and retried, cancelled by the order;
    coupons issued and redeemed; emails opened and clicked; returns (more after a click) that end
    in an order or not; refunds weeks later. Shopper time zones and locales vary per store.
  - a shopper's events past "now" are left out (they have not happened yet). The rate of new carts
    is estimated from sample journeys, then checked by counting the stream dry (a few seconds a
    million) so that it holds a little more than ``--events``; the append stops at exactly
    ``--events``, so the log ends a little before now (printed).
  The campaign events are appended as the campaign code appends them (same types and payloads);
  no Step or Coupon rows are made, since the dashboards read only the log's projection.

Each round:
  1. rebuild: ``carts.projectors.projector_rebuild(name="dashboard")`` (one transaction, batches
     of 5,000), timed in this process: events/s. Timers around its parts (reading the events,
     loading the carts' rows, writing rows and counters, the fold in between, the commit) show
     where the time goes. Then ``VACUUM (ANALYZE)`` of the two read models, untimed: the pages are
     measured in the steady state a live projector keeps, not among a rebuild's dead rows.
  2. pages and API, through the real web server, started once for the run as ``make run`` does
     (``uvicorn config.asgi:application``, 2 workers, DB_POOL_SIZE=8, lifespan off; DEBUG off,
     logging at WARNING, no access log): the overview page, the time-series page,
     /api/v1/metrics/overview and /api/v1/metrics/timeseries for the big store, over its last 30
     local days (the headline) and its last 90. Pages with a marketer's session from the real
     login form, the API with the store's secret key (its rate limit raised out of the way). 5
     untimed warm-up requests each, then ``--requests`` each, one at a time, the eight
     (endpoint, range) pairs interleaved, a new connection per request (so both workers serve).
     Every response must be 200. Latency: from connecting to the last byte; p50, p90 and p99
     (nearest rank: over 50 requests, p99 is the slowest).
  3. sanity: the API's figures equal the selectors' (``dashboards.selectors``, called in this
     process with the same filters), for both endpoints and ranges; and the selectors alone are
     timed in this process (median of 10 calls each: the call, its queries, then ``as_dict()``),
     to tell the database from the rest of a request.
After the rounds (unless ``--no-catch-up``): the read models emptied and the checkpoint set back
to 0, then ``projector_catch_up(name="dashboard")`` with the runner's batches of 1,000, one
transaction each: events/s.

Diagnosis: ``--explain`` prints EXPLAIN (ANALYZE, BUFFERS) of every query the overview and
time-series selectors run (big store, 90 days); ``--profile`` runs cProfile over a rebuild's loop
(``store_events_after``, then the projector's apply()) on the log's first 200,000 events, in a
transaction rolled back, and prints the top functions.

Output: per-round lines and medians over rounds; the last line printed is one JSON object with
the figures, the targets (issue 6: page and API p99 <= 150 ms; rebuild >= 20,000 events/s) and
whether each is met, and the commit; also saved under bench/results/ (ignored by git).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import cProfile
import csv
import dataclasses
import heapq
import http.client
import io
import itertools
import json
import math
import os
import platform
import pstats
import re
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import (  # noqa: E402
    Subprocess,
    database_create,
    database_drop,
    database_url_with_name,
    databases_drop_stale,
    django_setup,
    free_port,
    git_head,
    log,
    pct,
    redis_client,
    redis_db_claim,
    redis_url_with_db,
    results_print,
)
from config.devrun import WEB_ENV, WEB_WORKERS  # noqa: E402 - needs the project on sys.path

PAGE_P99_TARGET_MS = 150.0
API_P99_TARGET_MS = 150.0
REBUILD_TARGET_EPS = 20_000.0
DEFAULT_EVENTS = 1_000_000
DAYS = 90
BATCH = 500  # events per append, as a platform's batch
WARMUP_REQUESTS = 5
SELECTOR_CALLS = 10
CATCH_UP_BATCH = 1000  # run_projectors' batch
PROFILE_EVENTS = 200_000
DB_PREFIX = "bench_dashboard_"
META_TABLE = "bench_dashboard_meta"
MARKETER = "bench-marketer"
MARKETER_PASSWORD = "bench-marketer-password"  # only ever in the run's own database
RANGES = {"30d": 30, "90d": 90}
CATALOGUE_CSV = BASE_DIR / "bench" / "data" / "rees46" / "2019-Oct_head_first-half.csv"


# The workload: stores, campaigns, journeys (seeded; no database) ---------------------------------


@dataclass(frozen=True, slots=True)
class TierSpec:
    channel: str  # onsite, email, discount
    delay_minutes: int
    offer_kind: str = "message"
    percent: int | None = None


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    name: str
    holdout: float
    attribution_hours: int
    min_value: int  # minor units: the campaign takes carts worth at least this
    tiers: tuple[TierSpec, ...]


@dataclass(frozen=True, slots=True)
class StoreSpec:
    tag: str
    name: str
    zone: str | None  # CampaignSettings.timezone; None: no settings (UTC)
    share: float  # of carts
    currencies: tuple[tuple[str, float], ...]
    shoppers: tuple[tuple[str, str, float], ...]  # (zone, locale, weight)
    campaigns: tuple[CampaignSpec, ...]


_RECOVER = CampaignSpec(
    "Recover",
    holdout=0.10,
    attribution_hours=72,
    min_value=0,
    tiers=(
        TierSpec("onsite", 0, "percent_discount", 10),
        TierSpec("email", 60),
        TierSpec("discount", 1440, "percent_discount", 10),
    ),
)
STORES = (
    StoreSpec(
        "big",
        "Maison Lumiere (bench)",
        "Europe/Paris",
        0.80,
        (("EUR", 0.85), ("GBP", 0.10), ("USD", 0.05)),
        (
            ("Europe/Paris", "fr-FR", 0.55),
            ("Europe/Berlin", "de-DE", 0.15),
            ("Europe/London", "en-GB", 0.15),
            ("Europe/Madrid", "es-ES", 0.10),
            ("America/New_York", "en-US", 0.05),
        ),
        (
            _RECOVER,
            CampaignSpec(
                "High value",
                holdout=0.20,
                attribution_hours=96,
                min_value=15_000,
                tiers=(
                    TierSpec("email", 30),
                    TierSpec("email", 360),
                    TierSpec("discount", 2880, "fixed_discount"),
                ),
            ),
        ),
    ),
    StoreSpec(
        "us",
        "Northwind Outfitters (bench)",
        "America/New_York",
        0.12,
        (("USD", 1.0),),
        (
            ("America/New_York", "en-US", 0.5),
            ("America/Chicago", "en-US", 0.2),
            ("America/Los_Angeles", "en-US", 0.3),
        ),
        (
            CampaignSpec(
                "Win back",
                holdout=0.10,
                attribution_hours=48,
                min_value=0,
                tiers=(
                    TierSpec("onsite", 0, "free_shipping"),
                    TierSpec("email", 60),
                    TierSpec("discount", 1440, "percent_discount", 15),
                ),
            ),
        ),
    ),
    StoreSpec(
        "jp",
        "Sakura Goods (bench)",
        "Asia/Tokyo",
        0.05,
        (("JPY", 1.0),),
        (("Asia/Tokyo", "ja-JP", 1.0),),
        (CampaignSpec("Remind", 0.0, 72, 0, (TierSpec("email", 120),)),),
    ),
    StoreSpec(
        "uk",
        "Thames and Co (bench)",
        None,
        0.03,
        (("GBP", 1.0),),
        (("Europe/London", "en-GB", 1.0),),
        (),
    ),
)
# Minor units of the currency per euro cent of a catalogue price.
PRICE_FACTOR = {"EUR": 1.0, "GBP": 0.86, "USD": 1.08, "JPY": 1.62}
SHIPPING = (0, 490, 990)  # euro cents
# Share of carts started in each local hour (relative to the busiest): quiet nights.
HOURLY = (
    0.25, 0.15, 0.10, 0.08, 0.08, 0.10, 0.20, 0.35, 0.50, 0.60, 0.65, 0.70,
    0.75, 0.70, 0.65, 0.65, 0.70, 0.80, 0.90, 1.00, 1.00, 0.90, 0.70, 0.45,
)  # fmt: skip
DEVICES = (("desktop", 0.45), ("mobile", 0.45), ("tablet", 0.10))
TRIGGERS = ("mouse_leave", "tab_hidden", "back_button", "scroll_up", "idle")
NO_OFFER_REASONS = (("below_min_score", 0.55), ("cooldown", 0.2), ("below_min_value", 0.1))
MODEL_VERSION = "council-bench"
RETURN_ORDER_S = 45.0  # from a returning shopper's first page view to the order
CALIBRATION_JOURNEYS = 20_000
MARGIN = 0.005  # more events than the target, so the stream reaches it before now


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    category: str
    price: int  # euro cents


def catalogue() -> tuple[list[Product], list[float]]:
    """REES46's products, each weighted by how often it was viewed (cumulative weights)."""
    views: dict[str, int] = {}
    products: dict[str, Product] = {}
    with CATALOGUE_CSV.open(newline="") as f:
        for row in csv.DictReader(f):
            pid = row["product_id"]
            views[pid] = views.get(pid, 0) + 1
            if pid not in products:
                category = row["category_code"] or "other"
                leaf = category.rsplit(".", 1)[-1].replace("_", " ")
                brand = (row["brand"] or "generic").title()
                price = max(100, round(float(row["price"] or 0) * 100))
                products[pid] = Product(f"R{pid}", f"{brand} {leaf}", category, price)
    listed = sorted(products.values(), key=lambda p: p.sku)
    cumulative = list(itertools.accumulate(views[p.sku[1:]] for p in listed))
    return listed, [float(c) for c in cumulative]


@dataclass(frozen=True, slots=True)
class TierRun:
    id: int
    position: int
    channel: str
    delay_minutes: int
    offer_kind: str
    percent: int | None


@dataclass(frozen=True, slots=True)
class CampaignRun:
    id: int
    holdout: float
    min_value: int
    tiers: tuple[TierRun, ...]

    @property
    def onsite(self) -> TierRun | None:
        return next((t for t in self.tiers if t.channel == "onsite"), None)

    @property
    def scheduled(self) -> tuple[TierRun, ...]:
        """The tiers a campaign schedules as steps after abandonment (not the exit-intent one)."""
        return tuple(t for t in self.tiers if t.channel != "onsite")


@dataclass(frozen=True, slots=True)
class StoreRun:
    spec: StoreSpec
    store_id: int
    campaigns: tuple[CampaignRun, ...]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.spec.zone or "UTC")


# One event of a journey: (time as a Unix timestamp, type, payload, id, shopper or None).
Ev = tuple[float, str, dict[str, Any], uuid.UUID, dict[str, Any] | None]


def _pick(rng: Any, weighted: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    r = rng.random() * sum(w[-1] for w in weighted)
    for item in weighted:
        r -= item[-1]
        if r < 0:
            return item
    return weighted[-1]


class Workload:
    """Journeys of carts in the stores, and the stream of their events in time order."""

    def __init__(
        self, stores: Sequence[StoreRun], seed: str, products: tuple[list[Product], list[float]]
    ) -> None:
        import random

        self.rng = random.Random(seed)
        self.stores = stores
        self.products, self.cumulative = products
        self.shares = list(itertools.accumulate(s.spec.share for s in stores))
        self.carts = 0
        self.steps = 0
        self.codes = 0
        self.customers = [0] * len(stores)

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def product(self) -> Product:
        r = self.rng.random() * self.cumulative[-1]
        return self.products[bisect.bisect_right(self.cumulative, r)]

    def think(self, median: float = 25.0) -> float:
        return min(600.0, max(3.0, self.rng.lognormvariate(math.log(median), 0.8)))

    def store_index(self) -> int:
        r = self.rng.random() * self.shares[-1]
        return min(bisect.bisect_right(self.shares, r), len(self.stores) - 1)

    def journey(self, store: StoreRun, token: str, t0: float) -> list[Ev]:
        """One shopper's cart from the first page view to refunds weeks later (unsorted)."""
        rng = self.rng
        spec = store.spec
        out: list[Ev] = []

        def add(at: float, type_: str, data: dict[str, Any]) -> Ev:
            ev: Ev = (at, type_, data, self.uuid(), None)
            out.append(ev)
            return ev

        zone, locale, _ = _pick(rng, spec.shoppers)
        device = _pick(rng, DEVICES)[0]
        currency = _pick(rng, spec.currencies)[0]
        factor = PRICE_FACTOR[currency]
        browser = rng.random() < 0.7
        if rng.random() < 0.35:  # a returning customer: a shopper id seen on other carts
            shopper_id = f"{spec.tag}-customer-{rng.randint(1, 5000)}"
        else:
            shopper_id = f"{spec.tag}-visitor-{token}"
        domain = f"https://{spec.tag}.shop.example"
        t = t0
        last_activity = t0

        def page(kind: str, product: Product | None = None, path: str = "") -> None:
            nonlocal t, last_activity
            data: dict[str, Any] = {"url": f"{domain}/{path}", "page_type": kind, "device": device}
            if product is not None:
                data["url"] = f"{domain}/p/{product.sku.lower()}"
                data["sku"] = product.sku
                data["dwell_ms"] = rng.randint(800, 90_000)
            add(t, "page.viewed", data)
            last_activity = t
            t += self.think()

        landing = rng.choice(("home", "category", "search", "product", "product"))
        if landing == "product":
            page("product", self.product())
        else:
            page(landing, path={"home": "", "category": "c/all", "search": "search?q=x"}[landing])
        # The shopper on the cart's first event, as the snippet sends it.
        shopper = {"id": shopper_id, "locale": locale, "timezone": zone}
        out[0] = (*out[0][:4], shopper)
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            page("product", self.product())

        lines: dict[str, list[Any]] = {}  # sku -> [product, quantity, unit price]
        if rng.random() < 0.8:
            for _ in range(_pick(rng, ((1, 0.6), (2, 0.28), (3, 0.12)))[0]):
                product = self.product()
                page("product", product)
                quantity = 2 if rng.random() < 0.15 else 1
                unit = max(1, round(product.price * factor))
                add(
                    t,
                    "cart.item_added",
                    {
                        "sku": product.sku,
                        "name": product.name,
                        "quantity": quantity,
                        "unit_price": unit,
                        "currency": currency,
                        "category": product.category,
                        "url": f"{domain}/p/{product.sku.lower()}",
                    },
                )
                last_activity = t
                t += self.think()
                if product.sku in lines:
                    lines[product.sku][1] += quantity
                else:
                    lines[product.sku] = [product, quantity, unit]
            if len(lines) > 1 and rng.random() < 0.08:
                sku = rng.choice(sorted(lines))
                add(t, "cart.item_removed", {"sku": sku})
                del lines[sku]
                last_activity = t
                t += self.think()
            elif lines and rng.random() < 0.05:
                sku = rng.choice(sorted(lines))
                lines[sku][1] += 1
                add(t, "cart.item_quantity_changed", {"sku": sku, "quantity": lines[sku][1]})
                last_activity = t
                t += self.think()
        value = sum(q * u for _, q, u in lines.values())

        checkout = contact = consent = False
        shipping = 0
        if lines and rng.random() < 0.45:
            page("cart", path="cart")
            add(t, "checkout.started", {})
            last_activity = t
            t += self.think(40)
            if rng.random() < 0.8:
                contact = True
                consent = rng.random() < 0.8
                add(
                    t,
                    "checkout.contact_captured",
                    {
                        "email": f"{token.lower()}@example.com",
                        "consent": {"email": consent},
                        "timezone": zone,
                        "locale": locale,
                    },
                )
                last_activity = t
                t += self.think(40)
            if rng.random() < 0.6:
                shipping = round(rng.choice(SHIPPING) * factor)
                add(t, "checkout.shipping_quoted", {"amount": shipping, "currency": currency})
                last_activity = t
                t += self.think(30)
            checkout = True

        campaign_onsite = next(
            ((c, c.onsite) for c in store.campaigns if c.onsite is not None), None
        )
        accepted_code: str | None = None
        accepted_percent = 0
        if browser and rng.random() < (0.55 if lines else 0.25):
            exit_ev = add(t, "shopper.exit_intent", {"trigger": rng.choice(TRIGGERS)})
            last_activity = t
            score = round(rng.betavariate(3, 2), 4)
            decided: dict[str, Any] = {
                "decision": "none",
                "reason": "no_campaign",
                "campaign": None,
                "tier": None,
                "score": score,
                "model_version": MODEL_VERSION,
                "holdout": False,
                "offer": None,
                "exit_event": str(exit_ev[3]),
            }
            offer: dict[str, Any] | None = None
            if campaign_onsite is not None:
                campaign, tier = campaign_onsite
                assert tier is not None
                decided["campaign"], decided["tier"] = campaign.id, tier.id
                r = rng.random()
                if not lines:
                    decided["reason"] = "empty_cart"
                elif r < 0.5:
                    self.codes += 1
                    offer = {
                        "id": f"of-{token}",
                        "kind": tier.offer_kind,
                        "headline": "Before you go",
                        "expires_at": datetime.fromtimestamp(t + 1800, UTC).isoformat(),
                    }
                    if tier.offer_kind in ("percent_discount", "free_shipping"):
                        offer["discount_code"] = f"X{self.codes:09X}"
                    if tier.percent:
                        offer["percent"] = tier.percent
                        offer["discount_amount"] = value * tier.percent // 100
                        offer["currency"] = currency
                    decided.update(decision="offer", reason="eligible", offer=offer)
                elif r < 0.6:
                    decided.update(reason="holdout", holdout=True)
                else:
                    decided["reason"] = _pick(rng, NO_OFFER_REASONS)[0]
            add(t + 0.2, "recovery.offer_decided", decided)
            if offer is not None and rng.random() < 0.92:
                add(t + 1.0, "recovery.offer_shown", {"offer_id": offer["id"]})
                r = rng.random()
                if r < 0.3:
                    add(
                        t + rng.uniform(4, 40), "recovery.offer_accepted", {"offer_id": offer["id"]}
                    )
                    accepted_code = offer.get("discount_code")
                    accepted_percent = int(offer.get("percent") or 0)
                elif r < 0.75:
                    add(
                        t + rng.uniform(2, 20),
                        "recovery.offer_dismissed",
                        {"offer_id": offer["id"]},
                    )
            t += self.think()

        def order(at: float, code: str | None, discount: int, kind: str) -> float:
            """The order (its coupon redeemed first), maybe refunded later; returns its time."""
            data: dict[str, Any] = {
                "order_id": f"o-{token}",
                "total": max(0, value + shipping - discount),
                "currency": currency,
            }
            if code:
                add(
                    at,
                    "campaign.coupon_redeemed",
                    {
                        "code": code,
                        "order_id": data["order_id"],
                        "kind": kind,
                        "amount": discount,
                        "currency": currency,
                        "cart_value": value,
                        "discount_applied": discount,
                    },
                )
                data["coupon"] = code
            add(at + 0.5, "order.placed", data)
            if rng.random() < 0.06:
                amount = (
                    data["total"] if rng.random() < 0.6 else data["total"] * rng.randint(2, 5) // 10
                )
                add(
                    at + rng.uniform(1, 20) * 86400,
                    "order.refunded",
                    {"order_id": data["order_id"], "amount": amount, "currency": currency},
                )
            return at + 0.5

        if not lines:
            return out
        p_order = 0.15 + (0.3 if checkout else 0.0) + (0.15 if accepted_code else 0.0)
        if rng.random() < p_order:
            discount = value * accepted_percent // 100 if accepted_code else 0
            order(t, accepted_code, discount, "percent")
            return out

        # Abandoned. A campaign may enrol the cart and run its steps; the shopper may come back.
        abandoned = last_activity + 30 * 60
        returned: tuple[float, bool] | None = None  # (when, orders)
        if rng.random() < 0.12:
            returned = (
                abandoned + min(3 * 86400, rng.expovariate(1 / (20 * 3600))),
                rng.random() < 0.7,
            )
        code: str | None = None
        code_discount, code_kind = 0, "percent"
        campaigns = [c for c in store.campaigns if c.scheduled and value >= c.min_value]
        if campaigns and rng.random() < 0.85:
            campaign = max(campaigns, key=lambda c: c.min_value)
            holdout = rng.random() < campaign.holdout
            enrolled_at = abandoned + rng.uniform(0, 60)
            steps = []
            for tier in campaign.scheduled:
                self.steps += 1
                due = enrolled_at + tier.delay_minutes * 60
                steps.append((self.steps, tier, due))
            add(
                enrolled_at,
                "campaign.enrolled",
                {
                    "campaign": campaign.id,
                    "holdout": holdout,
                    "score": round(rng.betavariate(4, 2), 4),
                    "value": value,
                    "abandoned_at": datetime.fromtimestamp(abandoned, UTC).isoformat(),
                    "steps": [
                        {
                            "step": step,
                            "tier": tier.id,
                            "channel": tier.channel,
                            "due_at": datetime.fromtimestamp(due, UTC).isoformat(),
                        }
                        for step, tier, due in steps
                    ],
                },
            )
            unsubscribed = False
            for step, tier, due in steps:
                data: dict[str, Any] = {
                    "step": step,
                    "campaign": campaign.id,
                    "tier": tier.id,
                    "position": tier.position,
                    "channel": tier.channel,
                }
                at = due + rng.uniform(0.1, 2.0)
                if returned is not None and returned[1] and returned[0] + RETURN_ORDER_S < at:
                    # The order's own transaction cancels the steps still due (after the order).
                    add(
                        returned[0] + RETURN_ORDER_S + 0.6,
                        "campaign.step_cancelled",
                        {**data, "reason": "converted"},
                    )
                    continue
                if holdout:
                    add(at, "campaign.step_suppressed", {**data, "reason": "holdout"})
                    continue
                if not contact:
                    add(at, "campaign.step_skipped", {**data, "reason": "no_email"})
                    continue
                if not consent:
                    add(at, "campaign.step_skipped", {**data, "reason": "no_consent"})
                    continue
                if unsubscribed:
                    add(at, "campaign.step_skipped", {**data, "reason": "unsubscribed"})
                    continue
                r = rng.random()
                if r < 0.03:  # quiet hours in the shopper's zone: sent in the morning
                    add(at, "campaign.step_deferred", {**data, "reason": "quiet_hours"})
                    at += rng.uniform(3, 9) * 3600
                elif r < 0.04:  # the mail server refused once
                    add(
                        at,
                        "campaign.step_failed",
                        {**data, "error": "451 try again", "attempt": 1, "final": False},
                    )
                    at += 300
                if tier.channel == "discount":
                    self.codes += 1
                    code = f"B{self.codes:09X}"
                    amount = tier.percent or round(2000 * factor)
                    code_kind = "percent" if tier.percent else "fixed"
                    code_discount = (
                        value * tier.percent // 100 if tier.percent else min(value, amount)
                    )
                    add(
                        at,
                        "campaign.coupon_issued",
                        {
                            "code": code,
                            "kind": code_kind,
                            "amount": amount,
                            "cap": None,
                            "currency": currency,
                            "min_cart_value": 0,
                            "expires_at": datetime.fromtimestamp(at + 7 * 86400, UTC).isoformat(),
                            "step_id": step,
                            "reasons": [],
                        },
                    )
                add(at + 0.3, "campaign.step_sent", {**data, "reason": "sent"})
                if rng.random() < 0.45:
                    opened = at + rng.expovariate(1 / (3 * 3600))
                    add(opened, "campaign.email_opened", dict(data))
                    if rng.random() < 0.35:
                        clicked = opened + rng.uniform(5, 120)
                        add(clicked, "campaign.link_clicked", dict(data))
                        if rng.random() < 0.2:
                            add(clicked + rng.uniform(30, 600), "campaign.link_clicked", dict(data))
                        back = (
                            clicked + 20,
                            rng.random() < (0.75 if tier.channel == "discount" else 0.6),
                        )
                        if rng.random() < 0.65 and (returned is None or back[0] < returned[0]):
                            returned = back
                    elif rng.random() < 0.05:
                        back = (opened + rng.expovariate(1 / (10 * 3600)), rng.random() < 0.6)
                        if returned is None or back[0] < returned[0]:
                            returned = back
                if rng.random() < 0.02:
                    unsubscribed = True
        if returned is not None:
            at = returned[0]
            add(at, "page.viewed", {"url": f"{domain}/cart", "page_type": "cart", "device": device})
            if returned[1]:
                use = code is not None and rng.random() < 0.8
                order(
                    at + RETURN_ORDER_S,
                    code if use else None,
                    code_discount if use else 0,
                    code_kind,
                )
        return out

    def stream(self, now: float, rate: float, limit: int) -> Iterator[tuple[int, Ev, str]]:
        """(store index, event, cart token) in time order, up to ``limit`` events: carts started
        over the DAYS days before ``now`` at ``rate`` a second at the busiest hour (thinned by
        HOURLY), their events up to ``now``. The same for the same seed, ``now`` and ``rate``."""
        heap: list[tuple[float, int, int, str, Ev]] = []
        seq = itertools.count()
        emitted = 0
        t = now - DAYS * 86400
        rng = self.rng
        while emitted < limit:
            t += rng.expovariate(rate)
            if t >= now:
                break
            index = self.store_index()
            store = self.stores[index]
            hour = datetime.fromtimestamp(t, store.zone).hour
            if rng.random() >= HOURLY[hour]:
                continue
            while heap and heap[0][0] <= t and emitted < limit:
                _, _, i, token, ev = heapq.heappop(heap)
                emitted += 1
                yield i, ev, token
            self.carts += 1
            token = f"{store.spec.tag}-{self.carts:07d}"
            for ev in sorted(self.journey(store, token, t), key=lambda e: e[0]):
                if ev[0] <= now:
                    heapq.heappush(heap, (ev[0], next(seq), index, token, ev))
        while heap and emitted < limit:
            _, _, i, token, ev = heapq.heappop(heap)
            emitted += 1
            yield i, ev, token


def stream_rate(
    stores: Sequence[StoreRun], seed: str, products: Any, now: float, target: int
) -> tuple[float, int]:
    """A rate of cart starts whose stream holds at least ``target`` events before ``now`` (a little
    more, MARGIN): estimated from sample journeys, then checked by counting the stream itself
    (dry, a few seconds a million) and raised until it reaches the target. Returns (rate,
    events in that stream)."""
    sample = Workload(stores, f"{seed}:calibration", products)
    total = 0
    for i in range(CALIBRATION_JOURNEYS):
        store = stores[sample.store_index()]
        start = now - sample.rng.random() * DAYS * 86400
        total += sum(1 for ev in sample.journey(store, f"c-{i}", start) if ev[0] <= now)
    mean = total / CALIBRATION_JOURNEYS
    carts = target * (1 + MARGIN) / mean
    rate = carts / (DAYS * 86400 * (sum(HOURLY) / len(HOURLY)))
    for _ in range(10):
        available = sum(1 for _ in Workload(stores, seed, products).stream(now, rate, 2**62))
        if available >= target:
            return rate, available
        log(f"the stream holds {available:,} events, short of {target:,}: more carts")
        rate *= target / available * (1 + MARGIN)
    raise RuntimeError("no rate of carts reaches the target")


# Set-up through the services ---------------------------------------------------------------------


def stores_create() -> list[StoreRun]:
    """The stores, their campaign settings and campaigns with their tiers."""
    from decimal import Decimal

    from campaigns.models import Campaign, CampaignSettings, Tier
    from carts import services

    activated = datetime.now(UTC) - timedelta(days=DAYS + 10)
    runs = []
    for spec in STORES:
        store_id = services.store_create(name=spec.name).store_id
        if spec.zone is not None:
            CampaignSettings.objects.create(
                store_id=store_id, timezone=spec.zone, email_from="Shop <shop@example.com>"
            )
        campaigns = []
        for c in spec.campaigns:
            campaign = Campaign.objects.create(
                store_id=store_id,
                name=c.name,
                active=True,
                activated_at=activated,
                holdout_share=Decimal(str(c.holdout)),
                attribution_hours=c.attribution_hours,
                min_cart_value=c.min_value,
                inactivity_minutes=30,
                quiet_start=None,
                quiet_end=None,
                shopper_cap_hours=0,
                cart_cap=0,
            )
            tiers = []
            for position, t in enumerate(c.tiers, start=1):
                tier = Tier.objects.create(
                    campaign=campaign,
                    position=position,
                    channel=t.channel,
                    delay_minutes=t.delay_minutes,
                    min_score=0.0,
                    offer_kind=t.offer_kind,
                    percent=t.percent,
                )
                tiers.append(
                    TierRun(tier.pk, position, t.channel, t.delay_minutes, t.offer_kind, t.percent)
                )
            campaigns.append(CampaignRun(campaign.pk, c.holdout, c.min_value, tuple(tiers)))
        runs.append(StoreRun(spec, store_id, tuple(campaigns)))
    return runs


def log_generate(stores: Sequence[StoreRun], target: int, seed: str) -> dict[str, Any]:
    """Append ``target`` events through ``events_append``, BATCH per call and store."""
    from carts import event_types, services, sources

    products = catalogue()
    now = time.time()
    t0 = time.perf_counter()
    rate, available = stream_rate(stores, seed, products, now, target)
    log(f"{available:,} events before now at {rate * 3600:,.0f} carts an hour at the busiest")
    workload = Workload(stores, seed, products)
    buffers: list[list[Any]] = [[] for _ in stores]
    appended = 0
    append_s = 0.0
    last_at = 0.0
    started = time.perf_counter()
    progress_at = started + 10

    def flush(i: int) -> None:
        nonlocal appended, append_s
        t = time.perf_counter()
        services.events_append(
            store_id=stores[i].store_id, events=buffers[i], source=sources.Source.server("bench")
        )
        append_s += time.perf_counter() - t
        appended += len(buffers[i])
        buffers[i] = []

    for i, ev, token in workload.stream(now, rate, target):
        at, type_, data, event_id, shopper = ev
        version, payload = event_types.validate(type_, None, data)
        buffers[i].append(
            services.NewEvent(
                event_id=event_id,
                cart=token,
                type=type_,
                schema_version=version,
                occurred_at=datetime.fromtimestamp(at, UTC),
                data=payload,
                shopper=shopper,
            )
        )
        last_at = at
        if len(buffers[i]) >= BATCH:
            flush(i)
            if time.perf_counter() >= progress_at:
                progress_at += 10
                elapsed = time.perf_counter() - started
                log(
                    f"appended {appended:,} / {target:,} events: {appended / append_s:,.0f}/s in"
                    f" events_append, {appended / elapsed:,.0f}/s with the generation"
                )
    for i in range(len(stores)):
        if buffers[i]:
            flush(i)
    seconds = time.perf_counter() - started
    log(
        f"appended {appended:,} events of {workload.carts:,} carts in {seconds:.0f} s:"
        f" {appended / append_s:,.0f}/s in events_append ({append_s:.0f} s),"
        f" {appended / seconds:,.0f}/s with the generation; the log ends"
        f" {(now - last_at) / 3600:.1f} h before now"
    )
    return {
        "events": appended,
        "carts": workload.carts,
        "append_eps": round(appended / append_s),
        "append_seconds": round(append_s, 1),
        "generate_seconds": round(time.perf_counter() - t0, 1),
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "log_end": datetime.fromtimestamp(last_at, UTC).isoformat(timespec="seconds"),
    }


def meta_read(url: str) -> dict[str, Any] | None:
    """What a kept database holds (None when it has no record: never generated, or cut short)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [META_TABLE]).fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'log'").fetchone()
        return None if row is None else dict(row[0])


def meta_write(meta: dict[str, Any]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value jsonb)"
        )
        cursor.execute(
            f"INSERT INTO {META_TABLE} VALUES ('log', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            [json.dumps(meta)],
        )


def database_exists(admin_url: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        return row is not None


def reader_access(store_id: int) -> str:
    """A marketer of the store (created once) and a fresh secret key of the store (returned); the
    store's API rate limit out of the way of the benchmark's requests."""
    from django.contrib.auth import get_user_model

    from carts import services
    from carts.models import Store, StoreMember

    users = get_user_model()
    user = users.objects.filter(username=MARKETER).first()
    if user is None:
        user = users.objects.create_user(username=MARKETER, password=MARKETER_PASSWORD)
    StoreMember.objects.get_or_create(
        user=user, store_id=store_id, defaults={"role": StoreMember.Role.MARKETER}
    )
    Store.objects.filter(pk=store_id).update(rate_limit_per_minute=2_000_000_000)
    store = Store.objects.get(pk=store_id)
    return services.store_keys_rotate(store=store, now=datetime.now(UTC)).secret_key


def table_figures() -> dict[str, Any]:
    from django.db import connection

    out: dict[str, Any] = {}
    with connection.cursor() as cursor:
        for table in ("carts_cartevent", "dashboards_cartfact", "dashboards_dailycount"):
            cursor.execute(f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}")
            rows, size = cursor.fetchone()
            out[table] = {"rows": rows, "mb": round(size / 2**20)}
    return out


# The read models: rebuild and catch-up, with timers around their parts --------------------------


@dataclass(slots=True)
class Parts:
    """Seconds spent in each part of a rebuild or catch-up (timers around the functions)."""

    reset: float = 0.0
    fetch: float = 0.0  # carts.selectors.store_events_after, materialised: SQL and instances
    apply: float = 0.0  # the dashboard projector's apply(), all of it
    load: float = 0.0  # projection._load: the batch's cart rows
    write: float = 0.0  # projection._write: the rows' upsert and the counters' upsert
    batches: int = 0
    calls: dict[str, int] = dataclasses.field(default_factory=dict)

    def as_dict(self, total: float) -> dict[str, float | None]:
        rest = total - self.reset - self.fetch - self.apply
        # The projection's own parts only when the timers saw them (its code may have moved).
        inner = self.calls.get("load", 0) > 0 and self.calls.get("write", 0) > 0
        return {
            "reset": round(self.reset, 2),
            "fetch": round(self.fetch, 2),
            "load": round(self.load, 2) if inner else None,
            "fold": round(self.apply - self.load - self.write, 2) if inner else None,
            "write": round(self.write, 2) if inner else None,
            "apply": round(self.apply, 2),
            "commit_and_rest": round(rest, 2),
        }


def _timed(parts: Parts, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
            if name == "fetch":
                result = list(result)  # the query runs when the queryset is read
            return result
        finally:
            setattr(parts, name, getattr(parts, name) + time.perf_counter() - t)
            parts.calls[name] = parts.calls.get(name, 0) + 1

    return wrapper


@contextlib.contextmanager
def part_timers() -> Iterator[Parts]:
    from carts import projectors
    from carts import selectors as carts_selectors
    from dashboards import projection

    parts = Parts()
    original = projectors.REGISTRY[projection.NAME]
    wrapped = [(carts_selectors, "store_events_after", "fetch")]
    wrapped += [(projection, name, part) for name, part in (("_load", "load"), ("_write", "write"))]
    saved = [(m, name, getattr(m, name)) for m, name, _ in wrapped if hasattr(m, name)]

    def apply(events: Any) -> None:
        parts.batches += 1
        _timed(parts, "apply", original.apply)(events)

    for module, name, part in wrapped:
        if hasattr(module, name):
            setattr(module, name, _timed(parts, part, getattr(module, name)))
    projectors.REGISTRY[projection.NAME] = dataclasses.replace(
        original, apply=apply, reset=_timed(parts, "reset", original.reset)
    )
    try:
        yield parts
    finally:
        projectors.REGISTRY[projection.NAME] = original
        for module, name, fn in saved:
            setattr(module, name, fn)


def vacuum_read_models() -> float:
    from django.db import connection

    t = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) dashboards_cartfact, dashboards_dailycount")
    return time.perf_counter() - t


def rebuild(expected: int) -> dict[str, Any]:
    from carts import projectors
    from dashboards import projection

    with part_timers() as parts:
        t = time.perf_counter()
        applied = projectors.projector_rebuild(name=projection.NAME)
        seconds = time.perf_counter() - t
    if applied != expected:
        raise RuntimeError(f"rebuild applied {applied} events, the log holds {expected}")
    return {
        "eps": applied / seconds,
        "seconds": seconds,
        "batches": parts.batches,
        "parts": parts.as_dict(seconds),
    }


def catch_up(expected: int) -> dict[str, Any]:
    """From zero: the read models emptied and the checkpoint at 0 (committed), then the runner's
    catch-up, one transaction per CATCH_UP_BATCH events."""
    from django.db import transaction

    from carts import projectors
    from carts.models import ProjectorCheckpoint
    from dashboards import projection

    with transaction.atomic():
        projection.reset()
        ProjectorCheckpoint.objects.filter(name=projection.NAME).update(position=0)
    with part_timers() as parts:
        t = time.perf_counter()
        applied = projectors.projector_catch_up(name=projection.NAME, batch_size=CATCH_UP_BATCH)
        seconds = time.perf_counter() - t
    if applied != expected:
        raise RuntimeError(f"catch-up applied {applied} events, the log holds {expected}")
    return {
        "eps": applied / seconds,
        "seconds": seconds,
        "batches": parts.batches,
        "parts": parts.as_dict(seconds),
    }


# The server and the client -----------------------------------------------------------------------


class Server:
    """``uvicorn config.asgi:application`` as ``make run`` starts it (config/devrun.py), ready once
    the login page has answered as many times as it has workers (not /healthz: it wants the
    Celery worker's and the scheduler's heartbeats, and neither runs here)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.workers = WEB_WORKERS
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "uvicorn", "config.asgi:application",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--lifespan", "off", "--timeout-graceful-shutdown", "5",
            "--workers", str(self.workers),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        self.process = Subprocess("uvicorn", cmd, env)

    def start(self, timeout: float = 90) -> None:
        self.process.start()
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < self.workers:
            code = self.process.exited()
            if code is not None:
                raise RuntimeError(f"uvicorn exited with {code}:\n{self.process.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn not ready after {timeout}s:\n{self.process.output()}")
            try:
                status = Client(self.port).request("GET", "/dashboard/login/").status
                if status != 200:
                    raise RuntimeError(f"/dashboard/login/: {status}\n{self.process.output()}")
                ready += 1
            except OSError:
                time.sleep(0.1)

    def close(self) -> None:
        self.process.close()


def server_env(database_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(WEB_ENV)  # the web server's settings in `make run` (connection pool)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DJANGO_DEBUG="0",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float

    def cookies(self) -> dict[str, str]:
        out = {}
        for name, value in self.headers:
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                out[key.strip()] = rest.split(";", 1)[0]
        return out


class Client:
    """One request per connection, timed from connecting to the last byte of the body."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        t = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            seconds = time.perf_counter() - t
            return Response(response.status, response.getheaders(), data, seconds)
        finally:
            conn.close()


_CSRF_INPUT = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


def marketer_login(client: Client, store_id: int) -> str:
    """Log in through the real login form; the Cookie header of the session."""
    form = client.request("GET", "/dashboard/login/")
    match = _CSRF_INPUT.search(form.body)
    csrf = form.cookies().get("csrftoken")
    if form.status != 200 or match is None or csrf is None:
        raise RuntimeError(f"login form: {form.status}, no CSRF token\n{form.body[:500]!r}")
    body = urlencode(
        {
            "username": MARKETER,
            "password": MARKETER_PASSWORD,
            "csrfmiddlewaretoken": match.group(1).decode(),
            "next": f"/dashboard/{store_id}/",
        }
    ).encode()
    done = client.request(
        "POST",
        "/dashboard/login/",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={csrf}",
            "Referer": f"http://127.0.0.1:{client.port}/dashboard/login/",
        },
        body,
    )
    session = done.cookies().get("sessionid")
    if done.status != 302 or not session:
        raise RuntimeError(f"login: {done.status}, no session\n{done.body[:500]!r}")
    return f"csrftoken={csrf}; sessionid={session}"


ENDPOINTS = (
    ("overview_page", "page", "/dashboard/{store}/"),
    ("timeseries_page", "page", "/dashboard/{store}/timeseries/"),
    ("overview_api", "api", "/api/v1/metrics/overview"),
    ("timeseries_api", "api", "/api/v1/metrics/timeseries"),
)


@dataclass(frozen=True, slots=True)
class Target:
    endpoint: str
    kind: str
    range: str
    path: str  # with its query
    headers: tuple[tuple[str, str], ...]


def targets(store_id: int, today: date, cookie: str, key: str) -> list[Target]:
    out = []
    for range_name, days in RANGES.items():
        query = urlencode({"start": (today - timedelta(days=days - 1)).isoformat(), "end": today})
        for name, kind, path in ENDPOINTS:
            headers = {"Cookie": cookie} if kind == "page" else {"Authorization": f"Bearer {key}"}
            out.append(
                Target(
                    name,
                    kind,
                    range_name,
                    f"{path.format(store=store_id)}?{query}",
                    tuple(headers.items()),
                )
            )
    return out


def measure_http(client: Client, plan: list[Target], requests: int) -> dict[str, Any]:
    """WARMUP_REQUESTS then ``requests`` per target, the targets interleaved (rotated each turn);
    every response must be 200."""
    samples: dict[Target, list[float]] = {t: [] for t in plan}
    sizes: dict[Target, int] = {}
    for turn in range(WARMUP_REQUESTS + requests):
        k = turn % len(plan)
        for target in plan[k:] + plan[:k]:
            r = client.request("GET", target.path, dict(target.headers))
            if r.status != 200:
                raise RuntimeError(f"GET {target.path}: {r.status}\n{r.body[:2000]!r}")
            if turn >= WARMUP_REQUESTS:
                samples[target].append(r.seconds * 1000)
                sizes[target] = len(r.body)
    out: dict[str, Any] = {}
    for target, ms in samples.items():
        out.setdefault(target.range, {})[target.endpoint] = {
            "p50": pct(ms, 50),
            "p90": pct(ms, 90),
            "p99": pct(ms, 99),
            "mean": statistics.fmean(ms),
            "kb": round(sizes[target] / 1024, 1),
        }
    return out


# Sanity and the selectors in this process --------------------------------------------------------


def _filters(store_id: int, today: date, days: int) -> Any:
    from dashboards import selectors

    return selectors.Filters(
        store_id=store_id, start=today - timedelta(days=days - 1), end=today + timedelta(days=1)
    )


def _selector_json(name: str, filters: Any) -> Any:
    from django.utils import timezone

    from dashboards import selectors

    result = getattr(selectors, name)(filters, now=timezone.now()).as_dict()
    plain = {k: v for k, v in result.items() if k not in ("filters", "timezone")}
    return json.loads(json.dumps(plain))


def sanity(client: Client, plan: list[Target], store_id: int, today: date) -> list[str]:
    """The API's figures against the selectors' for the same filters: the mismatches."""
    problems = []
    for target in plan:
        if target.kind != "api":
            continue
        selector = target.endpoint.removesuffix("_api")
        filters = _filters(store_id, today, RANGES[target.range])
        for attempt in range(2):  # a cart going quiet between the two reads: once more
            body = json.loads(client.request("GET", target.path, dict(target.headers)).body)
            api = {k: v for k, v in body.items() if k != "filters"}
            mine = _selector_json(selector, filters)
            if api == mine:
                break
            if attempt == 1:
                differing = sorted(k for k in {*api, *mine} if api.get(k) != mine.get(k))
                problems.append(f"{target.endpoint} {target.range}: {differing[:8]}")
    return problems


@contextlib.contextmanager
def captured_queries() -> Iterator[list[tuple[str, Any, float]]]:
    """(sql, params, ms) of every query Django runs in this process meanwhile."""
    from django.db import connection

    queries: list[tuple[str, Any, float]] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            queries.append((sql, params, (time.perf_counter() - t) * 1000))

    with connection.execute_wrapper(wrapper):
        yield queries


def _query_label(sql: str) -> str:
    flat = " ".join(sql.split())
    if "FROM dashboards_dailycount" in flat:
        return "dailycount sums"
    if "FROM dashboards_cartfact" in flat:
        return "cartfact quiet carts"
    if "campaigns_campaignsettings" in flat:
        return "store zone"
    return flat[:40]


def selectors_timed(store_id: int, today: date) -> dict[str, Any]:
    """Median ms over SELECTOR_CALLS calls of each selector and range: the call, its queries
    within it, and its result's ``as_dict()`` (what the API serialises)."""
    from django.utils import timezone

    from dashboards import selectors

    out: dict[str, Any] = {}
    for name in ("overview", "timeseries"):
        selector = getattr(selectors, name)
        for range_name, days in RANGES.items():
            filters = _filters(store_id, today, days)
            selector(filters, now=timezone.now()).as_dict()  # warm
            calls: list[float] = []
            as_dicts: list[float] = []
            by_query: dict[str, list[float]] = {}
            for _ in range(SELECTOR_CALLS):
                with captured_queries() as queries:
                    t = time.perf_counter()
                    result = selector(filters, now=timezone.now())
                    calls.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                result.as_dict()
                as_dicts.append((time.perf_counter() - t) * 1000)
                per_call: dict[str, float] = {}
                for sql, _, ms in queries:
                    label = _query_label(sql)
                    per_call[label] = per_call.get(label, 0.0) + ms
                for label, ms in per_call.items():
                    by_query.setdefault(label, []).append(ms)
            out.setdefault(range_name, {})[name] = {
                "ms": statistics.median(calls),
                "queries_ms": {k: round(statistics.median(v), 2) for k, v in by_query.items()},
                "as_dict_ms": round(statistics.median(as_dicts), 2),
            }
    return out


# Diagnosis ---------------------------------------------------------------------------------------


def explain(store_id: int, today: date) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of each query of the overview and time-series selectors."""
    from django.db import connection

    for name in ("overview", "timeseries"):
        filters = _filters(store_id, today, 90)
        with captured_queries() as queries:
            _selector_json(name, filters)
        for sql, params, ms in queries:
            print(
                f"\n--- {name} 90d: {_query_label(sql)} ({ms:.1f} ms) ---\n{' '.join(sql.split())}"
            )
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
                print("\n".join(row[0] for row in cursor.fetchall()))


def profile_rebuild(events: int) -> None:
    """cProfile of a rebuild's loop (store_events_after, then the projector's apply()) over the
    log's first ``events`` events, store by store, from empty read models, in a transaction rolled
    back."""
    from django.db import transaction

    from carts import selectors as carts_selectors
    from dashboards import projection

    profiler = cProfile.Profile()
    applied = 0
    with transaction.atomic():
        projection.reset()
        from carts.models import LogHead

        profiler.enable()
        for store_id in LogHead.objects.order_by("store_id").values_list("store_id", flat=True):
            position = 0
            while applied < events:
                batch = list(
                    carts_selectors.store_events_after(
                        store_id=store_id, position=position, limit=5000
                    )
                )
                if not batch:
                    break
                projection.apply(batch)
                position = batch[-1].store_position
                applied += len(batch)
        profiler.disable()
        transaction.set_rollback(True)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(30)
    print(f"\n--- cProfile of a rebuild's loop over {applied:,} events ---\n{out.getvalue()}")


# Main --------------------------------------------------------------------------------------------


def print_round(r: int, rounds: int, m: dict[str, Any]) -> None:
    b = m["rebuild"]
    print(
        f"round {r + 1}/{rounds}: rebuild {b['eps']:,.0f} events/s ({b['seconds']:.1f} s,"
        f" {b['batches']} batches; "
        + ", ".join(f"{k} {v:.1f}" for k, v in b["parts"].items() if v is not None)
        + f" s); vacuum {m['vacuum_s']:.1f} s",
        flush=True,
    )
    for range_name, endpoints in m["http"].items():
        cells = [
            f"{name} {v['p50']:.1f}/{v['p90']:.1f}/{v['p99']:.1f}" for name, v in endpoints.items()
        ]
        print(f"  {range_name} p50/p90/p99 ms: " + "; ".join(cells), flush=True)
    for range_name, selectors in m["selectors"].items():
        cells = [
            f"{name} {v['ms']:.1f} ms ("
            + ", ".join(f"{q} {ms:.1f}" for q, ms in v["queries_ms"].items())
            + f"; then as_dict {v['as_dict_ms']:.1f})"
            for name, v in selectors.items()
        ]
        print(f"  {range_name} selectors in-process: " + "; ".join(cells), flush=True)
    print(f"  API = selectors: {'yes' if not m['problems'] else m['problems']}", flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    latency: dict[str, Any] = {}
    for range_name in RANGES:
        for name, _, _ in ENDPOINTS:
            col = [r["http"][range_name][name] for r in rounds]
            latency.setdefault(range_name, {})[name] = {
                "p50": round(median([c["p50"] for c in col]), 1),
                "p90": round(median([c["p90"] for c in col]), 1),
                "p99": round(median([c["p99"] for c in col]), 1),
                "kb": col[-1]["kb"],
            }
    selectors: dict[str, Any] = {}
    for range_name in RANGES:
        for name in ("overview", "timeseries"):
            selectors.setdefault(range_name, {})[name] = round(
                median([r["selectors"][range_name][name]["ms"] for r in rounds]), 1
            )
    parts = {
        k: round(median([r["rebuild"]["parts"][k] for r in rounds]), 1)
        for k in rounds[0]["rebuild"]["parts"]
        if all(r["rebuild"]["parts"][k] is not None for r in rounds)
    }
    return {
        "rebuild_eps": round(median([r["rebuild"]["eps"] for r in rounds])),
        "rebuild_eps_rounds": [round(r["rebuild"]["eps"]) for r in rounds],
        "rebuild_seconds": round(median([r["rebuild"]["seconds"] for r in rounds]), 1),
        "rebuild_parts_s": parts,
        "latency_ms": latency,
        "selectors_ms": selectors,
    }


def print_summary(s: dict[str, Any], catch: dict[str, Any] | None) -> None:
    print(f"\nmedians over {len(s['rebuild_eps_rounds'])} round(s):")
    print(
        f"  rebuild: {s['rebuild_eps']:,} events/s (target >= {REBUILD_TARGET_EPS:,.0f});"
        f" {s['rebuild_seconds']} s: "
        + ", ".join(f"{k} {v}" for k, v in s["rebuild_parts_s"].items())
    )
    if catch is not None:
        print(
            f"  catch-up from zero ({CATCH_UP_BATCH} per transaction): {catch['eps']:,.0f} events/s"
            f" ({catch['seconds']:.0f} s: "
            + ", ".join(f"{k} {v}" for k, v in catch["parts"].items() if v is not None)
            + ")"
        )
    print(
        f"  {'':16} " + "".join(f"{r + ' p50':>10}{r + ' p99':>10}{r + ' KB':>9}" for r in RANGES)
    )
    for name, kind, _ in ENDPOINTS:
        target = PAGE_P99_TARGET_MS if kind == "page" else API_P99_TARGET_MS
        cells = "".join(
            f"{s['latency_ms'][r][name]['p50']:>10.1f}{s['latency_ms'][r][name]['p99']:>10.1f}"
            f"{s['latency_ms'][r][name]['kb']:>9.1f}"
            for r in RANGES
        )
        print(f"  {name:<16} {cells}   (p99 target <= {target:.0f} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per endpoint")
    parser.add_argument("--seed", default="dashboard-1")
    parser.add_argument(
        "--keep-db",
        metavar="NAME",
        help="generate into database NAME (bench_...) and keep it; reuse it when it holds this log",
    )
    parser.add_argument("--no-catch-up", action="store_true", help="skip the catch-up from zero")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the selectors")
    parser.add_argument("--profile", action="store_true", help="cProfile a rebuild's loop")
    args = parser.parse_args()

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    commit = git_head()  # at the start: others may commit while a long run goes on

    from config import env as config_env

    services = config_env.services()
    admin_url = services.database_url
    databases_drop_stale(admin_url, DB_PREFIX)
    if args.keep_db:
        db_name = args.keep_db
        if not db_name.startswith("bench_"):
            parser.error("--keep-db: the name must start with bench_ (it is the bench's own)")
    else:
        db_name = f"{DB_PREFIX}{os.getpid()}_{run}"
    database_url = database_url_with_name(admin_url, db_name)
    meta: dict[str, Any] | None = None
    if args.keep_db and database_exists(admin_url, db_name):
        meta = meta_read(database_url)
        if meta is None:
            log(f"{db_name} holds no complete log (a run cut short): dropping it")
            database_drop(admin_url, db_name)
        elif (meta["events"], meta["seed"]) != (args.events, args.seed):
            parser.error(
                f"--keep-db {db_name} holds {meta['events']:,} events of seed {meta['seed']!r}:"
                " choose another name, or the same --events and --seed"
            )
    if meta is None:
        database_create(admin_url, db_name)
    redis_db = redis_db_claim(services.redis_url, run, bench="dashboard")
    redis_url = redis_url_with_db(services.redis_url, redis_db)
    log(f"run {run}: database {db_name}, Redis database {redis_db}")
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=redis_url, DJANGO_DEBUG="0")
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    redis = redis_client(redis_url)
    server: Server | None = None
    rounds: list[dict[str, Any]] = []
    catch: dict[str, Any] | None = None
    try:
        log("migrating the run's database")
        django_setup()
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            pg_version = cursor.fetchone()[0]
        if meta is None:
            stores = stores_create()
            log(f"generating {args.events:,} events over {DAYS} days (seed {args.seed!r})")
            generation = log_generate(stores, args.events, args.seed)
            meta = {
                "events": generation["events"],
                "seed": args.seed,
                "stores": {s.spec.tag: s.store_id for s in stores},
                "generation": generation,
            }
            meta_write(meta)
        else:
            log(f"reusing the log in {db_name} (generated {meta['generation']['generated_at']})")
        events = int(meta["events"])
        big = int(meta["stores"]["big"])
        key = reader_access(big)
        from dashboards import selectors

        today = datetime.now(selectors.store_zone(big)).date()
        server = Server(server_env(database_url, redis_url))
        log(f"starting uvicorn ({server.workers} workers) on port {server.port}")
        server.start()
        client = Client(server.port)
        cookie = marketer_login(client, big)
        plan = targets(big, today, cookie, key)
        print(
            f"{events:,} events, {meta['generation']['carts']:,} carts in {len(meta['stores'])}"
            f" stores (big store #{big}), log {meta['generation']['log_end']} back {DAYS} days;"
            f" appended at {meta['generation']['append_eps']:,} events/s; uvicorn"
            f" {server.workers} workers, {dict(WEB_ENV)}; PostgreSQL {pg_version};"
            f" {os.cpu_count()} CPUs; commit {commit}",
            flush=True,
        )
        for r in range(args.rounds):
            log(f"round {r + 1}: rebuilding the dashboard read models")
            m: dict[str, Any] = {"rebuild": rebuild(events)}
            m["vacuum_s"] = vacuum_read_models()
            log(f"round {r + 1}: {len(plan)} x {args.requests} requests")
            m["http"] = measure_http(client, plan, args.requests)
            m["problems"] = sanity(client, plan, big, today)
            m["selectors"] = selectors_timed(big, today)
            rounds.append(m)
            print_round(r, args.rounds, m)
        tables = table_figures()
        if not args.no_catch_up:
            log("catch-up from zero")
            catch = catch_up(events)
            vacuum_read_models()
        server_log = server.process.output().strip()
        if args.explain:
            explain(big, today)
        if args.profile:
            profile_rebuild(min(events, PROFILE_EVENTS))
    finally:
        if server is not None:
            server.close()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with contextlib.suppress(Exception):
            redis.flushdb()
            redis.close()
        if args.keep_db:
            log(f"kept database {db_name}")
        else:
            with contextlib.suppress(Exception):
                database_drop(admin_url, db_name)

    if server_log:
        print(f"--- uvicorn output ---\n{server_log}")
    # Others work in the same checkout: a worker that failed to import half-edited code shows here.
    tracebacks = server_log.count("Traceback (most recent call last)")
    if tracebacks:
        print(f"WARNING: {tracebacks} traceback(s) in the server's output (above)")
    s = summarise(rounds)
    print_summary(s, catch)
    lat = s["latency_ms"]
    page_p99 = {r: max(lat[r][n]["p99"] for n, k, _ in ENDPOINTS if k == "page") for r in RANGES}
    api_p99 = {r: max(lat[r][n]["p99"] for n, k, _ in ENDPOINTS if k == "api") for r in RANGES}
    problems = [p for r in rounds for p in r["problems"]]
    figures: dict[str, Any] = {
        "bench": "dashboard",
        "events": events,
        "carts": meta["generation"]["carts"],
        "log_end": meta["generation"]["log_end"],
        "append_eps": meta["generation"]["append_eps"],
        "rebuild_eps": s["rebuild_eps"],
        "rebuild_eps_rounds": s["rebuild_eps_rounds"],
        "rebuild_seconds": s["rebuild_seconds"],
        "rebuild_parts_s": s["rebuild_parts_s"],
        "catch_up_eps": round(catch["eps"]) if catch else None,
        "catch_up_parts_s": catch["parts"] if catch else None,
        "page_p99_ms": page_p99["30d"],
        "api_p99_ms": api_p99["30d"],
        "latency_ms": lat,
        "selectors_ms": s["selectors_ms"],
        "targets": {
            "page_p99_ms": PAGE_P99_TARGET_MS,
            "api_p99_ms": API_P99_TARGET_MS,
            "rebuild_eps": REBUILD_TARGET_EPS,
        },
        "met": {
            "page_p99_ms": page_p99["30d"] <= PAGE_P99_TARGET_MS,
            "api_p99_ms": api_p99["30d"] <= API_P99_TARGET_MS,
            "rebuild_eps": s["rebuild_eps"] >= REBUILD_TARGET_EPS,
            "api_equals_selectors": not problems,
        },
        "met_90d": {
            "page_p99_ms": page_p99["90d"] <= PAGE_P99_TARGET_MS,
            "api_p99_ms": api_p99["90d"] <= API_P99_TARGET_MS,
        },
        "tables": tables,
        "server_tracebacks": tracebacks,
        "rounds": args.rounds,
        "requests": args.requests,
        "seed": args.seed,
        "uvicorn_workers": WEB_WORKERS,
        "web_env": dict(WEB_ENV),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": pg_version,
        "commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
    }
    results_print("dashboard", figures)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: server stopped, database dropped", file=sys.stderr)
        sys.exit(130)
