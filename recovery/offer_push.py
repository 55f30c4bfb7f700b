"""Campaign on-site offers reach the shopper's open sockets from the log.

A campaign's on-site step records its offer as a ``recovery.offer_decided`` event (reason
``campaign_step``; recovery/campaign_hooks.py). This projector follows the log like any other and,
once its batch's checkpoint has committed, pushes each such offer to the cart's channel-layer group
through the process's shared sender (carts/channel_push.py). The log is the outbox: campaigns
never carry an offer past their commit, and an offer whose step rolled back is never pushed.

At most once, as the channel layer is: a socket that missed it (closed, or the message dropped) gets
the offer on its next hello (``pending_offers``). Offers recorded more than ``MAX_AGE`` ago or
already expired are not pushed, so a rebuild or a catch-up after downtime pushes no history.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from carts import channel_push, projectors
from carts.models import CartEvent
from recovery import live, offers

log = logging.getLogger(__name__)

NAME = "offer_push"
MAX_AGE = timedelta(minutes=5)
PUSH_TIMEOUT_SECONDS = 2.0


def pushes_of(events: Sequence[CartEvent], *, now: datetime) -> list[channel_push.Message]:
    """The batch's campaign offers still worth pushing, as (cart group, message) pairs."""
    out: list[channel_push.Message] = []
    for event in events:
        if event.type != live.OFFER_DECIDED or event.recorded_at < now - MAX_AGE:
            continue
        data = event.data if isinstance(event.data, Mapping) else {}
        offer = data.get("offer")
        # A campaign's decision names its step (its reason may say why it has no code).
        if data.get("step") is None or data.get("decision") != offers.OFFER:
            continue
        if not isinstance(offer, Mapping) or not _unexpired(offer, now):
            continue
        message: dict[str, Any] = {"type": "offer.push", "offer": dict(offer)}
        out.append((live.cart_group(event.store_id, event.cart), message))
    return out


def _unexpired(offer: Mapping[str, Any], now: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(offer["expires_at"])) > now
    except (KeyError, ValueError, TypeError):
        return False


def push(messages: Sequence[channel_push.Message]) -> None:
    """Never raises: a failed push is logged (the socket's next hello covers it)."""
    try:
        channel_push.group_send(messages, timeout=PUSH_TIMEOUT_SECONDS)
    except Exception:
        log.exception("pushing %d campaign offer(s) failed", len(messages))


def apply(events: Sequence[CartEvent]) -> None:
    """The projector: push this batch's campaign offers once its checkpoint has committed."""
    messages = pushes_of(events, now=timezone.now())
    if messages:
        transaction.on_commit(lambda: push(messages))


def reset() -> None:
    """No rows: pushes keep no read model."""


def register() -> None:
    projectors.register(projectors.Projector(NAME, apply, reset))
