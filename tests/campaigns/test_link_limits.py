"""The links in campaign emails under abuse: one click event per step and minute, and the per
client address limits (restore_ip, unsubscribe_ip) of security review 2, finding 12."""

from __future__ import annotations

import ipaddress
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.test import Client

from campaigns import clock, links, tracking
from campaigns.models import Step, Suppression
from carts import ratelimits
from carts.models import CartEvent, Store
from tests.carts.threads import raise_first_error, run_in_threads

ONE_CLICK = ("List-Unsubscribe=One-Click", "application/x-www-form-urlencoded")
# Campaign time in these tests: 10 s into a minute.
NOON = datetime(2026, 3, 10, 12, 0, 10, tzinfo=UTC)


def _path(url: str) -> str:
    return urlsplit(url).path


def _new_address() -> str:
    """A client address of a test's own: limits count in the Redis every test run shares."""
    return str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | random.getrandbits(64)))


@pytest.fixture
def address() -> str:
    return _new_address()


@pytest.fixture
def browser(address) -> Client:
    return Client(REMOTE_ADDR=address)


@pytest.fixture
def at(monkeypatch):
    """Set the campaigns' clock, as the link views read it."""

    def set_to(when: datetime) -> None:
        monkeypatch.setattr(clock, "now", lambda: when)

    set_to(NOON)
    return set_to


def _limits(settings, **rules: str) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, **rules}


def _events(store: Store, type: str) -> list[tuple[str, datetime, int]]:
    return list(
        CartEvent.objects.filter(store=store, type=type)
        .order_by("position")
        .values_list("cart", "occurred_at", "data__step")
    )


def _assert_too_many(response, limit: str) -> None:
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["code"] == "rate_limited"
    assert response.json()["limit"] == limit
    assert response["Cache-Control"] == "no-store"


def _steps(store: Store, shop_cart, campaign_step, n: int) -> list[Step]:
    """``n`` email steps, each of its own shopper."""
    return [
        campaign_step(shop_cart(store.pk, f"cart-{i}", email=f"shopper{i}@example.com"))
        for i in range(n)
    ]


# One click event per step and minute -------------------------------------------------------------


def test_20_replays_of_a_restore_link_in_a_minute_record_one_click_and_all_redirect(
    browser, at, settings, store, shop_cart, campaign_step
):
    _limits(settings, restore_ip="100/minute")
    step = campaign_step(shop_cart(store.pk, "cart-1"))
    url = _path(links.restore_url(step.link_id))

    # when the link is fetched 20 times within one minute (12:00:10 to 12:00:57)
    responses = []
    for i in range(20):
        at(NOON + timedelta(seconds=i * 2.5))
        responses.append(browser.get(url))

    # then every fetch takes the shopper to the cart, and one click is stored, at the first time
    assert {(r.status_code, r["Location"]) for r in responses} == {
        (302, "https://shop.example/cart")
    }
    assert _events(store, "campaign.link_clicked") == [("cart-1", NOON, step.pk)]

    # when it is fetched again a minute later (and again in that minute)
    later = NOON + timedelta(seconds=55)  # 12:01:05
    at(later)
    assert browser.get(url).status_code == 302
    at(later + timedelta(seconds=30))
    assert browser.get(url).status_code == 302

    # then a second click is stored, and no more
    assert _events(store, "campaign.link_clicked") == [
        ("cart-1", NOON, step.pk),
        ("cart-1", later, step.pk),
    ]


def test_clicks_of_two_steps_in_one_minute_are_two_events(
    browser, at, settings, store, shop_cart, campaign_step
):
    _limits(settings, restore_ip="100/minute")
    first, second = _steps(store, shop_cart, campaign_step, 2)

    for step in (first, second, first, second):
        assert browser.get(_path(links.restore_url(step.link_id))).status_code == 302

    assert _events(store, "campaign.link_clicked") == [
        ("cart-0", NOON, first.pk),
        ("cart-1", NOON, second.pk),
    ]


# Limits per client address ---------------------------------------------------------------------


def test_over_its_limit_a_restore_link_still_redirects_and_records_no_click(
    browser, at, settings, store, shop_cart, campaign_step
):
    _limits(settings, restore_ip="3/minute")
    step = campaign_step(shop_cart(store.pk, "cart-1"))
    url = _path(links.restore_url(step.link_id))
    for minute in range(3):  # three clicks a minute apart: each recorded
        at(NOON + timedelta(minutes=minute))
        assert browser.get(url).status_code == 302
    assert len(_events(store, "campaign.link_clicked")) == 3

    # when a fourth comes, in a minute of its own, over the address's limit
    at(NOON + timedelta(minutes=3))
    response = browser.get(url)

    # then the shopper still lands on the cart, and the click is not recorded
    assert (response.status_code, response["Location"]) == (302, "https://shop.example/cart")
    assert response["Cache-Control"] == "no-store"
    assert "Retry-After" not in response
    assert len(_events(store, "campaign.link_clicked")) == 3
    # and another address is counted apart: its click of this minute is recorded
    assert Client(REMOTE_ADDR=_new_address()).get(url).status_code == 302
    assert [t for _, t, _ in _events(store, "campaign.link_clicked")] == [
        NOON + timedelta(minutes=m) for m in range(4)
    ]


def test_the_open_pixel_is_limited_per_address_and_link_not_per_address(
    browser, at, settings, store, shop_cart, campaign_step
):
    # A mail image proxy fetches every recipient's pixel from one address: each link has its own
    # count there, and only replays of one link are refused.
    _limits(settings, open_link="2/minute")
    steps = _steps(store, shop_cart, campaign_step, 3)
    for step in steps:
        assert browser.get(_path(links.open_pixel_url(step.link_id))).status_code == 200
    again = _path(links.open_pixel_url(steps[0].link_id))
    assert browser.get(again).status_code == 200

    response = browser.get(again)

    _assert_too_many(response, "open_link")
    opened = sorted(s for _, _, s in _events(store, "campaign.email_opened"))
    assert opened == sorted(s.pk for s in steps)


def test_dont_remind_me_pages_over_the_limit_are_429_and_store_nothing(
    browser, address, at, settings, store, shop_cart, campaign_step
):
    _limits(settings, restore_ip="2/minute")
    steps = _steps(store, shop_cart, campaign_step, 3)
    for step in steps[:2]:
        assert browser.get(_path(links.stop_url(step.link_id))).status_code == 200

    # the pages: counted per address
    _assert_too_many(browser.get(_path(links.stop_url(steps[2].link_id))), "restore_ip")

    # the act: counted per address and link; a link whose count is used up is refused
    ratelimits.hit("restore_ip", address, steps[2].link_id.hex)
    ratelimits.hit("restore_ip", address, steps[2].link_id.hex)
    _assert_too_many(browser.post(_path(links.stop_url(steps[2].link_id))), "restore_ip")
    assert Suppression.objects.filter(store=store).count() == 0
    assert _events(store, "campaign.reminders_declined") == []
    assert Step.objects.get(pk=steps[2].pk).status == Step.Status.PENDING


def test_unsubscribe_pages_over_the_limit_are_429_and_store_nothing(
    browser, address, at, settings, store, shop_cart, campaign_step
):
    _limits(settings, unsubscribe_ip="2/minute")
    steps = _steps(store, shop_cart, campaign_step, 3)
    for step in steps[:2]:
        assert browser.get(_path(links.unsubscribe_url(step.link_id))).status_code == 200

    _assert_too_many(browser.get(_path(links.unsubscribe_url(steps[2].link_id))), "unsubscribe_ip")

    # a one-click POST of a link whose count from this address is used up
    ratelimits.hit("unsubscribe_ip", address, steps[2].link_id.hex)
    ratelimits.hit("unsubscribe_ip", address, steps[2].link_id.hex)
    _assert_too_many(
        browser.post(_path(links.unsubscribe_url(steps[2].link_id)), *ONE_CLICK), "unsubscribe_ip"
    )
    assert Suppression.objects.filter(store=store).count() == 0
    assert _events(store, "campaign.unsubscribed") == []
    assert Step.objects.get(pk=steps[2].pk).status == Step.Status.PENDING


def test_each_links_limit_lifts_after_its_window(
    browser, at, settings, store, shop_cart, campaign_step
):
    # given one-second rules, each used up by one client address (each refusal right after
    # the hit it follows: well within the second)
    _limits(settings, restore_ip="1/second", open_link="1/second", unsubscribe_ip="1/second")
    first, second = _steps(store, shop_cart, campaign_step, 2)
    pixel = _path(links.open_pixel_url(first.link_id))
    unsubscribe = _path(links.unsubscribe_url(first.link_id))
    assert browser.get(_path(links.restore_url(first.link_id))).status_code == 302
    at(NOON + timedelta(minutes=1))  # a click of a minute of its own: unrecorded only by the limit
    assert browser.get(_path(links.restore_url(second.link_id))).status_code == 302
    _assert_too_many(browser.get(_path(links.stop_url(first.link_id))), "restore_ip")
    assert browser.get(pixel).status_code == 200
    _assert_too_many(browser.get(pixel), "open_link")
    assert browser.get(unsubscribe).status_code == 200
    _assert_too_many(browser.get(unsubscribe), "unsubscribe_ip")
    assert [s for _, _, s in _events(store, "campaign.link_clicked")] == [first.pk]

    # when the window has passed
    time.sleep(1.1)

    # then the same address is served, and recorded, again
    assert browser.get(_path(links.restore_url(second.link_id))).status_code == 302
    assert [s for _, _, s in _events(store, "campaign.link_clicked")] == [first.pk, second.pk]
    assert browser.get(pixel).status_code == 200
    assert browser.get(unsubscribe).status_code == 200


def test_a_mail_providers_one_click_posts_for_many_shoppers_pass_and_a_replayed_one_is_limited(
    address, at, settings, store, shop_cart, campaign_step
):
    # given a mail provider's server (one address, no cookie, no CSRF token) and a low limit
    _limits(settings, unsubscribe_ip="2/minute")
    provider = Client(enforce_csrf_checks=True, REMOTE_ADDR=address)
    steps = _steps(store, shop_cart, campaign_step, 4)

    # when it posts the one-click unsubscribes of four shoppers, more than the address's limit
    responses = [provider.post(_path(links.unsubscribe_url(s.link_id)), *ONE_CLICK) for s in steps]

    # then each is done: one-click POSTs count per address and link
    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    assert sorted(s for _, _, s in _events(store, "campaign.unsubscribed")) == sorted(
        s.pk for s in steps
    )
    assert {(s.status, s.reason) for s in Step.objects.filter(pk__in=[s.pk for s in steps])} == {
        (Step.Status.SKIPPED, "unsubscribed")
    }

    # when one link is posted again and again, the third from this address is refused
    url = _path(links.unsubscribe_url(steps[0].link_id))
    assert provider.post(url, *ONE_CLICK).status_code == 200  # a retry: nothing more stored
    _assert_too_many(provider.post(url, *ONE_CLICK), "unsubscribe_ip")
    assert len(_events(store, "campaign.unsubscribed")) == 4


def test_concurrent_clicks_of_a_step_in_one_minute_store_one_event(
    committed_store, shop_cart, campaign_step
):
    store, _ = committed_store
    step = campaign_step(shop_cart(store.pk, "cart-1"))
    barrier = threading.Barrier(8)

    def click(second: int) -> str:
        barrier.wait()
        return tracking.link_click_record(step_id=step.pk, now=NOON + timedelta(seconds=second))

    outcomes = run_in_threads(click, [(i,) for i in range(8)])

    raise_first_error(outcomes)
    assert len(set(outcomes)) == 1 and outcomes[0].endswith("/cart")  # the store has no domain
    [(cart, occurred_at, step_pk)] = _events(store, "campaign.link_clicked")
    assert (cart, step_pk) == ("cart-1", step.pk)
    assert NOON <= occurred_at < NOON + timedelta(seconds=8)
