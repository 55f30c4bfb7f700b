"""The live dashboard's push side (docs/websocket.md, "The dashboard websocket").

The projector ``dashboard_live`` follows the log like any other (``run_projectors`` tails it with
the Redis hints, so a push follows an append within milliseconds) and, after each batch commits,
sends its recent events to the channel-layer group of their store, where the dashboard sockets
forward them. The log is the outbox: nothing is pushed from the request that appended.

At most once, by design: the channel layer may drop a message, a failed push is logged and not
retried, and events recorded more than ``MAX_AGE`` ago are not pushed at all (a rebuild, or a
catch-up after downtime, must not flood the browsers with history). A browser that reconnects
gets a fresh snapshot instead.

The sends go through the process's shared channel-layer sender (carts/channel_push.py): one
long-lived event loop in a thread, with a channel layer of its own. ``async_to_sync(group_send)``
would make a loop and Redis pools per call, and closing them (channels_redis #332, PITFALLS) with
``close_pools()`` closes every loop's pools of that layer, including those of sockets served by the
same process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from carts import channel_push, projectors
from carts.models import CartEvent, CartState

NAME = "dashboard_live"
MESSAGE_TYPE = "dashboards.events"  # the channel-layer message; DashboardConsumer.dashboards_events
# Events recorded longer ago than this are history, not news: never pushed.
MAX_AGE = timedelta(minutes=3)
# Per store and batch; a burst beyond this sends only the latest (the frame says how many went).
MAX_EVENTS_PER_MESSAGE = 200
PUSH_TIMEOUT_SECONDS = 2.0

log = logging.getLogger(__name__)

# The event types the live view shows, and the fields of their data it may see (never an
# email, a phone or a URL: the feed is for marketers watching activity, not for personal data).
SYSTEM_FIELDS: Mapping[str, tuple[str, ...]] = {
    "shopper.exit_intent": ("trigger",),
    "recovery.offer_decided": ("decision", "reason", "score", "holdout", "campaign", "tier"),
    "recovery.offer_shown": ("offer_id",),
    "recovery.offer_accepted": ("offer_id",),
    "recovery.offer_dismissed": ("offer_id",),
    "campaign.step_sent": ("campaign", "tier", "position", "channel", "step"),
}
SHOPPER_FIELDS: Mapping[str, tuple[str, ...]] = {
    "cart.item_added": ("sku", "quantity"),
    "cart.item_removed": ("sku", "quantity"),
    "cart.item_quantity_changed": ("sku", "quantity"),
    "page.viewed": ("page_type",),
    "checkout.started": (),
    "checkout.contact_captured": (),
    "checkout.shipping_quoted": ("amount", "currency"),
    "coupon.rejected": ("reason",),
    "order.placed": ("order_id", "total", "currency"),
    "order.refunded": ("order_id", "amount", "currency"),
}
FIELDS: Mapping[str, tuple[str, ...]] = {**SHOPPER_FIELDS, **SYSTEM_FIELDS}


def store_group(store_id: int) -> str:
    """The channel-layer group of a store's dashboard sockets."""
    return f"dashboards.store.{store_id}"


def event_frame(event: CartEvent) -> dict[str, Any]:
    """The socket frame for one event, before its cart's state is attached (pure)."""
    data = event.data if isinstance(event.data, dict) else {}
    shown = {key: data[key] for key in FIELDS.get(event.type, ()) if key in data}
    if event.type == "recovery.offer_decided":
        offer = data.get("offer")
        if isinstance(offer, dict):
            shown["offer_kind"] = offer.get("kind")
            shown["offer_id"] = offer.get("id")
    return {
        "type": "event",
        "position": event.position,
        "event": event.type,
        "cart": event.cart,
        "occurred_at": event.occurred_at.isoformat(),
        "data": shown,
    }


def frames_by_store(
    events: Sequence[CartEvent], *, now: datetime
) -> dict[int, list[dict[str, Any]]]:
    """The frames to push for a batch, per store, in log order: events of the shown types
    recorded within MAX_AGE of ``now``; at most MAX_EVENTS_PER_MESSAGE per store, the latest
    (pure)."""
    since = now - MAX_AGE
    out: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        if event.type not in FIELDS:
            continue
        recorded = event.recorded_at if isinstance(event.recorded_at, datetime) else None
        if (recorded or event.occurred_at) < since:
            continue
        out.setdefault(event.store_id, []).append(event_frame(event))
    return {store: frames[-MAX_EVENTS_PER_MESSAGE:] for store, frames in out.items()}


def cart_summary(state: CartState) -> dict[str, Any]:
    """What a live row shows of a cart: its current score, value, items and status."""
    return {
        "score": state.score,
        "value": state.value,
        "currency": state.currency,
        "item_count": state.item_count,
        "status": state.status,
        "last_activity_at": (
            state.last_activity_at.isoformat() if state.last_activity_at is not None else None
        ),
    }


def _with_cart_states(by_store: dict[int, list[dict[str, Any]]]) -> None:
    """Attach each frame's cart as it is now (one query per store)."""
    for store_id, frames in by_store.items():
        tokens = {frame["cart"] for frame in frames}
        states = {
            state.token: cart_summary(state)
            for state in CartState.objects.filter(store_id=store_id, token__in=tokens).only(
                "token",
                "score",
                "value",
                "currency",
                "item_count",
                "status",
                "last_activity_at",
            )
        }
        for frame in frames:
            frame["cart_state"] = states.get(frame["cart"])


def frames_push(by_store: dict[int, list[dict[str, Any]]]) -> None:
    """Send each store's frames to its group, as one message per store. Never raises: a failed
    push is logged (the browsers' next snapshot covers it)."""
    if not by_store:
        return
    try:
        _with_cart_states(by_store)
        messages = [
            (store_group(store_id), {"type": MESSAGE_TYPE, "events": frames})
            for store_id, frames in by_store.items()
        ]
        channel_push.group_send(messages, timeout=PUSH_TIMEOUT_SECONDS)
    except Exception:
        log.exception("pushing %d stores' live events failed", len(by_store))


def apply(events: Sequence[CartEvent]) -> None:
    """The projector: pick this batch's recent events and push them once its checkpoint has
    committed (a rolled-back batch pushes nothing; it is pushed when it is applied again)."""
    try:
        by_store = frames_by_store(events, now=timezone.now())
    except Exception:
        log.exception("preparing live events failed")
        return
    if by_store:
        transaction.on_commit(lambda: frames_push(by_store))


def reset() -> None:
    """No rows: the live view keeps no read model of its own."""


def register() -> None:
    projectors.register(projectors.Projector(NAME, apply, reset))


register()
