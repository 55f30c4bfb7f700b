"""The extension points of campaigns, in one place.

``recovery`` (which may import campaigns, never the other way) fills them in from its
``AppConfig.ready()`` (recovery/campaign_hooks.py); campaigns calls them where they say. Each is
None until registered, and campaigns works without them (no price sensitivity, no on-site nudge).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from campaigns.models import Step, Tier
from carts.models import CartState
from carts.services import NewEvent


@dataclass(slots=True)
class Hooks:
    # When a discount is sized (campaigns.senders): the council's price specialist for a cart,
    # 0..1 (None: unknown).
    price_sensitivity: Callable[[int, CartState, datetime], float | None] | None = None
    # When an on-site step runs (campaigns.senders): (offer for the browser, events recording it).
    onsite_offer: Callable[[int, CartState, Tier, Step, datetime], tuple[dict, list[NewEvent]]] | (
        None
    ) = None


HOOKS = Hooks()
