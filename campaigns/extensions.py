"""The extension points of campaigns, in one place.

``recovery`` and ``integrations`` (which may import campaigns, never the other way) fill them in
from their ``AppConfig.ready()`` (recovery/campaign_hooks.py, integrations/wiring.py); campaigns
calls them where they say. Each is None until registered, and campaigns works without them (no
price sensitivity, no on-site nudge, codes redeemed through our API, restore links to our page).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from campaigns.models import Coupon, Step, Tier
from carts.models import CartState
from carts.services import NewEvent


@dataclass(frozen=True, slots=True)
class CodeState:
    """Whether a code may be shown or mailed now: made where the shop redeems it (its platform),
    or the store has no platform. ``reason`` says why not (``platform_pending``,
    ``platform_refused``); ``transient``: worth trying again later."""

    usable: bool
    reason: str = ""
    transient: bool = True
    error: str = ""
    # When to try again (transient only): a step waiting on the platform is deferred to it, and
    # the code's own attempts (not the step's) bound how long it waits.
    retry_at: datetime | None = None


@dataclass(slots=True)
class Hooks:
    # When a discount is sized (campaigns.senders): the council's price specialist for a cart,
    # 0..1 (None: unknown).
    price_sensitivity: Callable[[int, CartState, datetime], float | None] | None = None
    # When an on-site step runs (campaigns.senders): (offer for the browser, events recording it).
    onsite_offer: Callable[[int, CartState, Tier, Step, datetime], tuple[dict, list[NewEvent]]] | (
        None
    ) = None
    # Before a code is mailed (campaigns.steps, outside any transaction: it may talk to the
    # network): make it where the shop redeems it and say whether it may be sent.
    code_publish: Callable[[Coupon, datetime], CodeState] | None = None
    # Before a code is shown on-site (in the offer's transaction: no network): whether it may be
    # shown now; one not made on the platform yet is queued to be made (after commit).
    code_ready: Callable[[Coupon], CodeState] | None = None
    # Where a restore link takes the shopper (store id, cart, code or None): the platform's own
    # cart or checkout, with the code applied where it allows; None: our restore page.
    restore_target: Callable[[int, str, str | None], str | None] | None = None


HOOKS = Hooks()
