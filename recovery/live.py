"""The live shopper channel (docs/websocket.md): sessions opened with the publishable key,
events from the browser appended through the one append service, the exit-intent offer decided
in the same transaction, offer reactions, pending offers and pushes from other processes."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import ipaddress
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils.crypto import salted_hmac
from rest_framework.exceptions import ValidationError

from campaigns import coupons
from campaigns.extensions import HOOKS
from campaigns.models import Coupon, Tier
from campaigns.selectors import OnsiteOffer, onsite_offer_for_store, reminders_declined
from carts import event_types, grants, redis_client, selectors
from carts.apis import events_in, occurred_window
from carts.errors import EventIdConflict
from carts.models import CartEvent, Store, StoreKey
from carts.origins import origin_allowed, origin_normalise
from carts.services import Appended, NewEvent, Reacting, events_append
from carts.sources import Source, browser_event_id
from recovery import cart_tokens, features, offers, tickets
from recovery.serving import inner_accumulator

OFFER_DECIDED = "recovery.offer_decided"
# Browser message type -> the event appended for it. An ack (the frame arrived) is a delivery
# receipt, not a fact about the shopper: it is kept in Redis, off the log, which halves the
# appends of the exit-intent path (bench/exit_intent.py).
OFFER_REACTIONS = {
    "offer.shown": "recovery.offer_shown",
    "offer.accepted": "recovery.offer_accepted",
    "offer.dismissed": "recovery.offer_dismissed",
}
ACK = "ack"
SYSTEM_TYPES = (OFFER_DECIDED, *OFFER_REACTIONS.values())
_ACKED_KEY = "recovery:acked:{store}:{cart}"
_ACKED_TTL_SECONDS = 7 * 86400  # longer than any offer lives
# At most this many acked offers are kept per cart (security review 2, finding 9): past it an ack
# is refused (AcksFull), so a socket cannot grow the Redis that carries Celery and the channels.
ACKED_MAX = 100
# Add the offer id unless the set is full (a member already there is fine); renew the TTL.
# Atomic, so parallel sockets of one cart cannot overshoot. 1 added or known, 0 full.
_ACK_SCRIPT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
  redis.call('SADD', KEYS[1], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
# The cross-cart cooldown of offers with a code (security review 2, finding 5; issue 13): one key
# per shopper, per device (recovery.tickets.device_read) and per client address, holding until
# when (ms since the epoch, from the caller's ``now``) it is held, set when a cart is given a new
# code; Redis forgets it after the cooldown. Atomic: of parallel carts of one shopper, device or
# address, one gets the code. Returns 0: claimed; i: KEYS[i] is held. The key's last part is an
# HMAC keyed by the SECRET_KEY (_cooldown_digest), not a plain hash: an IPv4 address or an email
# cannot be found from it by trying them all.
_COOLDOWN_KEY = "recovery:cooldown:{store}:{kind}:{digest}"
_COOLDOWN_SALT = "recovery.cooldown"
_COOLDOWN_SCRIPT = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > now then return i end
end
local held = string.format('%d', now + tonumber(ARGV[2]))
for _, key in ipairs(KEYS) do redis.call('SET', key, held, 'PX', ARGV[2]) end
return 0
"""
log = logging.getLogger(__name__)
_NAMESPACE = uuid.UUID("0b4c3f5e-2d7a-4b7e-9f0e-6c1d8a2e5b39")


def event_types_register() -> None:
    for name in SYSTEM_TYPES:
        event_types.register_system_type(event_types.EventType(name, 1, None))


class OriginNotAllowed(Exception):
    pass


class UnknownOffer(Exception):
    pass


class AcksFull(Exception):
    """The cart already has ACKED_MAX acked offers: the ack is not kept."""


class CartNotAllowed(Exception):
    """The publishable key may not open this cart: not minted by the browser for this store,
    and no valid grant (docs/websocket.md)."""


class CrossStoreTicket(tickets.TicketError):
    code = 4406


# Sessions -------------------------------------------------------------------------------------


def store_for_publishable_key(key: Any) -> Store | None:
    if not isinstance(key, str) or not key.startswith("pk_"):
        return None
    return selectors.store_for_key(key=key, kind=StoreKey.Kind.PUBLISHABLE)


def origin_known(origin: str | None) -> bool:
    """Whether any store allows this origin (the websocket handshake's check)."""
    if not origin:
        return False
    try:
        normal = origin_normalise(origin)
    except ValueError:
        return False
    return Store.objects.filter(allowed_origins__contains=[normal]).exists()


@dataclass(frozen=True, slots=True)
class SessionTicket:
    ticket: str
    cart: str
    expires_at: datetime
    expires_in: int
    device: str  # the device token the browser keeps (recovery.tickets.device_token_issue)


def origin_check(*, store: Store, origin: str | None) -> None:
    """Browser-facing calls come only from the store's own storefront origins."""
    if not origin_allowed(origin, store.allowed_origins):
        raise OriginNotAllowed(f"Origin {origin!r} is not allowed for this store.")


def cart_allowed(*, store: Store, cart: str, grant: str | None, now: datetime) -> bool:
    """Whether the publishable key may open this cart: a token the browser minted for this store,
    or a cart the shop's server granted (a valid, unexpired grant for this store and cart)."""
    return cart_tokens.cart_token_minted(store_id=store.pk, token=cart) or (
        grant is not None
        and grants.browser_grant_valid(store=store, cart=cart, grant=grant, now=now)
    )


def shopper_offers_pending(
    *, store: Store, cart: str, grant: str | None, origin: str | None, now: datetime
) -> list[dict]:
    """pending_offers, for the storefront (its origin checked like a session's, and its right
    to the cart: CartNotAllowed)."""
    origin_check(store=store, origin=origin)
    if not cart_allowed(store=store, cart=cart, grant=grant, now=now):
        raise CartNotAllowed(cart)
    return pending_offers(store_id=store.pk, cart=cart, now=now)


def shopper_session_open(
    *,
    store: Store,
    cart: str | None,
    grant: str | None,
    origin: str | None,
    now: datetime,
    device: str | None = None,
) -> SessionTicket:
    """A ticket for one websocket of this cart; without a cart, a newly minted token. A given
    cart must be one the browser minted for this store or one granted to it (else
    CartNotAllowed). A grant is never extended here: it lasts as long as the shop's server said
    (a session does not renew it, so a leaked grant dies at its expiry).

    ``device`` is the device token an earlier session gave the browser: its id goes into the
    ticket (a key of the cooldown of offers with a code). Without one, or with one that is not
    this store's genuine token, a new device id is made; either way the answer carries the
    token to keep."""
    origin_check(store=store, origin=origin)
    if cart is None:
        token = cart_tokens.cart_token_mint(store_id=store.pk)
    elif cart_allowed(store=store, cart=cart, grant=grant, now=now):
        token = cart
    else:
        raise CartNotAllowed(cart)
    device_id = tickets.device_read(store_id=store.pk, token=device) or tickets.device_new()
    ttl = tickets.TTL_SECONDS
    return SessionTicket(
        tickets.ticket_issue(store_id=store.pk, cart=token, device=device_id),
        token,
        now + timedelta(seconds=ttl),
        ttl,
        tickets.device_token_issue(store_id=store.pk, device=device_id),
    )


@dataclass(frozen=True, slots=True)
class Session:
    store_id: int
    cart: str
    session_id: str
    device: str | None = None  # the ticket's device id


def session_start(*, ticket: Any, origin: str | None, now: datetime) -> tuple[Session, list[dict]]:
    """Check a hello's ticket (raises tickets.TicketError with its close code) and spend it;
    the session and the cart's pending offers."""
    claims = tickets.ticket_read(ticket)
    store = Store.objects.filter(pk=claims.store_id).only("pk", "allowed_origins").first()
    if store is None:
        raise tickets.TicketInvalid("The ticket names no store.")
    if not origin_allowed(origin, store.allowed_origins):
        raise CrossStoreTicket("The ticket belongs to a store that does not allow this origin.")
    tickets.ticket_use(claims)
    session = Session(store.pk, claims.cart, secrets.token_urlsafe(9), claims.device)
    return session, pending_offers(store_id=store.pk, cart=claims.cart, now=now)


# The on-site tier, cached per process like the scoring model (recovery/serving.py) ------------

_TIERS: dict[int, tuple[OnsiteOffer | None, float]] = {}


def onsite_tier(store_id: int) -> OnsiteOffer | None:
    now = time.monotonic()
    entry = _TIERS.get(store_id)
    if entry is not None and now - entry[1] < settings.RECOVERY_CAMPAIGN_REFRESH_SECONDS:
        return entry[0]
    tier = onsite_offer_for_store(store_id=store_id)
    _TIERS[store_id] = (tier, now)
    return tier


def onsite_tiers_forget() -> None:
    _TIERS.clear()


# Events from the browser ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventOutcome:
    appended: Appended
    decision: offers.Decision | None


def _network(ip: str) -> str:
    """The client address as the cooldown knows it: IPv6 by its /64 (one subscriber's prefix:
    its addresses are free to rotate), IPv4 as is; anything else verbatim."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@functools.cache
def _cooldown_script() -> Any:
    return redis_client.client().register_script(_COOLDOWN_SCRIPT)


def _cooldown_digest(kind: str, key: str) -> str:
    """The cooldown key's last part: an HMAC (keyed by a secret derived from the SECRET_KEY) of
    the kind and the shopper, device or address, so Redis holds none of them in clear and a
    plain hash of every IPv4 address cannot find one."""
    return salted_hmac(_COOLDOWN_SALT, f"{kind}:{key}", algorithm="sha256").hexdigest()[:32]


def _cooldown_claim(
    *,
    store_key: str,
    shopper: str | None,
    client_ip: str | None,
    wait: timedelta,
    now: datetime,
    device: str | None = None,
) -> str | None:
    """Claim the cooldown of the shopper, the device and the client address for a new code;
    None when claimed, else the reason there is no code (``cooldown_shopper``,
    ``cooldown_device``, ``cooldown_ip``, or ``cooldown_unavailable`` when Redis cannot say: no
    code rather than unlimited codes).

    The claim stays if the caller's transaction rolls back (that shopper then waits a cooldown
    without a code): on the safe side."""
    kinds: list[str] = []
    keys: list[str] = []
    if shopper:
        kinds.append("shopper")
        keys.append(shopper)
    if device:
        kinds.append("device")
        keys.append(device)
    if client_ip and client_ip != "unknown":
        kinds.append("ip")
        keys.append(_network(client_ip))
    if not keys:
        return None
    redis_keys = [
        _COOLDOWN_KEY.format(store=store_key, kind=kind, digest=_cooldown_digest(kind, key))
        for kind, key in zip(kinds, keys, strict=True)
    ]
    try:
        held = int(
            _cooldown_script()(
                keys=redis_keys,
                args=[int(now.timestamp() * 1000), int(wait.total_seconds() * 1000)],
            )
        )
    except Exception:
        log.warning("offer cooldown could not be read; offer made without a code", exc_info=True)
        return "cooldown_unavailable"
    return None if held == 0 else f"cooldown_{kinds[held - 1]}"


def _coded(decision: offers.Decision, coupon: Coupon, cart_value: int) -> offers.Decision:
    assert decision.offer is not None
    offer = offers.offer_coded(
        decision.offer,
        code=coupon.code,
        kind=coupon.kind,
        amount=coupon.amount,
        cap=coupon.cap,
        currency=coupon.currency,
        min_cart_value=coupon.min_cart_value,
        code_expires_at=coupon.expires_at,
        cart_value=cart_value,
    )
    return dataclasses.replace(decision, offer=offer)


def _uncoded(decision: offers.Decision, reason: str) -> offers.Decision:
    assert decision.offer is not None
    return dataclasses.replace(decision, reason=reason, offer=offers.offer_uncoded(decision.offer))


def offer_code_issue(
    *,
    store_id: int,
    cart: str,
    state: Any,
    decision: offers.Decision,
    tier: OnsiteOffer,
    shopper: str | None,
    score: float | None,
    client_ip: str | None,
    now: datetime,
    step_id: int | None = None,
    device: str | None = None,
) -> tuple[offers.Decision, NewEvent | None]:
    """The code of an on-site offer, as a campaigns Coupon issued in the decision's
    transaction (under the cart's lock), and its campaign.coupon_issued event to append with
    the decision. A cart that has a code gets it again (whoever made it), with its own terms.
    A new code needs the store's budget and, for an exit intent (no ``step_id``), the shopper's,
    the device's and the address's cooldown (a campaign's scheduled nudge is bounded by its own
    schedule: one step per tier and cart); else the offer goes without a code and the decision's
    reason says why."""
    assert tier.code_terms is not None and tier.budget is not None
    existing = coupons.coupon_for_cart(store_id=store_id, cart=cart)
    if existing is not None:
        unusable = coupons.coupon_usable(existing, now=now)
        if unusable is not None:
            return _uncoded(decision, unusable), None
        unready = _code_unready(existing)
        if unready is not None:
            return _uncoded(decision, unready), None
        return _coded(decision, existing, state.value), None
    if step_id is None:
        held = _cooldown_claim(
            store_key=tier.store_key,
            shopper=shopper,
            client_ip=client_ip,
            wait=offers.cooldown(tier),
            now=now,
            device=device,
        )
        if held is not None:
            return _uncoded(decision, held), None
    issued = coupons.coupon_issue(
        store_id=store_id,
        cart=cart,
        shopper=shopper or "",
        step_id=step_id,
        tier=tier.code_terms,
        cart_value=state.value,
        currency=state.currency,
        score=score,
        price_sensitivity=None,  # the council's explanation is too slow for this path
        gross_margin_percent=tier.gross_margin_percent,
        now=now,
        channel=Tier.Channel.ONSITE,
        budget=tier.budget,
    )
    if issued.coupon is None:
        last = issued.choice.reasons[-1].get("rule") if issued.choice.reasons else None
        budget = last in (coupons.BUDGET_CODES, coupons.BUDGET_VALUE)
        return _uncoded(decision, str(last) if budget else "no_discount"), issued.event
    unready = _code_unready(issued.coupon)
    if unready is not None:  # the cart keeps its code: a later offer shows it once made
        return _uncoded(decision, unready), issued.event
    return _coded(decision, issued.coupon, state.value), issued.event


def _code_unready(coupon: Coupon) -> str | None:
    """Why a code may not be shown yet (``platform_pending``: its store's platform has not
    confirmed it; ``platform_refused``), or None. No network: one not made yet is queued to be
    made after this transaction commits (campaigns.extensions.HOOKS.code_ready)."""
    if HOOKS.code_ready is None:
        return None
    ready = HOOKS.code_ready(coupon)
    return None if ready.usable else ready.reason


def shopper_event_append(
    *,
    store_id: int,
    cart: str,
    raw: Any,
    now: datetime,
    session: str,
    on_decided: Callable[[offers.Decision], None] | None = None,
    client_ip: str | None = None,
    device: str | None = None,
) -> EventOutcome:
    """Append one event sent over the websocket (the cart is the session's). On an exit intent,
    decide the offer in the same transaction and append the decision with it.

    ``on_decided`` is called with the decision as soon as it is made, under the cart's lock and
    before the commit (the websocket sends the offer then, while the decision is written; should
    the commit fail, it withdraws the offer). Raises rest_framework's ValidationError for an
    invalid event (field errors as in the HTTP API) and the append service's errors.

    The browser may send only what a browser knows (``event_types.BROWSER_TYPES``); its events are
    recorded with their session (``session``) as their source. ``client_ip`` (the socket's
    address, carts.ratelimits.client_ip) and ``device`` (the session ticket's device id) are keys
    of the cooldown of offers with a code."""
    body = {**raw, "cart": cart} if isinstance(raw, dict) else raw
    [sent] = events_in(
        body, types=event_types.BROWSER_TYPES, window=occurred_window(now=now, browser=True)
    )
    if sent.shopper and "id" in sent.shopper:
        raise ValidationError(
            {
                "shopper": {
                    "id": [
                        "A browser cannot name the shopper; the shop's server does "
                        "(POST /api/v1/events with the secret key)."
                    ]
                }
            }
        )
    # Stored under an id scoped to the cart (carts.sources.browser_event_id): a browser cannot
    # take an id the server or the system will use. Its answers name the id it sent.
    event = dataclasses.replace(sent, event_id=browser_event_id(cart, sent.event_id))
    decided: list[offers.Decision] = []
    react = None
    if event.type == "shopper.exit_intent":
        tier = onsite_tier(store_id)

        def react(reacting: Reacting) -> list[NewEvent]:
            out: list[NewEvent] = []
            for exit_event in reacting.appended:
                state = reacting.states[exit_event.cart]
                scored = reacting.scores[exit_event.cart]
                shopper = features.shopper_key(
                    inner_accumulator(reacting.accumulators[exit_event.cart])
                )
                decision = offers.decide(
                    cart=state,
                    score=scored.score if scored else None,
                    tier=tier,
                    last_offer=offers.last_offer_at(reacting.accumulators[exit_event.cart]),
                    shopper=shopper or exit_event.cart,
                    now=now,
                    offer_id=uuid.uuid5(_NAMESPACE, f"offer:{exit_event.event_id}").hex,
                    # A code is a campaigns Coupon, issued below (offer_code_issue).
                    code=None,
                    # Known shoppers only (one indexed lookup): "don't remind me" covers offers.
                    declined=tier is not None
                    and shopper is not None
                    and reminders_declined(store_id=store_id, shopper=shopper),
                )
                issued: NewEvent | None = None
                if (
                    decision.offer is not None
                    and tier is not None
                    and tier.code_terms is not None
                    and offers.carries_code(tier)
                ):
                    decision, issued = offer_code_issue(
                        store_id=store_id,
                        cart=exit_event.cart,
                        state=state,
                        decision=decision,
                        tier=tier,
                        shopper=shopper,
                        score=scored.score if scored else None,
                        client_ip=client_ip,
                        now=now,
                        device=device,
                    )
                if issued is not None:
                    out.append(issued)
                data = decision.as_event_data(
                    tier=tier,
                    score=scored.score if scored else None,
                    model_version=scored.model_version if scored else "",
                )
                data["exit_event"] = str(exit_event.event_id)
                decided.append(decision)
                if on_decided is not None:
                    on_decided(decision)
                out.append(
                    NewEvent(
                        event_id=uuid.uuid5(_NAMESPACE, f"decided:{exit_event.event_id}"),
                        cart=exit_event.cart,
                        type=OFFER_DECIDED,
                        schema_version=1,
                        occurred_at=now,
                        data=data,
                    )
                )
            return out

    [appended] = events_append(
        store_id=store_id, events=[event], source=Source.browser(session), react=react
    )
    appended = dataclasses.replace(appended, event_id=sent.event_id)
    return EventOutcome(appended, decided[0] if decided else None)


def _cart_digest(cart: str) -> str:
    """A cart token as a short key part (group names and Redis keys allow [A-Za-z0-9._-])."""
    return hashlib.sha256(cart.encode()).hexdigest()[:32]


def _acked_key(store_id: int, cart: str) -> str:
    return _ACKED_KEY.format(store=store_id, cart=_cart_digest(cart))


@functools.cache
def _ack_script() -> Any:
    return redis_client.client().register_script(_ACK_SCRIPT)  # EVALSHA, loaded on first use


def offer_ack_record(*, store_id: int, cart: str, offer_id: Any, sent: Container[str]) -> None:
    """The browser received the offer frame: it is no longer pending (one Redis round trip).
    Only an offer this socket was sent (``sent``) can be acked (else UnknownOffer, and nothing is
    stored); a cart keeps at most ACKED_MAX acks (else AcksFull)."""
    if not isinstance(offer_id, str) or not offer_id or len(offer_id) > 64:
        raise UnknownOffer("'offer' must be the id of an offer made to this cart.")
    if offer_id not in sent:
        raise UnknownOffer(f"No offer {offer_id!r} was sent on this socket.")
    stored = _ack_script()(
        keys=[_acked_key(store_id, cart)], args=[offer_id, ACKED_MAX, _ACKED_TTL_SECONDS]
    )
    if not stored:
        raise AcksFull(
            f"This cart has {ACKED_MAX} acknowledged offers, the most kept; answer the offer "
            "with offer.shown, offer.accepted or offer.dismissed instead."
        )


def offer_reaction_record(
    *, store_id: int, cart: str, offer_id: Any, message_type: str, now: datetime, session: str
) -> None:
    """Append the browser's shown / accepted / dismissed of one of this cart's offers."""
    if not isinstance(offer_id, str) or not offer_id or len(offer_id) > 64:
        raise UnknownOffer("'offer' must be the id of an offer made to this cart.")
    made = CartEvent.objects.filter(
        store_id=store_id, cart=cart, type=OFFER_DECIDED, data__offer__id=offer_id
    ).exists()
    if not made:
        raise UnknownOffer(f"No offer {offer_id!r} was made to this cart.")
    event_type = OFFER_REACTIONS[message_type]
    event = NewEvent(
        event_id=uuid.uuid5(_NAMESPACE, f"{event_type}:{offer_id}"),
        cart=cart,
        type=event_type,
        schema_version=1,
        occurred_at=now,
        data={"offer_id": offer_id},
    )
    with contextlib.suppress(EventIdConflict):  # recorded before: the first one counts
        events_append(store_id=store_id, events=[event], source=Source.browser(session))


def pending_offers(*, store_id: int, cart: str, now: datetime) -> list[dict]:
    """Offers made to the cart that the browser has not acknowledged or answered, unexpired."""
    made: dict[str, dict] = {}
    acked = redis_client.client().smembers(_acked_key(store_id, cart))
    answered = {m.decode() if isinstance(m, bytes) else str(m) for m in acked}
    rows = (
        CartEvent.objects.filter(store_id=store_id, cart=cart, type__in=SYSTEM_TYPES)
        .order_by("version")
        .values_list("type", "data")
    )
    for event_type, data in rows:
        if event_type == OFFER_DECIDED:
            if data.get("decision") == offers.OFFER and data.get("offer"):
                made[data["offer"]["id"]] = data["offer"]
        else:
            answered.add(data.get("offer_id", ""))
    return [
        offer
        for offer_id, offer in made.items()
        if offer_id not in answered and datetime.fromisoformat(offer["expires_at"]) > now
    ]


# Pushes from other processes ------------------------------------------------------------------


def cart_group(store_id: int, cart: str) -> str:
    """The channel-layer group of a cart's sockets."""
    return f"recovery.cart.{store_id}.{_cart_digest(cart)}"


async def offer_push_async(*, store_id: int, cart: str, offer: dict) -> None:
    """Send an offer to the cart's open sockets from async code. At most once: the browser acks,
    and gets any unacked offer again on reconnect (pending_offers). Synchronous code (projectors)
    pushes through carts.channel_push (recovery/offer_push.py)."""
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(cart_group(store_id, cart), {"type": "offer.push", "offer": offer})
