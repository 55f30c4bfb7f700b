"""Secrets at rest: platform credentials and webhook secrets sealed with AES-256-GCM under a key
derived (HKDF) from the project's SECRET_KEY; SECRET_KEY_FALLBACKS still open older ones. A copy
of the database alone reveals none of them."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

PREFIX = "sec1:"
_INFO = b"integrations.credentials.v1"
_NONCE = 12


def _key(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())


def seal(value: str, *, place: str) -> str:
    """``value`` sealed, bound to ``place`` (e.g. "connection:12:credentials"): a sealed value
    copied to another place does not open there."""
    if not value:
        return ""
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(_key(settings.SECRET_KEY)).encrypt(nonce, value.encode(), place.encode())
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_sealed(sealed: str, *, place: str) -> str:
    """The value ``seal`` sealed; "" for empty; ValueError when no known key opens it."""
    if not sealed:
        return ""
    if not sealed.startswith(PREFIX):
        raise ValueError("not a sealed value")
    raw = base64.urlsafe_b64decode(sealed[len(PREFIX) :])
    for secret in (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])):
        try:
            return AESGCM(_key(secret)).decrypt(raw[:_NONCE], raw[_NONCE:], place.encode()).decode()
        except InvalidTag:
            continue
    raise ValueError("no key opens this value (SECRET_KEY changed?)")


def seal_json(value: dict[str, Any], *, place: str) -> str:
    return seal(json.dumps(value, sort_keys=True), place=place) if value else ""


def open_json(sealed: str, *, place: str) -> dict[str, Any]:
    opened = open_sealed(sealed, place=place)
    return json.loads(opened) if opened else {}
