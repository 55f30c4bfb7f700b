"""Signed links in campaign emails: restore the cart, open pixel, unsubscribe, "don't remind me".

A token is the step id signed with the project's SECRET_KEY and a salt per purpose, so a restore
token cannot unsubscribe anyone and a changed id fails the signature. Restore and open tokens
expire (a cart two months old is not worth restoring); unsubscribe and "don't remind me" never do:
RFC 8058 expects the one-click URL of an old message to keep working.
"""

from __future__ import annotations

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
    if _MAX_AGE[purpose] is None:
        return signing.Signer(salt=salt, sep=_SEP)
    return signing.TimestampSigner(salt=salt, sep=_SEP)


def token_for(step_id: int, purpose: str) -> str:
    return _signer(Purpose(purpose)).sign(str(int(step_id)))


def step_from_token(token: str, purpose: str) -> int:
    """The step id a token was signed for; BadLink when it was tampered with or has expired."""
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
    if not value.isdigit():  # signed by us, so only a bug could get here
        raise BadLink("This link is not valid.")
    return int(value)


def _url(path: str) -> str:
    return f"{settings.CAMPAIGNS_PUBLIC_URL}{path}"


def restore_url(step_id: int) -> str:
    """``/r/<token>``: records the click, then redirects to the store's cart."""
    return _url(f"/r/{token_for(step_id, Purpose.RESTORE)}")


def open_pixel_url(step_id: int) -> str:
    """``/r/<token>/o.gif``: the open-tracking pixel."""
    return _url(f"/r/{token_for(step_id, Purpose.OPEN)}/o.gif")


def unsubscribe_url(step_id: int) -> str:
    """``/u/<token>``: the List-Unsubscribe one-click URL (RFC 8058) and the footer link."""
    return _url(f"/u/{token_for(step_id, Purpose.UNSUBSCRIBE)}")


def stop_url(step_id: int) -> str:
    """``/r/<token>/stop``: "don't remind me" (no more reminders of any kind)."""
    return _url(f"/r/{token_for(step_id, Purpose.STOP)}/stop")
