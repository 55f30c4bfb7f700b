"""Signed links in campaign emails: restore the cart, open pixel, unsubscribe, "don't remind me".

A token is the step's opaque ``link_id`` (a random UUID, not its sequential primary key) signed
with a salt per purpose, so a restore token cannot unsubscribe anyone and a changed id fails the
signature. The keys are ``settings.CAMPAIGNS_LINK_KEYS``, not the Django SECRET_KEY: the first
key signs and every listed key verifies, so a key is rotated by putting a new one first; links
signed with a key dropped from the list stop working. Restore and open tokens expire (a cart two
months old is not worth restoring); unsubscribe and "don't remind me" never do: RFC 8058 expects
the one-click URL of an old message to keep working (keep a rotated-out key listed as long as
those links should).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.core import signing


class Purpose(StrEnum):
    RESTORE = "restore"
    OPEN = "open"
    UNSUBSCRIBE = "unsubscribe"
    STOP = "stop"


RESTORE_MAX_AGE = timedelta(days=60)
_MAX_AGE: dict[Purpose, timedelta | None] = {
    Purpose.RESTORE: RESTORE_MAX_AGE,
    Purpose.OPEN: RESTORE_MAX_AGE,
    Purpose.UNSUBSCRIBE: None,
    Purpose.STOP: None,
}
# "." rather than signing's ":" so tokens are plain URL path segments.
_SEP = "."


class BadLink(Exception):
    """A token that was changed, signed for another purpose, or has expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.expired = expired


def _signer(purpose: Purpose) -> signing.Signer:
    salt = f"campaigns.links.{purpose.value}"
    keys: list[str | bytes] = list(settings.CAMPAIGNS_LINK_KEYS)  # newest first
    if _MAX_AGE[purpose] is None:
        return signing.Signer(key=keys[0], fallback_keys=keys[1:], salt=salt, sep=_SEP)
    return signing.TimestampSigner(key=keys[0], fallback_keys=keys[1:], salt=salt, sep=_SEP)


def token_for(link_id: uuid.UUID, purpose: str) -> str:
    if not isinstance(link_id, uuid.UUID):  # a step's pk here would make guessable links
        raise TypeError(f"links carry a step's link_id (a UUID), not {type(link_id).__name__}")
    return _signer(Purpose(purpose)).sign(link_id.hex)


def link_from_token(token: str, purpose: str) -> uuid.UUID:
    """The step ``link_id`` a token was signed for; BadLink when it was tampered with, signed
    with a key no longer listed, or has expired."""
    kind = Purpose(purpose)
    signer = _signer(kind)
    try:
        if isinstance(signer, signing.TimestampSigner):
            value = signer.unsign(token, max_age=_MAX_AGE[kind])
        else:
            value = signer.unsign(token)
    except signing.SignatureExpired as exc:
        raise BadLink("This link has expired.", expired=True) from exc
    except signing.BadSignature as exc:
        raise BadLink("This link is not valid.") from exc
    try:
        return uuid.UUID(hex=value)
    except ValueError:  # signed by us, so only a bug (or an old step-id link) gets here
        raise BadLink("This link is not valid.") from None


def _url(path: str) -> str:
    return f"{settings.CAMPAIGNS_PUBLIC_URL}{path}"


def restore_url(link_id: uuid.UUID) -> str:
    """``/r/<token>``: records the click, then redirects to the store's cart."""
    return _url(f"/r/{token_for(link_id, Purpose.RESTORE)}")


def open_pixel_url(link_id: uuid.UUID) -> str:
    """``/r/<token>/o.gif``: the open-tracking pixel."""
    return _url(f"/r/{token_for(link_id, Purpose.OPEN)}/o.gif")


def unsubscribe_url(link_id: uuid.UUID) -> str:
    """``/u/<token>``: the List-Unsubscribe one-click URL (RFC 8058) and the footer link."""
    return _url(f"/u/{token_for(link_id, Purpose.UNSUBSCRIBE)}")


def stop_url(link_id: uuid.UUID) -> str:
    """``/r/<token>/stop``: "don't remind me" (no more reminders of any kind)."""
    return _url(f"/r/{token_for(link_id, Purpose.STOP)}/stop")
