"""Browser grants: the shop's server lets its page open one of its carts with the publishable key.

A cart the shop's server made (through the secret-key API) may be opened from the browser only
with a grant: a short-lived value bound to the store and the cart, signed with the store's webhook
secret (``whsec_...``), so the shop's server can compute it itself without calling us
(docs/snippet.md, "Carts made by the shop's server")::

    g1.<expiry, unix seconds>.<hex HMAC-SHA256(whsec, "<store id>:<cart>:<expiry>")>

``POST /api/v1/carts/{cart}/browser-grant`` returns the same format. A grant is accepted until its
expiry, and only when that expiry is at most ``MAX_AHEAD_SECONDS`` ahead. Rotating the store's
keys replaces the webhook secret, and with it every grant given out.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from carts.models import Store
from carts.services import store_webhook_secret

VERSION = "g1"
MAX_AHEAD_SECONDS = 24 * 3600
MAX_LENGTH = 128
_GRANT = re.compile(r"g1\.([0-9]{1,12})\.([0-9a-f]{64})")


@dataclass(frozen=True, slots=True)
class Grant:
    grant: str
    cart: str
    expires_at: datetime
    expires_in: int


def grant_compute(*, secret: str, store_id: int, cart: str, expires: int) -> str:
    """The grant for this cart until ``expires`` (unix seconds), signed with ``secret`` (the
    store's webhook secret, as shown: ``whsec_...``). Pure: what the shop's server computes."""
    message = f"{store_id}:{cart}:{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{VERSION}.{expires}.{digest}"


def browser_grant_issue(*, store: Store, cart: str, now: datetime) -> Grant:
    """A grant for the browser to open this store's cart, valid CARTS_BROWSER_GRANT_SECONDS."""
    seconds = min(int(settings.CARTS_BROWSER_GRANT_SECONDS), MAX_AHEAD_SECONDS)
    expires = int(now.timestamp()) + seconds
    value = grant_compute(
        secret=store_webhook_secret(store=store), store_id=store.pk, cart=cart, expires=expires
    )
    return Grant(value, cart, datetime.fromtimestamp(expires, UTC), expires - int(now.timestamp()))


def browser_grant_valid(*, store: Store, cart: str, grant: object, now: datetime) -> bool:
    """Whether ``grant`` lets the browser open this store's cart now: genuine, for this store and
    cart, unexpired, and expiring at most MAX_AHEAD_SECONDS from now."""
    if not isinstance(grant, str) or len(grant) > MAX_LENGTH:
        return False
    match = _GRANT.fullmatch(grant)
    if match is None:
        return False
    expires = int(match.group(1))
    at = int(now.timestamp())
    if not at < expires <= at + MAX_AHEAD_SECONDS:
        return False
    expected = grant_compute(
        secret=store_webhook_secret(store=store), store_id=store.pk, cart=cart, expires=expires
    )
    return hmac.compare_digest(expected, grant)
