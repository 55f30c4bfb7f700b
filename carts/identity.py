"""Who the shopper behind a cart is: one definition for scoring, holdouts, caps and consent."""

from __future__ import annotations

import hashlib
import re


def email_digest(email: str) -> str:
    """sha256 of the trimmed, lower-cased address (stored instead of the address itself)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def shopper_key(*, shopper_id: str | None, email_sha256: str | None) -> str | None:
    """``id:<shopper id>``, else ``email:<sha256 of the lower-cased email>``, else None."""
    if shopper_id:
        return f"id:{shopper_id}"
    if email_sha256:
        return f"email:{email_sha256}"
    return None


def cart_shopper_key(*, shopper_id: str, email: str) -> str | None:
    """The shopper key of a cart-state row (its shopper id and captured email)."""
    return shopper_key(shopper_id=shopper_id, email_sha256=email_digest(email) if email else None)


# An email address inside free text (a mail server's or provider's answer): what addresses_redacted
# removes before such text is stored.
_ADDRESS = re.compile(r"[\w.!#$%&*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*")
REDACTED = "<address>"


def addresses_redacted(text: str) -> str:
    """``text`` without the email addresses in it: error and bounce texts are stored in the log,
    where an address could never be erased (docs/security.md)."""
    return _ADDRESS.sub(REDACTED, text)
