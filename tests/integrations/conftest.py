"""Shared helpers of the integrations tests: a store connected to a platform (made through
integrations.services), the platforms' sample payloads, and signed deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from carts import services as carts_services
from integrations import services
from integrations.models import Connection

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "platforms"
SHOPIFY_SECRET = "shpss_test_client_secret"
SHOP_DOMAIN = "test-shop.myshopify.com"


def fixture_bytes(platform: str, name: str) -> bytes:
    """A sample payload, byte for byte as stored (tests/fixtures/platforms/<platform>/)."""
    return (FIXTURES / platform / name).read_bytes()


def fixture_json(platform: str, name: str) -> dict[str, Any]:
    """A sample payload parsed (big integers exact)."""
    return json.loads(fixture_bytes(platform, name))


def shopify_signature(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@dataclass(frozen=True, slots=True)
class Shop:
    store_id: int
    connection: Connection


@pytest.fixture
def shopify_shop(db) -> Shop:
    """A store with an active Shopify connection (webhook secret SHOPIFY_SECRET)."""
    creds = carts_services.store_create(name="Shopify shop", domain="shopify.example")
    connection = services.connection_create(
        store_id=creds.store_id,
        platform="shopify",
        shop_domain=SHOP_DOMAIN,
        webhook_secret=SHOPIFY_SECRET,
        credentials={"access_token": "shpat_test"},
    )
    return Shop(creds.store_id, connection)


def post_shopify(
    topic: str,
    body: bytes | dict[str, Any],
    *,
    webhook_id: str | None = None,
    secret: str = SHOPIFY_SECRET,
    signature: str | None = None,
    domain: str = SHOP_DOMAIN,
    client: APIClient | None = None,
) -> Any:
    """POST a Shopify delivery to /api/v1/webhooks/shopify, signed unless ``signature`` is
    given ("" sends none)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers: dict[str, Any] = {
        "HTTP_X_SHOPIFY_TOPIC": topic,
        "HTTP_X_SHOPIFY_SHOP_DOMAIN": domain,
        "HTTP_X_SHOPIFY_WEBHOOK_ID": webhook_id or str(uuid.uuid4()),
        "HTTP_X_SHOPIFY_API_VERSION": "2025-01",
    }
    sig = shopify_signature(raw, secret) if signature is None else signature
    if sig:
        headers["HTTP_X_SHOPIFY_HMAC_SHA256"] = sig
    return (client or APIClient()).post(
        "/api/v1/webhooks/shopify", data=raw, content_type="application/json", **headers
    )
