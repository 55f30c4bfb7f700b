"""Reads of connections and their secrets."""

from __future__ import annotations

from typing import Any

from integrations import crypto
from integrations.models import Connection


def place(connection: Connection, name: str) -> str:
    return f"integrations.connection:{connection.store_id}:{connection.platform}:{name}"


def connection_for_shop(*, platform: str, shop_domain: str) -> Connection | None:
    """The active connection of the shop with this domain (Shopify's X-Shopify-Shop-Domain)."""
    return (
        Connection.objects.filter(
            platform=platform, shop_domain=shop_domain.strip().lower(), active=True
        )
        .select_related("store")
        .first()
    )


def connection_for_store(*, platform: str, store_id: int) -> Connection | None:
    return (
        Connection.objects.filter(platform=platform, store_id=store_id, active=True)
        .select_related("store")
        .first()
    )


def connection_webhook_secret(connection: Connection) -> str:
    """The secret that signs the platform's webhooks, opened."""
    return crypto.open_sealed(connection.webhook_secret, place=place(connection, "webhook_secret"))


def connection_credentials(connection: Connection) -> dict[str, Any]:
    """The platform's API credentials, opened."""
    return crypto.open_json(connection.credentials, place=place(connection, "credentials"))
