"""The shopper simulator: its journeys (pure, seeded) and a run against a real server (uvicorn in a
subprocess, on the test database), whose summary must agree with what the store's log holds."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carts import event_types
from carts.models import CartEvent
from carts.projections import FoldEvent, fold
from dashboards.simulator import catalogue as cm
from dashboards.simulator import journeys as jm
from tests.conftest import subprocess_env
from tests.e2e import procs
from tests.e2e.conftest import isolated_redis  # noqa: F401 - a fixture, used below

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
SHOPPER_TYPES = {
    "page.viewed", "cart.item_added", "cart.item_removed", "cart.item_quantity_changed",
    "checkout.started", "checkout.contact_captured", "checkout.shipping_quoted",
    "coupon.rejected", "shopper.exit_intent", "order.placed", "order.refunded",
}  # fmt: skip


@pytest.fixture(scope="module")
def catalogue() -> cm.Catalogue:
    return cm.catalogue_load()


# The journeys ------------------------------------------------------------------------------------


def test_the_catalogue_is_the_rees46_stores_products_weighted_by_views(catalogue):
    assert len(catalogue.products) == 1556
    by_sku = {p.sku: p for p in catalogue.products}
    assert by_sku["1005115"] == cm.Product("1005115", "Apple smartphone", "electronics", 97557)
    # The most viewed product is drawn most often.
    weights = [
        b - a for a, b in zip((0.0, *catalogue.cumulative), catalogue.cumulative, strict=False)
    ]
    assert catalogue.products[weights.index(max(weights))].sku == "1005115"


def test_without_the_file_the_catalogue_is_the_built_in_one(tmp_path):
    assert cm.catalogue_load(tmp_path / "missing.csv") is cm.FALLBACK


def test_the_same_seed_gives_the_same_journeys_and_another_seed_others(catalogue):
    first = jm.journeys(seed=7, count=40, catalogue=catalogue)
    assert jm.journeys(seed=7, count=40, catalogue=catalogue) == first
    assert jm.journeys(seed=8, count=40, catalogue=catalogue) != first
    # A journey depends on its seed and index only, not on the journeys before it.
    assert jm.journey(seed=7, index=33, catalogue=catalogue) == first[33]
    assert jm.journeys(seed=7, count=5, start=30, catalogue=catalogue) == first[30:35]


def test_every_action_is_a_valid_event_and_the_basket_is_the_fold_of_the_visit(catalogue):
    for j in jm.journeys(seed=3, count=300, catalogue=catalogue, shop_url="http://shop.test"):
        events = []
        for n, action in enumerate(j.visit):
            _, data = event_types.validate(action.type, None, dict(action.data))
            assert data == dict(action.data), action
            events.append(FoldEvent(action.type, data, T0 + timedelta(seconds=n), j.shopper))
        cart = fold(events)
        assert [(line.sku, line.quantity, line.unit_price) for line in cart.lines] == [
            (line.sku, line.quantity, line.unit_price) for line in j.lines
        ]
        assert cart.value == j.value
        exits = [a for a in j.visit if a.type == "shopper.exit_intent"]
        if j.channel == "server":
            assert exits == []  # exit intents come from the snippet
        elif exits:
            assert j.visit[-1] is exits[0] and len(exits) == 1
        assert j.visit[0].type == "page.viewed" and j.visit[0].wait == 0.0
        assert all(a.wait >= 0 for a in j.visit)
        assert all(
            a.data.get("url", "http://shop.test").startswith("http://shop.test") for a in j.visit
        )
        for action in jm.return_visit(j, shop_url="http://shop.test"):
            event_types.validate(action.type, None, dict(action.data))


def test_the_shares_are_those_documented(catalogue):
    """Statistical shape over 4,000 journeys of one seed (so exact figures; the bounds say what
    they mean)."""
    js = jm.journeys(seed=11, count=4000, catalogue=catalogue)
    with_items = [j for j in js if j.lines]
    browser = [j for j in with_items if j.channel == "browser"]
    first_orders = sum(j.orders_now(accepted_offer=False) for j in with_items) / len(with_items)
    assert 0.77 < len(with_items) / len(js) < 0.83  # 20% browse only
    assert 0.67 < sum(j.channel == "browser" for j in js) / len(js) < 0.73
    assert 0.28 < first_orders < 0.38  # about two carts in three are abandoned
    exits = sum(j.visit[-1].type == "shopper.exit_intent" for j in browser) / len(browser)
    assert 0.5 < exits < 0.6
    contacts = [j for j in with_items if j.contact]
    assert 0.75 < sum(j.consent for j in contacts) / len(contacts) < 0.85
    assert {j.device for j in js} == {"desktop", "mobile", "tablet"}
    assert len({j.timezone for j in js}) == len(jm.ZONES)
    known = [j.shopper_id for j in js if j.shopper_id]
    assert 0.32 < len(known) / len(js) < 0.38
    assert len(set(known)) < len(known)  # some customers come with several carts


@pytest.mark.parametrize(
    ("p_order", "u_order", "accepted", "orders"),
    [
        (0.3, 0.2, False, True),
        (0.3, 0.5, False, False),
        (0.3, 0.5, True, True),  # 1 - 0.7 * 0.45 = 0.685
        (0.3, 0.7, True, False),
    ],
)
def test_an_accepted_offer_makes_an_order_more_likely(
    catalogue, p_order, u_order, accepted, orders
):
    j = _with_items(catalogue)
    j = _replace(j, p_order=p_order, u_order=u_order)
    assert j.orders_now(accepted_offer=accepted) is orders


@pytest.mark.parametrize(
    ("u_return", "none", "email", "coupon"),
    [
        (0.05, True, True, True),
        (0.2, False, True, True),
        (0.4, False, False, True),
        (0.5, False, False, False),
    ],
)
def test_an_email_and_more_a_code_bring_carts_back(catalogue, u_return, none, email, coupon):
    j = _replace(_with_items(catalogue), u_return=u_return)
    assert (j.returns("none"), j.returns("email"), j.returns("coupon")) == (none, email, coupon)


def test_a_refund_is_the_whole_order_or_its_last_line(catalogue):
    j = _with_items(catalogue, lines=2)
    assert _replace(j, u_refund=0.5).refund(10_000) is None
    assert _replace(j, u_refund=0.01, refund_full=True).refund(10_000) == 10_000
    last = j.lines[-1].quantity * j.lines[-1].unit_price
    assert _replace(j, u_refund=0.01, refund_full=False).refund(10**9) == last
    assert _replace(j, u_refund=0.01, refund_full=False).refund(100) == 100  # never above


def _with_items(catalogue: cm.Catalogue, lines: int = 1) -> jm.Journey:
    for index in range(1000):
        j = jm.journey(seed=1, index=index, catalogue=catalogue)
        if len(j.lines) >= lines:
            return j
    raise AssertionError("no journey with items")


def _replace(j: jm.Journey, **changes: Any) -> jm.Journey:
    import dataclasses

    return dataclasses.replace(j, **changes)


def test_waiting_for_a_server_that_is_not_up_yet_is_no_error():
    """make run starts the simulator with the web server: nothing listens for a moment."""
    import asyncio

    from dashboards.simulator import server_ready

    said: list[str] = []
    url = f"http://127.0.0.1:{procs.free_port()}"
    status = asyncio.run(server_ready(url, timeout=1.5, say=said.append, stop=asyncio.Event()))
    assert status == 0


# Against a real server -------------------------------------------------------------------------


@pytest.fixture
def server(committed_store, tmp_path) -> Iterator[str]:
    """uvicorn on a free port against the test database; the store allows its origin and has the
    demo campaign (an on-site tier offering 10% to any cart with items)."""
    from campaigns.services import campaign_demo_ensure

    store, _ = committed_store
    port = procs.free_port()
    origin = f"http://127.0.0.1:{port}"
    store.allowed_origins = [origin]
    store.save(update_fields=["allowed_origins"])
    campaign_demo_ensure(store=store)
    store.campaigns.update(holdout_share=0)  # the demo's 10% holdout: no draw here
    log = tmp_path / "web.log"
    with procs.web_server(port, env=subprocess_env(DJANGO_DEBUG="0"), log=log):
        yield origin


def _simulate(origin: str, creds: Any, log: Path, *args: str, timeout: float = 120) -> dict:
    process = procs.start(
        [
            procs.PYTHON, "manage.py", "simulate", "--url", origin, "--origin", origin,
            "--secret-key", creds.secret_key, "--publishable-key", creds.publishable_key,
            "--wait", "5", *args,
        ],
        env=subprocess_env(),
        log=log,
    )  # fmt: skip
    try:
        assert process.wait(timeout=timeout) == 0, procs.tail(log)
    finally:
        procs.stop(process)
    last = log.read_text().strip().splitlines()[-1]
    return json.loads(last)


def _log(store_id: int) -> list[CartEvent]:
    return list(CartEvent.objects.filter(store_id=store_id).order_by("position"))


def test_a_run_puts_carts_offers_and_orders_in_the_log_as_its_summary_says(
    server, committed_store, tmp_path
):
    store, creds = committed_store
    summary = _simulate(
        server, creds, tmp_path / "simulate.log",
        "--shoppers", "16", "--seed", "7", "--speed", "100000", "--concurrency", "6",
    )  # fmt: skip
    print(procs.tail(tmp_path / "simulate.log", 12))
    events = _log(store.pk)
    shopper_events = [e for e in events if e.type in SHOPPER_TYPES]
    decided = [e for e in events if e.type == "recovery.offer_decided"]
    types = Counter(e.type for e in events)

    assert summary["errors"] == 0, summary["errors_by_kind"]
    assert summary["shoppers"] == summary["journeys_finished"] == 16
    # Everything it says it sent is in the log, and nothing else.
    assert summary["events_by_type"] == dict(Counter(e.type for e in shopper_events))
    assert summary["events"] == len(shopper_events)
    assert summary["carts"] == len({e.cart for e in events})
    assert summary["orders"] == types["order.placed"] >= 1
    assert summary["refunds"] == types["order.refunded"]
    revenue = sum(e.data["total"] for e in events if e.type == "order.placed")
    assert summary["revenue"] == {"EUR": revenue}
    # Both paths: browser sessions over the websocket and server-side batches.
    assert summary["sessions"] >= 1 and summary["batches"] >= 1
    assert any(e.cart.startswith("sim-") for e in shopper_events)  # server side
    assert any(e.cart.startswith("c_") for e in shopper_events)  # tokens the sessions made
    # The browser sends only what a browser may: orders, refunds and contact details come from
    # the shop's server (secret key); logged-in customers' carts are the server's, opened by the
    # browser with a grant (issue 11).
    by_source = Counter((e.type, e.source) for e in shopper_events)
    for kind in ("order.placed", "order.refunded", "checkout.contact_captured"):
        assert by_source[(kind, "browser")] == 0, kind
    assert by_source[("checkout.contact_captured", "server")] >= 1
    granted = {
        e.cart for e in shopper_events if e.source == "browser" and e.cart.startswith("sim-")
    }
    assert summary["grants"] >= len(granted) >= 1
    # Exit intents, the decisions they got, and what the shoppers did with the offers.
    assert summary["exit_intents"] == types["shopper.exit_intent"] == len(decided) >= 1
    offered = [e for e in decided if e.data["decision"] == "offer"]
    assert summary["offers_received"] == len(offered) >= 1
    assert summary["offers_shown"] == types["recovery.offer_shown"]
    assert summary["offers_accepted"] == types["recovery.offer_accepted"]
    assert summary["offers_dismissed"] == types["recovery.offer_dismissed"]
    assert summary["offers_accepted"] + summary["offers_dismissed"] >= 1
    # An order names no code but the one its cart's shopper accepted.
    # (An offer may carry no code: one new on-site code per client address and hour, and the
    # simulator's shoppers all come from one address.)
    offer_codes = {
        e.data["offer"]["id"]: (e.cart, e.data["offer"].get("discount_code")) for e in offered
    }
    accepted_codes = {
        offer_codes[e.data["offer_id"]] for e in events if e.type == "recovery.offer_accepted"
    }
    for order in (e for e in events if e.type == "order.placed" and "coupon" in e.data):
        assert (order.cart, order.data["coupon"]) in accepted_codes
    # Every order is for the value of its cart's basket, less an offer's discount, plus shipping.
    for order in (e for e in events if e.type == "order.placed"):
        quoted = [
            e for e in events if e.cart == order.cart and e.type == "checkout.shipping_quoted"
        ]
        shipping = quoted[-1].data["amount"] if quoted else 0
        assert order.data["total"] <= _value(events, order) + shipping
    # No code was redeemed: no campaign email reached anyone (no scheduler runs here).
    assert summary["codes_redeemed"] == types["campaign.coupon_redeemed"] == 0


def _value(events: list[CartEvent], order: CartEvent) -> int:
    cart = fold(
        FoldEvent(e.type, e.data, e.occurred_at, e.shopper)
        for e in events
        if e.cart == order.cart and e.position < order.position and e.type in SHOPPER_TYPES
    )
    return cart.value


def test_bad_keys_are_counted_and_printed_not_raised(server, committed_store, tmp_path):
    _, creds = committed_store
    bad = type(creds)(creds.store_id, "sk_" + "x" * 40, "pk_" + "y" * 40, creds.webhook_secret)
    summary = _simulate(
        server,
        bad,
        tmp_path / "simulate.log",
        "--shoppers",
        "4",
        "--seed",
        "7",
        "--speed",
        "100000",
    )
    assert summary["events"] == 0 and summary["orders"] == 0
    assert summary["errors"] >= 4
    # (a logged-in customer's cart asks for its grant with the secret key first)
    assert set(summary["errors_by_kind"]) <= {
        "shopper-sessions 401",
        "events 401",
        "browser-grant 401",
    }
    output = (tmp_path / "simulate.log").read_text()
    assert "errors " in output
    for kind, n in summary["errors_by_kind"].items():  # each kind printed with its count
        assert f"{n} x {kind}: " in output


@pytest.mark.slow
@pytest.mark.usefixtures("isolated_redis")  # the scheduler's lock and Celery's queue: our own
def test_abandoned_carts_come_back_with_the_campaigns_code_and_redeem_it(
    server, committed_store, tmp_path
):
    """The scheduler and a Celery worker run a campaign whose only tier sends a discount code a
    minute after a cart goes quiet; shoppers who can be emailed look at their mailbox, some come
    back and redeem the code through the coupon API before ordering. Server-side shoppers only
    (no exit-intent offers), seed 95: three of its 24 journeys come back with a code about
    100 s after leaving, some 35 s after the code is sent."""
    from campaigns.models import Campaign
    from tests.campaigns.builders import campaign_with_tiers

    store, creds = committed_store
    Campaign.objects.filter(store=store).update(active=False)  # the demo campaign
    campaign_with_tiers(
        store.pk,
        activated_at=datetime.now(UTC) - timedelta(hours=1),
        inactivity_minutes=1,
        tiers=[
            {
                "channel": "discount",
                "delay_minutes": 0,
                "offer_kind": "percent_discount",
                "discount_min": 5,
                "discount_max": 15,
                "discount_cap": 3000,
                "subject_template": "A code for your cart",
            }
        ],
    )
    env = subprocess_env(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
    worker = procs.start(
        [procs.PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
         "--concurrency", "1", "--without-mingle", "--without-gossip",
         "--hostname", f"sim-{uuid.uuid4().hex[:6]}@%h"],
        env=env,
        log=tmp_path / "worker.log",
    )  # fmt: skip
    scheduler = procs.start(
        [procs.PYTHON, "manage.py", "run_scheduler"], env=env, log=tmp_path / "scheduler.log"
    )
    try:
        summary = _simulate(
            server, creds, tmp_path / "simulate.log",
            "--shoppers", "24", "--seed", "95", "--speed", "1500", "--browser-share", "0",
            "--horizon-hours", "45", timeout=240,
        )  # fmt: skip
    finally:
        procs.stop(scheduler)
        procs.stop(worker)
    print(procs.tail(tmp_path / "simulate.log", 12))
    events = _log(store.pk)
    types = Counter(e.type for e in events)
    redeemed = [e for e in events if e.type == "campaign.coupon_redeemed"]

    assert summary["errors"] == 0, summary["errors_by_kind"]
    assert summary["codes_seen"] >= summary["returned_with_code"] >= 1
    assert summary["codes_redeemed"] == len(redeemed) >= 1
    assert summary["orders"] == types["order.placed"]
    assert summary["orders_on_return"] >= len(redeemed)
    assert summary["discount"] == {"EUR": sum(e.data["discount_applied"] for e in redeemed)}
    for r in redeemed:
        [order] = [e for e in events if e.type == "order.placed" and e.cart == r.cart]
        assert order.data["order_id"] == r.data["order_id"]
        assert order.data["coupon"] == r.data["code"]
        assert order.position > r.position


def test_forever_runs_until_sigterm_with_a_key_of_its_own_that_it_revokes(
    server, committed_store, tmp_path
):
    """``make run``'s way: the store file (store id and publishable key, no secret key), new
    shoppers at a rate until SIGTERM; then the summary, and the key it issued is revoked."""
    import signal

    from carts.models import StoreKey

    store, creds = committed_store
    store_file = tmp_path / "demo-store.json"
    store_file.write_text(
        json.dumps({"store_id": store.pk, "publishable_key": creds.publishable_key})
    )
    keys_before = set(StoreKey.objects.filter(store=store).values_list("pk", flat=True))
    log = tmp_path / "simulate.log"
    process = procs.start(
        [
            procs.PYTHON, "manage.py", "simulate", "--forever", "--rate", "600", "--speed", "600",
            "--url", server, "--store-file", str(store_file), "--progress", "1", "--wait", "5",
        ],
        env=subprocess_env(),
        log=log,
    )  # fmt: skip
    try:
        procs.wait_for(
            lambda: (
                CartEvent.objects.filter(store=store, type="order.placed").exists()
                and " shoppers, " in log.read_text()
            ),  # a progress line
            timeout=90,
            what=f"an order and a progress line\n{procs.tail(log)}",
        )
        [run_key] = StoreKey.objects.filter(store=store).exclude(pk__in=keys_before)
        assert run_key.kind == "secret" and run_key.revoked_at is None
        assert process.poll() is None  # --forever
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, procs.tail(log)
    finally:
        procs.stop(process)
    output = log.read_text()
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["errors"] == 0, summary["errors_by_kind"]
    assert summary["orders"] >= 1 and summary["shoppers"] >= summary["journeys_finished"]
    run_key.refresh_from_db()
    assert run_key.revoked_at is not None
    # What it counted was stored (a journey cut short may have sent one more it never heard of).
    stored = CartEvent.objects.filter(store=store, type__in=SHOPPER_TYPES).count()
    assert 1 <= summary["events"] <= stored


def test_make_run_runs_the_simulator_unless_simulate_is_0(monkeypatch):
    from config import devrun

    monkeypatch.delenv("SIMULATE", raising=False)
    [simulator] = [p for p in devrun.programs(port=8123) if p.name == "simulator"]
    assert simulator.argv[1:] == (
        str(devrun.env.BASE_DIR / "manage.py"), "simulate", "--forever", "--rate", "20",
        "--speed", "60", "--away-speed", "10", "--concurrency", "8",
        "--url", "http://127.0.0.1:8123",
    )  # fmt: skip
    monkeypatch.setenv("SIMULATE", "0")
    assert "simulator" not in [p.name for p in devrun.programs(port=8123)]
