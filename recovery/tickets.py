"""Shopper-session tickets: short-lived, single-use, signed, bound to a store and a cart.

A ticket opens one websocket (docs/websocket.md). It is signed with a timestamp (HMAC via
django.core.signing) with keys of its own, ``settings.RECOVERY_TICKET_KEYS``, not the Django
SECRET_KEY: the first key signs and every listed key verifies, so a key is rotated by putting a
new one first and dropping the old one once its tickets have expired (seconds). It is used up by
recording its nonce in Redis with SET NX, so a second use is refused even across processes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core import signing

from carts import redis_client

SALT = "recovery.ticket.v1"
TTL_SECONDS = 45  # the issue's bound is 60
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


def _signer() -> signing.TimestampSigner:
    keys: list[str | bytes] = list(settings.RECOVERY_TICKET_KEYS)  # newest first
    return signing.TimestampSigner(key=keys[0], fallback_keys=keys[1:], salt=SALT)


def ticket_issue(*, store_id: int, cart: str) -> str:
    return _signer().sign_object({"s": store_id, "c": cart, "n": secrets.token_urlsafe(16)})


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
        return Ticket(int(claims["s"]), str(claims["c"]), str(claims["n"]))
    except (KeyError, TypeError, ValueError):
        raise TicketInvalid("The ticket is malformed.") from None


def ticket_use(ticket: Ticket) -> None:
    """Spend the ticket; raises TicketReused if it was spent before."""
    fresh = redis_client.client().set(
        _USED_KEY.format(nonce=ticket.nonce), b"1", nx=True, ex=TTL_SECONDS * 2
    )
    if not fresh:
        raise TicketReused("The ticket was already used: ask for a new one.")
