"""The channels a step sends through: email, discount (a code, by email) and the on-site nudge.

A ``session`` lives for one batch of steps, so the batch shares one SMTP connection. ``send``
never raises for a delivery problem: it reports an error (retried with backoff by the runner) or
a reason to skip.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.mail import get_connection

from campaigns.models import CampaignSettings, Step
from carts.models import CartState, Store
from carts.services import NewEvent

_TRANSIENT = (smtplib.SMTPException, OSError, socket.timeout)


@dataclass(slots=True)
class Sent:
    events: list[NewEvent] = field(default_factory=list)
    message_id: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # added to the campaign.step_sent event
    push: dict | None = None  # an on-site offer to push after commit
    error: str | None = None  # transient failure: retry
    skipped: str | None = None  # nothing to send after all (e.g. no discount chosen)


class Session:
    def __init__(self) -> None:
        self._mail: Any = None

    def _connection(self) -> Any:
        if self._mail is None:
            self._mail = get_connection(fail_silently=False)
            self._mail.open()
        return self._mail

    def close(self) -> None:
        if self._mail is not None:
            with contextlib.suppress(*_TRANSIENT):
                self._mail.close()
            self._mail = None

    def send(
        self,
        *,
        store: Store,
        settings: CampaignSettings,
        step: Step,
        cart: CartState,
        now: datetime,
    ) -> Sent:
        if step.channel == "onsite":
            return self._onsite(store=store, step=step, cart=cart, now=now)
        out = Sent()
        coupon = None
        if step.channel == "discount":
            from campaigns import coupons
            from campaigns.extensions import HOOKS

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
            out.data["coupon"] = coupon.code
        from campaigns import emails

        message = emails.step_email(
            step=step,
            tier=step.tier,
            settings=settings,
            store=store,
            cart=cart,
            coupon=coupon,
            now=now,
        )
        try:
            self._connection().send_messages([message])
        except _TRANSIENT as exc:
            self.close()  # a fresh connection for the next step
            # A discount's code stays issued to the cart (one per cart): the retry mails it again.
            out.error = f"{type(exc).__name__}: {exc}"
            return out
        out.message_id = str(message.extra_headers.get("Message-ID", ""))
        return out

    def _onsite(self, *, store: Store, step: Step, cart: CartState, now: datetime) -> Sent:
        from campaigns.extensions import HOOKS

        if HOOKS.onsite_offer is None:
            return Sent(skipped="no_onsite_channel")
        offer, recorded = HOOKS.onsite_offer(store.pk, cart, step.tier, step, now)
        return Sent(events=recorded, push=offer, message_id=str(offer.get("id", "")))


@contextlib.contextmanager
def session() -> Iterator[Session]:
    s = Session()
    try:
        yield s
    finally:
        s.close()
