"""Cart tokens the browser mints: ``c_<random>.<mac>``, self-authenticating.

When the snippet asks for a session without a cart, the server makes a token that carries a MAC
over (store id, random part) keyed with the first of ``settings.RECOVERY_TICKET_KEYS`` (newest
first). A token is "minted for this store" iff its MAC verifies for this store with any listed
key: rotation keeps the tokens of a key while it stays listed. Nothing is stored.

Tokens match ``carts.validation.CART_TOKEN_PATTERN`` (43 characters, ``[A-Za-z0-9_-]`` and one
dot).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

from django.conf import settings

PREFIX = "c_"
_SALT = "recovery.cart-token.v1"
_TOKEN = re.compile(r"c_([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{22})")


def _mac(key: str, store_id: int, random_part: str) -> str:
    message = f"{_SALT}:{store_id}:{random_part}".encode()
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _keys() -> Sequence[str]:
    keys = settings.RECOVERY_TICKET_KEYS
    if not keys:
        raise RuntimeError("settings.RECOVERY_TICKET_KEYS is empty.")
    return keys


def cart_token_mint(*, store_id: int) -> str:
    """A new cart token for this store's browser (signed with the newest key)."""
    random_part = secrets.token_urlsafe(12)  # 16 characters
    return f"{PREFIX}{random_part}.{_mac(_keys()[0], store_id, random_part)}"


def cart_token_minted(*, store_id: int, token: object) -> bool:
    """Whether the browser minted this token for this store (with any listed key)."""
    if not isinstance(token, str):
        return False
    match = _TOKEN.fullmatch(token)
    if match is None:
        return False
    random_part, mac = match.groups()
    return any(hmac.compare_digest(_mac(key, store_id, random_part), mac) for key in _keys())
