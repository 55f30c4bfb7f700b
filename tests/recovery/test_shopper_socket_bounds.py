"""Bounds on the shopper websocket (docs/api.md, "Bounds"): each input past a bound gets its error
frame, stores nothing, and the socket keeps working."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from carts import parsers
from tests.conftest import item
from tests.recovery.test_shopper_socket import (  # noqa: F401 (fresh_caches: an autouse fixture)
    ev,
    fresh_caches,
    hello,
    log_types,
    send_event,
    shop,
)

pytestmark = [pytest.mark.asyncio]
WINDOW_MESSAGE = re.compile(
    r"Must be between \S+Z and \S+Z \(a window around the server's clock\)\.$"
)


@pytest.fixture(autouse=True)
def shipped_windows(settings):
    """The shipped defaults (config/settings/base.py), whatever the test settings say."""
    settings.CARTS_SERVER_PAST_DAYS = 400
    settings.CARTS_BROWSER_PAST_DAYS = 30
    settings.CARTS_FUTURE_MINUTES = 10


async def answer(socket, message: dict | str) -> dict:
    await socket.send_to(text_data=message if isinstance(message, str) else json.dumps(message))
    return await socket.receive_json_from(timeout=5)


@pytest.mark.parametrize(
    "offset",
    [timedelta(days=-31), timedelta(minutes=11), timedelta(days=3650)],
    ids=["31 days ago", "11 minutes ahead", "ten years ahead"],
)
async def test_a_browser_event_outside_its_window_is_an_invalid_event(committed_db, offset):
    s = await shop()
    socket = await hello(s["store"].pk, "window-1")
    message = ev("cart.item_added", item())
    message["event"]["occurred_at"] = (datetime.now(UTC) + offset).isoformat()

    frame = await answer(socket, message)

    assert (frame["type"], frame["code"]) == ("error", "invalid_event")
    assert list(frame["errors"]) == ["occurred_at"]
    [text] = frame["errors"]["occurred_at"]
    assert WINDOW_MESSAGE.match(text), text
    assert await log_types(s["store"].pk, "window-1") == []
    # the socket still works
    assert (await send_event(socket, "cart.item_added", item()))[-1]["type"] == "appended"
    await socket.disconnect()


async def test_the_calendars_end_from_a_browser_is_refused(committed_db):
    # the review's poison event (finding 1a): an item dated 9999-12-31T23:59:59Z
    s = await shop()
    socket = await hello(s["store"].pk, "window-2")
    message = ev("cart.item_added", item())
    message["event"]["occurred_at"] = "9999-12-31T23:59:59Z"

    frame = await answer(socket, message)

    assert frame["code"] == "invalid_event" and list(frame["errors"]) == ["occurred_at"]
    assert await log_types(s["store"].pk, "window-2") == []
    await socket.disconnect()


async def test_the_browser_window_is_narrower_than_the_servers(committed_db, settings):
    settings.CARTS_BROWSER_PAST_DAYS = 2
    s = await shop()
    socket = await hello(s["store"].pk, "window-3")
    for days, expected in ((3, "error"), (1, "appended")):
        message = ev("checkout.started")
        message["event"]["occurred_at"] = (datetime.now(UTC) - timedelta(days=days)).isoformat()
        assert (await answer(socket, message))["type"] == expected
    assert [t for t, _ in await log_types(s["store"].pk, "window-3")] == ["checkout.started"]
    await socket.disconnect()


@pytest.mark.parametrize("levels", [33, 8000])
async def test_json_nested_too_deep_is_an_invalid_json_frame(committed_db, levels):
    s = await shop()
    socket = await hello(s["store"].pk, "deep-1")

    frame = await answer(socket, "[" * levels + "]" * levels)

    assert frame == {
        "type": "error",
        "code": "invalid_json",
        "message": f"Messages are JSON nested at most {parsers.MAX_DEPTH} levels.",
    }
    # the socket is still open and working
    assert (await answer(socket, {"type": "ping"}))["type"] == "pong"
    await socket.disconnect()


async def test_a_deep_hello_closes_with_the_bad_hello_code(committed_db):
    from tests.recovery.test_shopper_socket import connect

    await shop()
    socket = await connect()
    await socket.send_to(text_data="[" * 8000 + "]" * 8000)

    output = await socket.receive_output(timeout=5)
    await socket.disconnect()  # end the application instance, or the loop waits for it
    assert output == {"type": "websocket.close", "code": 4400}


async def test_dwell_ms_of_10_to_the_312_is_an_invalid_event(committed_db):
    s = await shop()
    socket = await hello(s["store"].pk, "dwell-1")
    text = json.dumps(ev("page.viewed", {"url": "/p", "page_type": "product", "dwell_ms": 0}))

    frame = await answer(socket, text.replace('"dwell_ms": 0', '"dwell_ms": 1' + "0" * 312))

    assert frame["code"] == "invalid_event"
    assert frame["errors"] == {
        "data": {"dwell_ms": ["Input should be less than or equal to 86400000."]}
    }
    assert await log_types(s["store"].pk, "dwell-1") == []
    await socket.disconnect()


async def test_a_cart_past_max_money_is_an_event_rejected_frame(committed_db):
    s = await shop()
    socket = await hello(s["store"].pk, "money-1")
    assert (await send_event(socket, "cart.item_added", item("A", 1, 10**12)))[-1]["version"] == 1

    frame = (await send_event(socket, "cart.item_added", item("B", 1, 1)))[-1]

    assert frame == {
        "type": "error",
        "code": "event_rejected",
        "message": "The cart's value would be 1000000000001 minor units; at most 1000000000000.",
    }
    assert [t for t, _ in await log_types(s["store"].pk, "money-1")] == ["cart.item_added"]
    await socket.disconnect()
