"""/healthz shows each platform connection's last delivery: one silent too long makes the service
degraded (200), never down; the public answer holds counts, superusers see the stores by id."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from carts import services as cart_services
from integrations import services
from integrations.models import Connection


def _mine(body: dict, store_ids: set[int]) -> list[dict]:
    return [c for c in body["components"]["platforms"]["connections"] if c["store"] in store_ids]


def _staff(client) -> None:
    user = get_user_model().objects.create_superuser("ops", password="x")
    client.force_login(user)


def test_a_merchant_signed_in_sees_counts_not_other_stores(client, db):
    """Merchants are staff users: the list by store id is for superusers (operators) only."""
    store_id = cart_services.store_create(name="Other shop").store_id
    services.connection_create(store_id=store_id, platform="saleor")
    merchant = get_user_model().objects.create_user("merchant", password="x", is_staff=True)
    client.force_login(merchant)

    platforms = client.get("/healthz").json()["components"]["platforms"]

    assert "connections" not in platforms and "silent_stores" not in platforms
    assert platforms["count"] >= 1


def test_a_platform_silent_too_long_makes_the_service_degraded_not_down(client, db, settings):
    settings.INTEGRATIONS_SILENT_HOURS = 24
    now = timezone.now()
    heard = cart_services.store_create(name="Heard shop").store_id
    quiet = cart_services.store_create(name="Quiet shop").store_id
    never = cart_services.store_create(name="Never shop").store_id
    services.connection_create(store_id=heard, platform="shopify", shop_domain="h.myshopify.com")
    services.connection_create(store_id=quiet, platform="woocommerce")
    services.connection_create(store_id=never, platform="saleor")
    Connection.objects.filter(store_id=heard).update(last_delivery_at=now - timedelta(hours=2))
    Connection.objects.filter(store_id=quiet).update(
        created_at=now - timedelta(days=9), last_delivery_at=now - timedelta(hours=25)
    )
    Connection.objects.filter(store_id=never).update(created_at=now - timedelta(hours=30))
    _staff(client)

    response = client.get("/healthz")

    # (in tests no worker or scheduler beats: those make it 503, not the platforms)
    body = response.json()
    assert "platforms" in body["degraded"] and "platforms" not in body["down"]
    assert body["components"]["platforms"]["ok"] is True
    rows = _mine(body, {heard, quiet, never})
    assert [(r["store"], r["platform"], r["silent"]) for r in rows] == [
        (heard, "shopify", False),
        (quiet, "woocommerce", True),
        (never, "saleor", True),
    ]
    assert rows[0]["age_seconds"] in range(2 * 3600 - 5, 2 * 3600 + 5)
    assert rows[2]["last_delivery_at"] is None
    assert rows[2]["age_seconds"] in range(30 * 3600 - 5, 30 * 3600 + 5)
    assert {quiet, never} <= set(body["components"]["platforms"]["silent_stores"])


def test_the_public_health_shows_counts_and_no_store(client, db, settings):
    store_id = cart_services.store_create(name="Secretive shop").store_id
    services.connection_create(store_id=store_id, platform="saleor")
    Connection.objects.filter(store_id=store_id).update(
        created_at=timezone.now() - timedelta(days=3)
    )

    response = client.get("/healthz")

    platforms = response.json()["components"]["platforms"]
    assert "connections" not in platforms and "silent_stores" not in platforms
    assert platforms["silent"] >= 1 and platforms["degraded"] is True
    assert b"Secretive shop" not in response.content


def test_a_connection_heard_from_recently_is_healthy(client, db):
    store_id = cart_services.store_create(name="Fresh shop").store_id
    services.connection_create(store_id=store_id, platform="saleor")
    _staff(client)

    rows = _mine(client.get("/healthz").json(), {store_id})

    assert [(r["platform"], r["silent"], r["last_delivery_at"]) for r in rows] == [
        ("saleor", False, None)
    ]
