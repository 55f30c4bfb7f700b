"""Inbound platform webhooks: the one pipeline every platform's deliveries go through.

verify (the adapter, outside any transaction: Saleor's may fetch its JWKS) -> read (the adapter:
facts) -> bounds (400, nothing stored) -> one transaction: the delivery recorded once per
platform delivery id, its facts mapped to our events and appended as the platform's
(carts.sources.Source.platform), the platform's refs bound to our cart, what the platform last
said of the cart kept (PlatformCart), the connection's last delivery time set.

Deliveries come late, twice and out of order: a redelivered id stores nothing new; a snapshot
older than (or as old as) the one recorded moves nothing; an order before its checkout binds the
checkout's refs to the order's cart, so the checkout lands on the converted cart; event ids are
deterministic, so a retry of a half-done delivery is idempotent. A store's deliveries of one
platform are serialised by a transaction-scoped advisory lock (never held across the network).
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction

from campaigns import coupons
from campaigns import errors as campaigns_errors
from carts import event_types, projections
from carts import selectors as carts_selectors
from carts.errors import CartsError, EventIdConflict, EventInvalid, EventRejected
from carts.models import CartState
from carts.services import NewEvent, events_append
from carts.sources import Source
from carts.validation import LOCALE_PATTERN, MAX_MONEY, PHONE_PATTERN
from integrations.facts import (
    Adapter,
    BadDelivery,
    CheckoutDeleted,
    CheckoutSnapshot,
    Contact,
    Delivery,
    Fact,
    Ignored,
    Line,
    OrderPlaced,
    OrderRefunded,
    lines_merged,
)
from integrations.models import Connection, InboundDelivery, PlatformCart, PlatformRef

logger = logging.getLogger("integrations.inbound")

Outcome = InboundDelivery.Outcome
DUPLICATE = "duplicate"

# uuid5 namespace of the events made from platform deliveries.
EVENT_IDS = uuid.UUID("8f0c2a4e-61b5-4d0b-9a53-2c7e5b1f0d93")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
_PHONE_RE = re.compile(PHONE_PATTERN)
_LOCALE_RE = re.compile(LOCALE_PATTERN)


def register() -> None:
    """Nothing to register: inbound deliveries are requests (integrations/apis.py)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of a delivery: ``outcome`` is an InboundDelivery.Outcome or "duplicate"."""

    outcome: str
    events: int
    delivery_id: str
    topic: str
    cart: str = ""
    reason: str = ""


@dataclass(slots=True)
class _Result:
    outcome: str
    events: int = 0
    cart: str = ""
    reason: str = ""


@dataclass(slots=True)
class _Context:
    store_id: int
    platform: str
    delivery_id: str
    now: datetime
    index: int = 0

    def event(
        self, cart: str, type_name: str, data: dict[str, Any], at: datetime, *, key: str = ""
    ) -> NewEvent:
        """A validated event with a deterministic id (the delivery and its place in it, or
        ``key``: e.g. one refund whatever delivery brings it)."""
        if not key:
            key = f"{self.delivery_id}:{self.index}"
            self.index += 1
        try:
            version, payload = event_types.validate(type_name, None, data)
        except EventInvalid as exc:
            errors = exc.detail.get("data", exc.detail)
            raise BadDelivery(
                400,
                f"The delivery's {type_name} cannot be recorded: {errors}",
                **{type_name: [str(errors)]},
            ) from None
        return NewEvent(
            event_id=uuid.uuid5(EVENT_IDS, f"{self.platform}:{key}"),
            cart=cart,
            type=type_name,
            schema_version=version,
            occurred_at=at,
            data=payload,
        )

    def occurred(self, platform_time: datetime | None) -> datetime:
        """The platform's time as the events' occurred_at: never after now, never before the
        server window (carts.apis.occurred_window). Data, never a timer."""
        if platform_time is None or platform_time > self.now:
            return self.now
        earliest = self.now - timedelta(days=settings.CARTS_SERVER_PAST_DAYS)
        return max(platform_time, earliest)

    @property
    def source(self) -> Source:
        return Source.platform(f"{self.platform}:{self.delivery_id}")


def delivery_receive(
    *,
    adapter: Adapter,
    connection: Connection,
    headers: dict[str, str],
    body: bytes,
    now: datetime,
) -> Receipt:
    """Verify, read and record one webhook delivery, once per delivery id. Raises BadDelivery
    (401 signature, 400 body or bounds: nothing stored). Header names are lower-cased."""
    adapter.verify(connection=connection, headers=headers, body=body)
    delivery = adapter.read(headers=headers, body=body, connection=connection)
    if not delivery.recorded:  # an unsigned hello: answered, nothing written
        reason = "; ".join(f.reason for f in delivery.facts if isinstance(f, Ignored))
        return Receipt(str(Outcome.IGNORED), 0, delivery.delivery_id, delivery.topic, "", reason)
    # One line per SKU, whatever the platform lists (facts.lines_merged).
    facts = tuple(
        replace(fact, lines=lines_merged(fact.lines))
        if isinstance(fact, CheckoutSnapshot | OrderPlaced)
        else fact
        for fact in delivery.facts
    )
    for fact in facts:
        _check_bounds(fact)
    store_id = connection.store_id
    platform = adapter.platform
    with transaction.atomic():
        _lock(store_id, platform)
        seen = InboundDelivery.objects.filter(
            store_id=store_id, platform=platform, delivery_id=delivery.delivery_id
        ).first()
        if seen is not None:
            Connection.objects.filter(pk=connection.pk).update(last_delivery_at=now)
            return Receipt(DUPLICATE, 0, delivery.delivery_id, seen.topic, seen.cart)
        ctx = _Context(store_id, platform, delivery.delivery_id, now)
        results = [_fact_record(ctx, fact) for fact in facts]
        result = _combined(results)
        InboundDelivery.objects.create(
            store_id=store_id,
            platform=platform,
            delivery_id=delivery.delivery_id,
            topic=delivery.topic[:64],
            received_at=now,
            outcome=result.outcome,
            reason=result.reason[:500],
            cart=result.cart[:128],
            events=result.events,
            body_sha256=hashlib.sha256(body).hexdigest(),
        )
        Connection.objects.filter(pk=connection.pk).update(last_delivery_at=now)
    if result.outcome == Outcome.REJECTED:
        logger.warning(
            "%s delivery %s (%s) for store %s rejected: %s",
            platform,
            delivery.delivery_id,
            delivery.topic,
            store_id,
            result.reason,
        )
    return Receipt(
        result.outcome,
        result.events,
        delivery.delivery_id,
        delivery.topic,
        result.cart,
        result.reason,
    )


def _lock(store_id: int, platform: str) -> None:
    key = hashlib.sha256(f"integrations.inbound:{store_id}:{platform}".encode()).digest()[:8]
    with db_connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(key, "big", signed=True)]
        )


_SEVERITY = [Outcome.REJECTED, Outcome.RECORDED, Outcome.STALE, Outcome.IGNORED]


def _combined(results: Sequence[_Result]) -> _Result:
    if not results:
        return _Result(Outcome.IGNORED, reason="The delivery says nothing we map.")
    first = min(results, key=lambda r: _SEVERITY.index(r.outcome))  # type: ignore[arg-type]
    return _Result(
        first.outcome,
        sum(r.events for r in results),
        next((r.cart for r in results if r.cart), ""),
        "; ".join(r.reason for r in results if r.reason),
    )


# Bounds: what carts' fold could not hold is refused before anything is stored ---------------------


def _check_bounds(fact: Fact) -> None:
    # An order's lines out of bounds are left out of the cart (_order), never the order itself.
    lines: tuple[Line, ...] = fact.lines if isinstance(fact, CheckoutSnapshot) else ()
    if len(lines) > projections.MAX_LINES:
        raise BadDelivery(
            400,
            f"The delivery has {len(lines)} lines; a cart holds at most {projections.MAX_LINES}.",
            line_items=[f"At most {projections.MAX_LINES} distinct lines."],
        )
    for line in lines:
        if not 0 < line.quantity <= projections.MAX_LINE_QUANTITY:
            raise BadDelivery(
                400,
                f"Line {line.sku!r} has quantity {line.quantity}.",
                line_items=[f"A line's quantity is 1 to {projections.MAX_LINE_QUANTITY}."],
            )
        if not 0 <= line.unit_price <= MAX_MONEY:
            raise BadDelivery(
                400,
                f"Line {line.sku!r} has unit price {line.unit_price}.",
                line_items=[f"A line's unit price is 0 to {MAX_MONEY} minor units."],
            )
    if isinstance(fact, CheckoutSnapshot):
        value = sum(line.quantity * line.unit_price for line in lines)
        if value > projections.MAX_CART_VALUE:
            raise BadDelivery(
                400,
                f"The cart's value would be {value} minor units.",
                line_items=[f"A cart's value is at most {projections.MAX_CART_VALUE} minor units."],
            )
    if isinstance(fact, OrderPlaced) and not 0 <= fact.total <= MAX_MONEY:
        raise BadDelivery(400, "The order total is out of bounds.", total=[f"0 to {MAX_MONEY}."])
    if isinstance(fact, OrderRefunded) and not 0 < fact.amount <= MAX_MONEY:
        raise BadDelivery(400, "The refund amount is out of bounds.", amount=[f"1 to {MAX_MONEY}."])


# Facts -> events ----------------------------------------------------------------------------------


def _fact_record(ctx: _Context, fact: Fact) -> _Result:
    """One fact, in a savepoint: a fact the fold refuses leaves nothing behind but its reason."""
    try:
        with transaction.atomic():
            return _fact_apply(ctx, fact)
    except EventRejected as exc:
        return _Result(Outcome.REJECTED, reason=exc.message)
    except EventIdConflict as exc:
        return _Result(Outcome.REJECTED, reason=exc.message)
    except _Refused as exc:
        return _Result(Outcome.REJECTED, cart=exc.cart, reason=exc.reason)


class _Refused(Exception):
    def __init__(self, reason: str, cart: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.cart = cart


def _fact_apply(ctx: _Context, fact: Fact) -> _Result:
    if isinstance(fact, Ignored):
        return _Result(Outcome.IGNORED, reason=fact.reason)
    if isinstance(fact, CheckoutSnapshot):
        return _snapshot(ctx, fact)
    if isinstance(fact, OrderPlaced):
        return _order(ctx, fact)
    if isinstance(fact, OrderRefunded):
        return _refund(ctx, fact)
    if isinstance(fact, CheckoutDeleted):
        return _deleted(ctx, fact)
    raise AssertionError(f"unknown fact {fact!r}")


def _append(ctx: _Context, events: list[NewEvent]) -> int:
    if not events:
        return 0
    try:
        appended = events_append(
            store_id=ctx.store_id, events=events, source=ctx.source, now=ctx.now
        )
    except (EventRejected, EventIdConflict):
        raise
    except CartsError as exc:  # a version conflict cannot happen (no expected versions)
        raise _Refused(exc.message) from exc
    return sum(1 for a in appended if not a.duplicate)


def cart_token(platform: str, ref: str) -> str:
    """Our token for a cart first named by ``ref`` ("cart:<token>"): readable when it fits
    carts' token pattern, else a hash of the ref."""
    kind, _, value = ref.partition(":")
    if kind == "ours" and _TOKEN_RE.match(value):
        return value  # our own cart token, carried through the platform (the snippet's cart)
    token = f"{platform}-{ref.replace(':', '-', 1)}"
    if _TOKEN_RE.match(token):
        return token
    kind = ref.split(":", 1)[0]
    return f"{platform}-{kind[:20]}-h{hashlib.sha256(ref.encode()).hexdigest()[:40]}"


# Which ref names a new cart: the platform's cart first, so that a cart is named the same
# whichever of its deliveries (checkout, order) arrives first.
# Our own token, carried in the platform's order (WooCommerce's `_cart_recovery_cart` meta), names
# the snippet's cart itself.
_NAMING_ORDER = ("ours", "cart", "checkout", "checkout-id")


def _naming_ref(refs: Sequence[str]) -> str:
    for kind in _NAMING_ORDER:
        for ref in refs:
            if ref.startswith(f"{kind}:"):
                return ref
    return refs[0]


def _bound(ctx: _Context, refs: Sequence[str]) -> dict[str, str]:
    return dict(
        PlatformRef.objects.filter(
            store_id=ctx.store_id, platform=ctx.platform, ref__in=list(refs)
        ).values_list("ref", "cart")
    )


def _bind(ctx: _Context, refs: Sequence[str]) -> str:
    """The cart the refs name: the first one bound gives it, else a new token; every ref of the
    fact is bound to it (a ref bound to another cart already stays there)."""
    bound = _bound(ctx, refs)
    cart = next((bound[r] for r in refs if r in bound), None) or cart_token(
        ctx.platform, _naming_ref(refs)
    )
    PlatformRef.objects.bulk_create(
        [
            PlatformRef(store_id=ctx.store_id, platform=ctx.platform, ref=r[:160], cart=cart)
            for r in refs
            if r not in bound
        ],
        ignore_conflicts=True,
    )
    return cart


def _platform_cart(ctx: _Context, cart: str) -> PlatformCart:
    row, _ = PlatformCart.objects.select_for_update().get_or_create(
        store_id=ctx.store_id, cart=cart, defaults={"platform": ctx.platform}
    )
    return row


def _contact_event(
    ctx: _Context, cart: str, contact: Contact | None, state: CartState | None, at: datetime
) -> NewEvent | None:
    """checkout.contact_captured when the platform gives an email the cart does not have yet, or
    another consent; None otherwise (or for an address that is not one)."""
    if contact is None or not contact.email:
        return None
    same_email = state is not None and state.email.lower() == contact.email.lower()
    same_consent = contact.accepts_marketing is None or (
        state is not None and (state.consent or {}).get("email") == contact.accepts_marketing
    )
    if same_email and same_consent:
        return None
    data: dict[str, Any] = {"email": contact.email}
    if contact.phone and _PHONE_RE.match(contact.phone):
        data["phone"] = contact.phone
    if contact.accepts_marketing is not None:
        data["consent"] = {"email": contact.accepts_marketing}
    if contact.locale and _LOCALE_RE.match(contact.locale) and len(contact.locale) <= 35:
        data["locale"] = contact.locale
    try:
        event_types.validate("checkout.contact_captured", None, data)
    except EventInvalid:
        return None  # an address the platform took and we cannot: the cart keeps none
    return ctx.event(cart, "checkout.contact_captured", data, at)


def _item_added(ctx: _Context, cart: str, line: Line, currency: str, at: datetime) -> NewEvent:
    data: dict[str, Any] = {
        "sku": line.sku,
        "name": line.name or line.sku,
        "quantity": line.quantity,
        "unit_price": line.unit_price,
        "currency": currency,
    }
    if line.url:
        data["url"] = line.url
    if line.image_url:
        data["image_url"] = line.image_url
    return ctx.event(cart, "cart.item_added", data, at)


def _snapshot(ctx: _Context, fact: CheckoutSnapshot) -> _Result:
    cart = _bind(ctx, fact.refs)
    recorded = _platform_cart(ctx, cart)
    if (
        recorded.updated_at is not None
        and fact.updated_at is not None
        and fact.updated_at <= recorded.updated_at
    ):
        return _Result(
            Outcome.STALE,
            cart=cart,
            reason=f"Updated at {fact.updated_at.isoformat()}, not after the recorded "
            f"{recorded.updated_at.isoformat()}.",
        )
    at = ctx.occurred(fact.updated_at)
    state = carts_selectors.cart_state_get(store_id=ctx.store_id, token=cart)
    events = _line_events(ctx, cart, recorded, fact.lines, fact.currency, at)
    if fact.checkout and (state is None or state.checkout_started_at is None):
        events.append(ctx.event(cart, "checkout.started", {}, at))
    # An order's contact is the last word: a checkout (delivered before or after it) does not
    # replace it, so the cart ends the same whatever the delivery order.
    if state is None or not state.order_id:
        contact = _contact_event(ctx, cart, fact.contact, state, at)
        if contact is not None:
            events.append(contact)
    count = _append(ctx, events)
    _recorded_set(ctx, recorded, fact.lines, fact.currency, fact.updated_at)
    if fact.restore_url:
        recorded.restore_url = fact.restore_url
    recorded.save()
    return _Result(Outcome.RECORDED, count, cart)


def _line_events(
    ctx: _Context,
    cart: str,
    recorded: PlatformCart,
    lines: Sequence[Line],
    currency: str,
    at: datetime,
) -> list[NewEvent]:
    """The item events that take the recorded lines to ``lines``."""
    before = {str(line["sku"]): line for line in recorded.lines or []}
    after = {line.sku: line for line in lines}
    events: list[NewEvent] = []
    for sku in before:
        if sku not in after:
            events.append(ctx.event(cart, "cart.item_removed", {"sku": sku}, at))
    for line in lines:
        old = before.get(line.sku)
        if old is None:
            events.append(_item_added(ctx, cart, line, currency, at))
        elif int(old["unit_price"]) != line.unit_price:
            # A new price: the line again at it (item_added would add to the old quantity).
            events.append(ctx.event(cart, "cart.item_removed", {"sku": line.sku}, at))
            events.append(_item_added(ctx, cart, line, currency, at))
        elif int(old["quantity"]) != line.quantity:
            events.append(
                ctx.event(
                    cart,
                    "cart.item_quantity_changed",
                    {"sku": line.sku, "quantity": line.quantity},
                    at,
                )
            )
    return events


def _recorded_set(
    ctx: _Context,
    recorded: PlatformCart,
    lines: Sequence[Line],
    currency: str,
    updated_at: datetime | None,
) -> None:
    recorded.platform = ctx.platform
    recorded.updated_at = updated_at or recorded.updated_at
    recorded.lines = [
        {"sku": x.sku, "name": x.name, "quantity": x.quantity, "unit_price": x.unit_price}
        for x in lines
    ]
    if currency:
        recorded.currency = currency


def _order(ctx: _Context, fact: OrderPlaced) -> _Result:
    cart = _bind(ctx, fact.refs)
    state = carts_selectors.cart_state_get(store_id=ctx.store_id, token=cart)
    if state is not None and state.order_id and state.order_id != fact.order_id:
        raise _Refused(
            f"Order {fact.order_id}: its cart {cart} was converted by order {state.order_id} "
            "already.",
            cart,
        )
    at = ctx.occurred(fact.placed_at)
    events: list[NewEvent] = []
    recorded = _platform_cart(ctx, cart)
    newer = (
        recorded.updated_at is None
        or fact.placed_at is None
        or fact.placed_at >= recorded.updated_at  # a tie goes to the order, either way round
    )
    # (A cart whose items came from elsewhere, the snippet or the shop's server, with no
    # snapshot of the platform's to compare with, keeps them.)
    ours = bool(recorded.lines) or state is None or not state.items
    lines_refused, lines_count = "", 0
    if fact.lines and newer and ours and (state is None or not state.order_id):
        # What was bought is the cart's last word: the order's lines, as a snapshot of the
        # platform's cart at the order's time. A cart first seen through its order gets them;
        # its checkout, arriving later and older, is stale and adds nothing twice. Whatever the
        # order of deliveries, the cart ends with the order's lines. In a savepoint of their
        # own: lines the cart cannot take (bounds, another currency) never lose the order.
        try:
            with transaction.atomic():
                lines_count = _append(
                    ctx, _line_events(ctx, cart, recorded, fact.lines, fact.currency, at)
                )
                _recorded_set(ctx, recorded, fact.lines, fact.currency, fact.placed_at)
                recorded.save()
        except (EventRejected, EventInvalid, _Refused) as exc:
            lines_refused = f"The order's lines were left out: {getattr(exc, 'message', exc)}"
            lines_count = 0
            recorded.refresh_from_db()
        state = carts_selectors.cart_state_get(store_id=ctx.store_id, token=cart)
    contact = _contact_event(ctx, cart, fact.contact, state, at)
    if contact is not None:
        events.append(contact)
    if state is None or state.order_id != fact.order_id:
        data: dict[str, Any] = {
            "order_id": fact.order_id,
            "total": fact.total,
            "currency": fact.currency,
        }
        if fact.discount_codes:
            data["coupon"] = fact.discount_codes[0]
        events.append(ctx.event(cart, "order.placed", data, at))
    count = lines_count + _append(ctx, events)
    value = state.value if state is not None and state.value else None
    # Redeemed as of the order's time (clamped to now): an order placed before its code
    # expired and delivered after counts.
    placed = ctx.occurred(fact.placed_at)
    reasons = [
        r
        for code in fact.discount_codes
        if (r := _redeem(ctx, code, fact.order_id, value, fact.currency, placed))
    ]
    if lines_refused:
        reasons.insert(0, lines_refused)
    return _Result(Outcome.RECORDED, count, cart, "; ".join(reasons))


def _redeem(
    ctx: _Context, code: str, order_id: str, value: int | None, currency: str, at: datetime
) -> str:
    """Record one of our codes as redeemed by the order (once: the same order again is a
    replay); "" or why not."""
    for cart_value in (value, None):
        try:
            coupons.coupon_redeem(
                store_id=ctx.store_id,
                code=code,
                order_id=order_id,
                cart_value=cart_value,
                currency=currency,
                now=at,
            )
            return ""
        except campaigns_errors.CouponNotFound:
            return ""  # the shop's own code, not one of ours
        except campaigns_errors.CouponNotApplicable as exc:
            if cart_value is None:
                return f"Code {code}: {exc}"
            # The platform took it; our idea of the cart's value may be partial.
            continue
        except campaigns_errors.CampaignsError as exc:
            return f"Code {code}: {exc}"
    return ""


def _refund(ctx: _Context, fact: OrderRefunded) -> _Result:
    bound = _bound(ctx, fact.refs)
    cart = next((bound[r] for r in fact.refs if r in bound), None)
    if cart is None:
        return _Result(Outcome.IGNORED, reason=f"Refund of order {fact.order_id}: unknown order.")
    if fact.refund_id:
        ref = f"refund:{fact.refund_id}"
        if _bound(ctx, [ref]):
            return _Result(
                Outcome.IGNORED, cart=cart, reason=f"Refund {fact.refund_id} recorded already."
            )
        PlatformRef.objects.create(
            store_id=ctx.store_id, platform=ctx.platform, ref=ref[:160], cart=cart
        )
    data: dict[str, Any] = {"order_id": fact.order_id, "amount": fact.amount}
    if fact.currency:
        data["currency"] = fact.currency
    key = f"refund:{fact.refund_id}" if fact.refund_id else ""
    event = ctx.event(cart, "order.refunded", data, ctx.occurred(fact.refunded_at), key=key)
    return _Result(Outcome.RECORDED, _append(ctx, [event]), cart)


def _deleted(ctx: _Context, fact: CheckoutDeleted) -> _Result:
    bound = _bound(ctx, fact.refs)
    cart = next((bound[r] for r in fact.refs if r in bound), None)
    if cart is None:
        return _Result(Outcome.IGNORED, reason="Deleted checkout: unknown to us.")
    recorded = _platform_cart(ctx, cart)
    recorded.deleted = True
    recorded.save(update_fields=["deleted"])
    return _Result(Outcome.RECORDED, 0, cart)


__all__ = ["DUPLICATE", "Delivery", "Receipt", "cart_token", "delivery_receive", "register"]
