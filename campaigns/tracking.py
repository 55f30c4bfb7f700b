"""What the links in campaign emails do: clicks, opens, unsubscribe and "don't remind me".

Each is a service taking a step id (from a signed token, campaigns/links.py) and ``now`` from the
view, and leaves a ``campaign.*`` event on the step's cart (``restore_target`` only reads). An
unknown step raises ``Step.DoesNotExist``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from django.db import transaction

from campaigns import emails, events, rules
from campaigns.models import CampaignSettings, Coupon, Step, Suppression
from carts import identity
from carts.errors import EventIdConflict
from carts.models import CartState, EventKey
from carts.services import events_append
from carts.sources import Source


def _step(step_id: int) -> Step:
    return Step.objects.select_related("store", "tier").get(pk=step_id)


def step_store_name(*, step_id: int) -> str:
    """The name of the store whose email carried the link (for the link pages)."""
    return Step.objects.filter(pk=step_id).values_list("store__name", flat=True).get()


def _restore_target(step: Step, now: datetime) -> str:
    store = step.store
    cart = CartState.objects.filter(store=store, token=step.cart).first()
    settings = CampaignSettings.objects.filter(store=store).first() or CampaignSettings(store=store)
    coupon = Coupon.objects.filter(
        store=store, cart=step.cart, redeemed_at__isnull=True, expires_at__gt=now
    ).first()
    return emails.cart_url(
        settings=settings,
        store=store,
        cart=cart,
        items=list(cart.items) if cart is not None else [],
        code=coupon.code if coupon is not None else "",
    )


def restore_target(*, step_id: int, now: datetime) -> str:
    """Where the step's restore link leads, recording nothing: the store's cart URL with the
    cart's items now and its coupon code while the code is usable."""
    return _restore_target(_step(step_id), now)


def link_click_record(*, step_id: int, now: datetime) -> str:
    """Append ``campaign.link_clicked``, at most one per step and minute (a replayed link stores
    nothing more within its minute), and return where the link leads (``restore_target``)."""
    step = _step(step_id)
    url = _restore_target(step, now)
    # The id is the step's and the minute's (of campaign time: a real minute at clock speed 1),
    # and the event keeps the time of the minute's first click.
    minute = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    _record_once(step, events.LINK_CLICKED, f"{step.store_id}:{step.pk}:{minute}", now)
    return url


def email_open_record(*, step_id: int, now: datetime) -> None:
    """Append ``campaign.email_opened`` for the step's first open; later opens store nothing."""
    step = _step(step_id)
    _record_once(step, events.EMAIL_OPENED, f"{step.store_id}:{step.pk}", now)


def _record_once(step: Step, event_type: str, key: str, now: datetime) -> None:
    """Append the step's ``event_type`` event whose id derives from ``key``, unless one is
    stored: the first one (its time) is kept, later ones store nothing."""
    event = events.campaign_event(
        cart=step.cart, type=event_type, data=events.step_data(step), now=now, key=key
    )
    if EventKey.objects.filter(store_id=step.store_id, event_id=event.event_id).exists():
        return
    with contextlib.suppress(EventIdConflict):  # a concurrent one was first: its time is kept
        events_append(store_id=step.store_id, events=[event], source=Source.system("campaigns"))


def _shopper_keys(step: Step) -> list[str]:
    """The step's shopper key, and the cart's other one: a cart with a shopper id and an email
    is ``id:...`` in its steps, while the same address on a guest cart is ``email:...``. The
    request is about the person, so both are suppressed."""
    keys = [step.shopper] if step.shopper else []
    row = (
        CartState.objects.filter(store_id=step.store_id, token=step.cart)
        .values("shopper_id", "email")
        .first()
    )
    if row is not None:
        digest = identity.email_digest(row["email"]) if row["email"] else None
        for key in (
            identity.shopper_key(shopper_id=row["shopper_id"], email_sha256=None),
            identity.shopper_key(shopper_id=None, email_sha256=digest),
        ):
            if key and key not in keys:
                keys.append(key)
    return keys


def shopper_suppress(
    *,
    step_id: int,
    kind: str,
    event_type: str,
    reason: str,
    channels: Collection[str] | None,
    now: datetime,
    data: dict[str, Any] | None = None,
    key: str | None = None,
) -> bool:
    """Suppress the step's shopper (both keys), skip their open steps on ``channels`` (None:
    all) and record ``event_type`` (with ``data`` added; ``key``: campaigns.events.campaign_event)
    and the skips. False, and nothing stored, when the shopper was suppressed so already."""
    step = _step(step_id)
    keys = _shopper_keys(step)
    created = [
        key
        for key in sorted(keys)  # one lock order for concurrent requests
        if Suppression.objects.get_or_create(
            store_id=step.store_id,
            shopper=key,
            kind=kind,
            defaults={"cart": step.cart, "created_at": now},
        )[1]
    ]
    if not created:
        return False
    open_steps = Step.objects.filter(store_id=step.store_id, shopper__in=keys, status__in=Step.OPEN)
    if channels is not None:
        open_steps = open_steps.filter(channel__in=channels)
    # The append service's lock order: the carts (by token), then their steps. Workers hold no
    # step locks while they send (leases, docs/campaigns.md): a step being sent is not open, and
    # its last check before the message leaves reads this suppression once it commits. A step of
    # a cart enrolled after this read is left to the runner's own check of the suppression.
    tokens = sorted({step.cart, *open_steps.values_list("cart", flat=True)})
    list(
        CartState.objects.select_for_update()
        .filter(store_id=step.store_id, token__in=tokens)
        .order_by("token")
        .values_list("pk", flat=True)
    )
    skipped = list(
        open_steps.filter(cart__in=tokens)
        .select_for_update(of=("self",))
        .select_related("tier")
        .order_by("pk")
    )
    Step.objects.filter(pk__in=[s.pk for s in skipped]).update(
        status=Step.Status.SKIPPED, reason=reason, finished_at=now
    )
    asked = events.campaign_event(
        cart=step.cart,
        type=event_type,
        data={**events.step_data(step), "shopper": keys[0], "shoppers": created, **(data or {})},
        now=now,
        key=key,
    )
    outcomes = [
        events.campaign_event(
            cart=s.cart,
            type=events.STEP_SKIPPED,
            data={**events.step_data(s), "reason": reason},
            now=now,
        )
        for s in skipped
    ]
    events_append(
        store_id=step.store_id, events=[asked, *outcomes], source=Source.system("campaigns")
    )
    return True


@transaction.atomic
def shopper_unsubscribe(*, step_id: int, now: datetime) -> bool:
    """Suppress emails to the step's shopper in every campaign of the store, and skip their open
    email and discount steps, with the ``campaign.unsubscribed`` event, in one transaction.
    Idempotent: False when the shopper was already unsubscribed (nothing stored)."""
    return shopper_suppress(
        step_id=step_id,
        kind=Suppression.Kind.UNSUBSCRIBED,
        event_type=events.UNSUBSCRIBED,
        reason=rules.UNSUBSCRIBED,
        channels=rules.EMAIL_CHANNELS,
        now=now,
    )


@transaction.atomic
def reminders_decline(*, step_id: int, now: datetime) -> bool:
    """No more recovery messages of any kind ("don't remind me") for the step's shopper in the
    store: their open steps on every channel are skipped, with ``campaign.reminders_declined``,
    in one transaction. Idempotent: False when already declined (nothing stored)."""
    return shopper_suppress(
        step_id=step_id,
        kind=Suppression.Kind.DONT_REMIND,
        event_type=events.REMINDERS_DECLINED,
        reason=rules.DONT_REMIND,
        channels=None,
        now=now,
    )
