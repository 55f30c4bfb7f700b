"""Shopper-session tickets: short-lived, single-use, signed, bound to a store and a cart.

A ticket opens one websocket (docs/websocket.md). It is signed with a timestamp (HMAC via
django.core.signing) with keys of its own, ``settings.RECOVERY_TICKET_KEYS``, not the Django
SECRET_KEY: the first key signs and every listed key verifies, so a key is rotated by putting a
new one first and dropping the old one once its tickets have expired (seconds). It is used up by
recording its nonce in Redis with SET NX, so a second use is refused even across processes.

A ticket also names the browser's device (``device_token_issue``/``device_read``): a random
128-bit id the server makes and signs (same keys, salt ``recovery.device.v1``, bound to the
store), which the snippet keeps and sends back on its next sessions. The id is a key of the
cooldown of offers with a code (recovery/live.py). A browser can drop its token and get a new one
(one session request, under the session rate limit) but cannot make one up or take another
store's: a token that does not verify is ignored and a new one issued.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core import signing

from carts import redis_client

SALT = "recovery.ticket.v1"
TTL_SECONDS = 45  # the issue's bound is 60
DEVICE_SALT = "recovery.device.v1"
# A device token is at most this long (the session API's documented bound); one signed with a
# store id up to 2**63 is 112 characters.
DEVICE_TOKEN_MAX_LENGTH = 128
_USED_KEY = "recovery:ticket-used:{nonce}"


class TicketError(Exception):
    """A ticket that cannot open a session; ``code`` is the websocket close code."""

    code = 4401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TicketInvalid(TicketError):
    code = 4401


class TicketExpired(TicketError):
    code = 4402


class TicketReused(TicketError):
    code = 4409


@dataclass(frozen=True, slots=True)
class Ticket:
    store_id: int
    cart: str
    nonce: str
    device: str | None = None  # the device id (device_read), None in a ticket made without one


def _keys() -> list[str | bytes]:
    keys: list[str | bytes] = list(settings.RECOVERY_TICKET_KEYS)  # newest first
    if not keys:
        raise RuntimeError("settings.RECOVERY_TICKET_KEYS is empty.")
    return keys


def _signer() -> signing.TimestampSigner:
    keys = _keys()
    return signing.TimestampSigner(key=keys[0], fallback_keys=keys[1:], salt=SALT)


def ticket_issue(*, store_id: int, cart: str, device: str | None = None) -> str:
    claims: dict[str, object] = {"s": store_id, "c": cart, "n": secrets.token_urlsafe(16)}
    if device is not None:
        claims["d"] = device
    return _signer().sign_object(claims)


def ticket_read(token: str, *, max_age: int | None = None) -> Ticket:
    """The ticket's claims if it is genuine and fresh (it may still have been used)."""
    max_age = TTL_SECONDS if max_age is None else max_age
    if not isinstance(token, str) or len(token) > 512:
        raise TicketInvalid("The ticket is malformed.")
    try:
        claims = _signer().unsign_object(token, max_age=max_age)
    except signing.SignatureExpired:
        raise TicketExpired("The ticket has expired: ask for a new one.") from None
    except signing.BadSignature:
        raise TicketInvalid("The ticket is not genuine.") from None
    try:
        device = claims.get("d")
        return Ticket(
            int(claims["s"]),
            str(claims["c"]),
            str(claims["n"]),
            None if device is None else str(device),
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        raise TicketInvalid("The ticket is malformed.") from None


def ticket_use(ticket: Ticket) -> None:
    """Spend the ticket; raises TicketReused if it was spent before."""
    fresh = redis_client.client().set(
        _USED_KEY.format(nonce=ticket.nonce), b"1", nx=True, ex=TTL_SECONDS * 2
    )
    if not fresh:
        raise TicketReused("The ticket was already used: ask for a new one.")


# Device tokens --------------------------------------------------------------------------------


def _device_signer() -> signing.Signer:
    keys = _keys()
    return signing.Signer(key=keys[0], fallback_keys=keys[1:], salt=DEVICE_SALT)


def device_new() -> str:
    """A new device id: 128 random bits (22 characters)."""
    return secrets.token_urlsafe(16)


def device_token_issue(*, store_id: int, device: str) -> str:
    """The token the browser keeps for this store's device id (signed with the newest key: a
    token a listed older key signed is renewed whenever it comes back)."""
    return _device_signer().sign_object({"s": store_id, "d": device})


def device_read(*, store_id: int, token: object) -> str | None:
    """The device id of a genuine token of this store, else None (no token, a forged or
    malformed one, another store's, or one signed with a key no longer listed)."""
    if not isinstance(token, str) or not token or len(token) > DEVICE_TOKEN_MAX_LENGTH:
        return None
    try:
        claims = _device_signer().unsign_object(token)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(claims, dict) or claims.get("s") != store_id:
        return None
    device = claims.get("d")
    if not isinstance(device, str) or not 16 <= len(device) <= 64:
        return None
    return device
