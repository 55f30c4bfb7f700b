"""Store keys: generated once, shown once, stored as sha256 (they are 160+ random bits).

The webhook secret is not stored at all: it is an HMAC of the project's SECRET_KEY and a per-store
nonce, so a copy of the database alone does not reveal it, and rotating the nonce replaces it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_PREFIX = "sk_"  # noqa: S105 - a prefix, not a secret
PUBLISHABLE_PREFIX = "pk_"
WEBHOOK_PREFIX = "whsec_"


def new_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(30)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(16)


def webhook_secret(*, secret_key: str, store_id: int, nonce: str) -> str:
    digest = hmac.new(
        secret_key.encode(), f"webhook:{store_id}:{nonce}".encode(), hashlib.sha256
    ).hexdigest()
    return WEBHOOK_PREFIX + digest[:48]
