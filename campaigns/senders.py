"""The channels a step sends through: email, discount (a code, by email) and the on-site nudge.

Rendering is apart from sending: ``step_render`` makes everything a step sends (a discount's
code, the rendered message, the on-site offer) without touching the network; the step runner
(campaigns/steps.py) hands the messages of a batch to ``campaigns.delivery.deliver``, which sends
them concurrently outside any transaction, after its last check that the order still wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.mail import EmailMessage

from campaigns import coupons, delivery, emails
from campaigns.extensions import HOOKS
from campaigns.models import CampaignSettings, Coupon, Step
from carts.models import CartState, Store
from carts.services import NewEvent


@dataclass(slots=True)
class Prepared:
    """A step's message rendered and not sent yet (``message``), or what stands in for it: an
    on-site offer (its decision in ``events``, pushed from the log once recorded), or a reason
    to skip."""

    events: list[NewEvent] = field(default_factory=list)
    message: EmailMessage | None = None  # email and discount steps: to hand to delivery.deliver
    message_id: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # added to the campaign.step_sent event
    skipped: str | None = None  # nothing to send after all (e.g. no discount chosen)
    # The code the message carries: made on the store's platform before the message leaves
    # (HOOKS.code_publish, called by the step runner outside any transaction).
    coupon: Coupon | None = None

    def outgoing(self, step: Step) -> delivery.Outgoing:
        assert self.message is not None
        return delivery.Outgoing(key=step.pk, store_id=step.store_id, message=self.message)


def step_render(
    *, store: Store, settings: CampaignSettings, step: Step, cart: CartState, now: datetime
) -> Prepared:
    """Everything a step sends, made and not sent: a discount's code is issued here (its
    ``campaign.coupon_issued`` event is in ``events``), the email rendered, the on-site offer
    decided. Talks to no network; a discount writes its Coupon row."""
    if step.channel == "onsite":
        if HOOKS.onsite_offer is None:
            return Prepared(skipped="no_onsite_channel")
        offer, recorded = HOOKS.onsite_offer(store.pk, cart, step.tier, step, now)
        return Prepared(events=recorded, message_id=str(offer.get("id", "")))
    out = Prepared()
    coupon = None
    if step.channel == "discount":
        sensitivity = (
            HOOKS.price_sensitivity(store.pk, cart, now) if HOOKS.price_sensitivity else None
        )
        issued = coupons.coupon_issue(
            store_id=store.pk,
            cart=cart.token,
            shopper=step.shopper,
            step_id=step.pk,
            tier=step.tier,
            cart_value=cart.value,
            currency=cart.currency,
            score=cart.score,
            price_sensitivity=sensitivity,
            gross_margin_percent=settings.gross_margin_percent,
            now=now,
        )
        out.events.append(issued.event)
        if issued.coupon is None:
            out.skipped = "no_discount"
            return out
        coupon = issued.coupon
        out.coupon = coupon
        out.data["coupon"] = coupon.code
    out.message = emails.step_email(
        step=step,
        tier=step.tier,
        settings=settings,
        store=store,
        cart=cart,
        coupon=coupon,
        now=now,
    )
    out.message_id = str(out.message.extra_headers.get("Message-ID", ""))
    return out
