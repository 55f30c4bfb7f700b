"""The channels a step sends through: email, discount (a code, by email) and the on-site nudge.

A ``session`` lives for one batch of steps, so the batch shares one SMTP connection. Sending is
two calls: ``prepare`` (a discount's code, the rendered message, the on-site offer: database work,
run by the caller in a short transaction) and ``deliver`` (the network, run outside any
transaction, after the caller's last check that the order still wins; docs/campaigns.md,
"Leases"). ``deliver`` never raises for a delivery problem: it reports an error (retried with
backoff by the runner).

Many messages at once: ``step_render`` each, hand their ``Prepared.outgoing`` to
``campaigns.delivery.deliver`` (concurrent connections, bounded per store), and turn each
result into what the step records with ``sent_from``.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.mail import EmailMessage, get_connection

from campaigns import coupons, delivery, emails
from campaigns.extensions import HOOKS
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
    message: Any = None  # prepared, not yet handed to the transport (``Session.deliver``)


@dataclass(slots=True)
class Prepared:
    """A step's message rendered and not sent yet (``message``), or what stands in for it: an
    on-site offer to push after commit, or a reason to skip."""

    events: list[NewEvent] = field(default_factory=list)
    message: EmailMessage | None = None  # email and discount steps: to hand to delivery.deliver
    message_id: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # added to the campaign.step_sent event
    push: dict | None = None  # on-site: the offer, pushed after commit
    skipped: str | None = None  # nothing to send after all (e.g. no discount chosen)

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
        return Prepared(events=recorded, push=offer, message_id=str(offer.get("id", "")))
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


def sent_from(prepared: Prepared, delivered: delivery.Delivered | None) -> Sent:
    """What a step's run records: ``prepared`` and how its message went (None: nothing to
    deliver, an on-site offer or a skip). A refused or unsent message is an error to retry."""
    out = Sent(
        events=list(prepared.events),
        message_id=prepared.message_id,
        data=dict(prepared.data),
        push=prepared.push,
        skipped=prepared.skipped,
    )
    if delivered is not None and delivered.outcome is not delivery.Outcome.SENT:
        # A discount's code stays issued to the cart (one per cart): the retry mails it again.
        out.error = delivered.error or str(delivered.outcome)
    return out


class Session:
    """Render and send one step at a time on one connection (the batch's)."""

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

    def prepare(
        self,
        *,
        store: Store,
        settings: CampaignSettings,
        step: Step,
        cart: CartState,
        now: datetime,
    ) -> Sent:
        """``step_render`` as a ``Sent`` whose ``message`` (if any) is not sent yet."""
        prepared = step_render(store=store, settings=settings, step=step, cart=cart, now=now)
        out = sent_from(prepared, None)
        if prepared.skipped is None:
            out.message = prepared.message
        return out

    def deliver(self, sent: Sent) -> None:
        """Send ``sent.message`` on the session's connection; a failure sets ``sent.error``."""
        if sent.message is None:
            return
        try:
            self._connection().send_messages([sent.message])
        except _TRANSIENT as exc:
            self.close()  # a fresh connection for the next step
            # A discount's code stays issued to the cart (one per cart): the retry mails it again.
            sent.error = f"{type(exc).__name__}: {exc}"

    def send(
        self,
        *,
        store: Store,
        settings: CampaignSettings,
        step: Step,
        cart: CartState,
        now: datetime,
    ) -> Sent:
        sent = self.prepare(store=store, settings=settings, step=step, cart=cart, now=now)
        self.deliver(sent)
        return sent


@contextlib.contextmanager
def session() -> Iterator[Session]:
    s = Session()
    try:
        yield s
    finally:
        s.close()
