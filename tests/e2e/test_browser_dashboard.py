"""The marketer dashboard in headless Chromium against the real ASGI server (uvicorn) and the
projectors (run_projectors), both in processes of their own on the test database: log in through
the form, the overview's figures and charts against the metrics API for the same filters, then
the live view receiving an exit intent appended by the test. Screenshots are kept in
var/test-screenshots/<test name>/ (tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from campaigns.services import campaign_demo_ensure
from carts.models import Store, StoreMember
from carts.services import events_append
from carts.sources import Source
from dashboards.pages import FIGURES
from dashboards.tables import count_text, day_label, money_text, rate_text
from recovery import live as recovery_live
from tests.conftest import item, new_event, subprocess_env
from tests.e2e import procs
from tests.e2e.test_browser_exit_intent import _chromium

PASSWORD = "a-long-enough-password"


@pytest.fixture
def dashboard_server(committed_store, isolated_redis, tmp_path) -> Iterator[dict[str, Any]]:
    """uvicorn on a free port and run_projectors, against the test database and a Redis database
    of their own (the channel layer's groups are named by store id, like a dev server's); a
    marketer of the store, with a password."""
    store, _ = committed_store
    campaign_demo_ensure(store=store)  # an on-site tier: an exit intent gets an offer
    store.campaigns.update(holdout_share=0)  # the demo's 10% holdout: no draw here
    # Hashed as the server's settings expect (the test settings' fast MD5 is not among them).
    hasher = PBKDF2PasswordHasher()
    user = User.objects.create(
        username=f"marketer-{uuid.uuid4().hex[:6]}",
        password=hasher.encode(PASSWORD, hasher.salt()),
    )
    StoreMember.objects.create(store=store, user=user, role=StoreMember.Role.MARKETER)
    port = procs.free_port()
    origin = f"http://127.0.0.1:{port}"
    env = subprocess_env(DJANGO_DEBUG="0")
    web_log, projectors_log = tmp_path / "web.log", tmp_path / "projectors.log"
    web = procs.start(
        [procs.PYTHON, "-m", "uvicorn", "config.asgi:application", "--port", str(port)],
        env=env,
        log=web_log,
    )
    projectors = procs.start(
        [procs.PYTHON, "manage.py", "run_projectors", "--poll", "0.5"], env=env, log=projectors_log
    )
    try:
        procs.wait_for(
            lambda: procs.status_of(f"{origin}/healthz") in (200, 503),
            timeout=60,
            what=f"the web server\n{procs.tail(web_log)}",
        )
        procs.wait_for(
            lambda: "projectors running" in projectors_log.read_text(errors="replace"),
            timeout=60,
            what=f"run_projectors\n{procs.tail(projectors_log)}",
        )
        yield {"origin": origin, "store": store, "user": user, "logs": [web_log, projectors_log]}
    finally:
        procs.stop(projectors)
        procs.stop(web)


def _append(store: Store, cart: str, *events: tuple[str, dict, datetime]) -> None:
    events_append(
        source=Source.server("test"),
        store_id=store.pk,
        events=[new_event(kind, cart, data, at=at) for kind, data, at in events],
    )


def _small_log(store: Store, now: datetime) -> None:
    """Three carts: one ordered, one abandoned two hours ago, one browsing now."""
    minutes = [now - timedelta(minutes=m) for m in range(121)]
    _append(
        store,
        "bt-ordered",
        ("cart.item_added", item("MUG-01", quantity=2, unit_price=2500), minutes[50]),
        ("checkout.started", {}, minutes[45]),
        ("order.placed", {"order_id": "o-1", "total": 5000, "currency": "EUR"}, minutes[44]),
    )
    _append(store, "bt-quiet", ("cart.item_added", item("TEE-02", unit_price=1200), minutes[120]))
    _append(
        store,
        "bt-browsing",
        ("page.viewed", {"url": "https://shop.test/p/cap", "page_type": "product"}, minutes[4]),
        ("cart.item_added", item("CAP-03", unit_price=900), minutes[3]),
    )


def _fetch_json(driver: webdriver.Chrome, path: str) -> dict[str, Any]:
    """GET ``path`` from the page's origin with the browser's session."""
    result = driver.execute_async_script(
        """
        const [path, done] = arguments;
        fetch(path, {credentials: "same-origin", headers: {Accept: "application/json"}})
          .then((r) => r.text().then((body) => done({status: r.status, body})))
          .catch((e) => done({status: 0, body: String(e)}));
        """,
        path,
    )
    assert result["status"] == 200, result
    body: dict[str, Any] = json.loads(result["body"])
    return body


def _figure_texts(name: str, figure: dict[str, Any]) -> list[tuple[str, str]]:
    """(currency, value as the page shows it) for an API figure: one line, or one per currency
    for money (zero in the store's currency, EUR here, when there is none)."""
    value = figure["value"]
    if figure["kind"] == "money":
        if not value and not figure["previous"]:
            return [("", money_text(0, "EUR"))]  # nothing yet: zero in the store's currency
        codes = sorted({*(value or {}), *(figure["previous"] or {})})
        return [(c, money_text((value or {}).get(c, 0), c)) for c in codes]
    if figure["kind"] == "rate":
        return [("", rate_text(value, signed=name == "conversion_lift"))]
    return [("", count_text(value))]


def test_a_marketer_sees_the_overview_match_the_api_and_live_events_arrive(
    dashboard_server, tmp_path, screenshots
) -> None:
    origin, store = dashboard_server["origin"], dashboard_server["store"]
    now = datetime.now(UTC)
    _small_log(store, now)
    driver = _chromium(tmp_path)
    try:
        # Log in through the form; with one store the index goes straight to its overview.
        driver.get(f"{origin}/dashboard/{store.pk}/")
        WebDriverWait(driver, 10).until(ec.url_contains("/dashboard/login/"))
        driver.find_element(By.ID, "id_username").send_keys(dashboard_server["user"].username)
        driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        WebDriverWait(driver, 10).until(ec.url_to_be(f"{origin}/dashboard/{store.pk}/"))

        # The same filters for the page and the API: the last seven local days (UTC here).
        today = now.date()
        query = urlencode({"start": (today - timedelta(days=6)).isoformat(), "end": today})
        api = f"/api/v1/metrics/overview?store={store.pk}&{query}"

        # The projector's read models catch up with the log within moments.
        def caught_up() -> dict[str, Any] | None:
            overview = _fetch_json(driver, api)
            return overview if overview["carts_started"]["value"] == 3 else None

        expected = procs.wait_for(caught_up, timeout=30, what="the dashboard projector")
        assert (expected["orders"]["value"], expected["abandoned"]["value"]) == (1, 1)
        # over settled carts (ordered or abandoned): the browsing cart is in progress
        assert (expected["in_progress"]["value"], expected["settled"]["value"]) == (1, 2)
        assert expected["abandonment_rate"]["value"] == pytest.approx(1 / 2)
        series = _fetch_json(driver, f"/api/v1/metrics/timeseries?store={store.pk}&{query}")

        driver.get(f"{origin}/dashboard/{store.pk}/?{query}")
        figures = driver.find_elements(By.CSS_SELECTOR, ".figures .figure[data-figure]")
        shown = [
            (
                f.get_attribute("data-figure"),
                f.get_attribute("data-currency") or "",
                f.find_element(By.CSS_SELECTOR, ".value").text,
            )
            for f in figures
        ]
        wanted = [
            (name, currency, text)
            for name, _ in FIGURES
            for currency, text in _figure_texts(name, expected[name])
        ]
        assert shown == wanted
        assert ("carts_started", "", "3") in shown and ("orders", "", "1") in shown
        assert ("abandonment_rate", "", "50.0%") in shown

        # The chart: an SVG with a title, labelled axes and one point per day of each series,
        # each point's value the API's.
        chart = driver.find_element(By.CSS_SELECTOR, "section[aria-label=Charts] svg[role=img]")
        assert chart.get_attribute("aria-label") == "Carts per day"
        assert chart.find_element(By.CSS_SELECTOR, "g.series circle.point").is_displayed()
        points = driver.execute_script(
            """
            return Array.from(arguments[0].querySelectorAll(
              'g.series[data-name="started"] circle.point > title'), (t) => t.textContent);
            """,
            chart,
        )
        assert points == [
            f"started, {day_label(datetime.fromisoformat(p['start']), False)}: {p['carts_started']}"
            for p in series["points"]
        ]
        assert sum(p["carts_started"] for p in series["points"]) == 3
        screenshots.save(driver, "overview.png")
        screenshots.save(chart, "overview-chart.png")

        # The live view: the snapshot's active cart, then an exit intent as it happens.
        driver.find_element(By.LINK_TEXT, "Live").click()
        WebDriverWait(driver, 10).until(
            ec.text_to_be_present_in_element_attribute((By.ID, "connection"), "data-state", "open")
        )
        rows = driver.find_elements(By.CSS_SELECTOR, "#live-carts tbody tr[data-cart]")
        assert [r.get_attribute("data-cart") for r in rows] == ["bt-browsing"]
        cells = [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")]
        assert cells[2] == "€9.00" and cells[3:6] == ["1", "0", "0 / 0"]
        screenshots.save(driver, "live-snapshot.png")

        sent = time.monotonic()
        recovery_live.shopper_event_append(
            session="test",
            store_id=store.pk,
            cart="bt-browsing",
            raw={
                "id": str(uuid.uuid4()),
                "type": "shopper.exit_intent",
                "occurred_at": datetime.now(UTC).isoformat(),
                "data": {"trigger": "mouse_leave"},
            },
            now=datetime.now(UTC),
        )
        exit_item = WebDriverWait(driver, 5).until(
            ec.visibility_of_element_located(
                (
                    By.CSS_SELECTOR,
                    '#live-feed li[data-event="shopper.exit_intent"][data-cart="bt-browsing"]',
                )
            )
        )
        print(f"exit intent on the page {time.monotonic() - sent:.2f}s after the append")
        assert "Exit intent (mouse_leave)" in exit_item.text
        decided = WebDriverWait(driver, 5).until(
            ec.visibility_of_element_located(
                (By.CSS_SELECTOR, '#live-feed li[data-event="recovery.offer_decided"]')
            )
        )
        assert "Offer made: percent_discount" in decided.text
        row = driver.find_element(By.CSS_SELECTOR, '#live-carts tr[data-cart="bt-browsing"]')
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[4] == "1" and cells[6] == "offer decided"
        screenshots.save(driver, "live-exit-intent.png")

        logs = driver.get_log("browser")
        errors = [e for e in logs if e["level"] == "SEVERE" and e["source"] != "network"]
        assert errors == [], logs
    finally:
        driver.quit()
