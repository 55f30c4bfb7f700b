"""Connections: made and changed with their secrets sealed (integrations/crypto.py)."""

from __future__ import annotations

from typing import Any

from integrations import crypto
from integrations.models import Connection
from integrations.selectors import place as _place


def connection_secrets_set(
    *,
    connection: Connection,
    webhook_secret: str | None = None,
    credentials: dict[str, Any] | None = None,
) -> Connection:
    """Seal and store the given secrets (None leaves one as it is); saves the connection."""
    if webhook_secret is not None:
        connection.webhook_secret = crypto.seal(
            webhook_secret, place=_place(connection, "webhook_secret")
        )
    if credentials is not None:
        connection.credentials = crypto.seal_json(
            credentials, place=_place(connection, "credentials")
        )
    connection.save()
    return connection


def connection_create(
    *,
    store_id: int,
    platform: str,
    shop_domain: str = "",
    api_url: str = "",
    storefront_url: str = "",
    jwks_url: str = "",
    webhook_secret: str = "",
    credentials: dict[str, Any] | None = None,
    codes_on_platform: bool = True,
) -> Connection:
    """A store's connection to its platform, with its secrets sealed."""
    connection = Connection(
        store_id=store_id,
        platform=platform,
        shop_domain=shop_domain.strip().lower(),
        api_url=api_url,
        storefront_url=storefront_url,
        jwks_url=jwks_url,
        codes_on_platform=codes_on_platform,
    )
    return connection_secrets_set(
        connection=connection, webhook_secret=webhook_secret, credentials=credentials or {}
    )
