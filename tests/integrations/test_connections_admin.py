"""The connections admin: secrets are write-only (sealed in the database, never rendered back,
blank keeps them), the webhook URL to register is shown, and merchants see their stores' only."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connection as db

from carts import services as cart_services
from integrations import selectors, services
from integrations.models import Connection

SECRET = "shpss_webhook-secret-42"
TOKEN = "shpat_access-token-77"
ADD = "/admin/integrations/connection/add/"


def _admin(client) -> None:
    get_user_model().objects.create_superuser("root", "root@example.com", "x")
    client.login(username="root", password="x")


def _raw(pk: int) -> str:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT credentials || webhook_secret FROM integrations_connection WHERE id = %s", [pk]
        )
        return str(cursor.fetchone()[0])


def test_secrets_are_sealed_never_shown_and_blank_keeps_them(client, db, store):
    _admin(client)
    response = client.post(
        ADD,
        {
            "store": store.pk,
            "platform": "shopify",
            "shop_domain": "My-Shop.myshopify.com",
            "codes_on_platform": "on",
            "active": "on",
            "set_webhook_secret": SECRET,
            "access_token": TOKEN,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    connection = Connection.objects.get(store=store)
    assert connection.shop_domain == "my-shop.myshopify.com"
    assert selectors.connection_webhook_secret(connection) == SECRET
    assert selectors.connection_credentials(connection) == {"access_token": TOKEN}
    raw = _raw(connection.pk)
    assert SECRET not in raw and TOKEN not in raw and raw.count("sec1:") == 2

    page = client.get(f"/admin/integrations/connection/{connection.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert SECRET not in html and TOKEN not in html
    assert "http://testserver/api/v1/webhooks/shopify" in html
    assert "checkouts/update" in html and "access_token" in html  # the stored names only

    # saved again with the secret inputs blank: both stay
    again = client.post(
        f"/admin/integrations/connection/{connection.pk}/change/",
        {"shop_domain": "my-shop.myshopify.com", "codes_on_platform": "on", "active": "on"},
    )
    assert again.status_code == 302, again.content.decode()[:2000]
    connection.refresh_from_db()
    assert selectors.connection_webhook_secret(connection) == SECRET
    assert selectors.connection_credentials(connection) == {"access_token": TOKEN}


def test_a_bad_shop_domain_is_a_field_error(client, db, store):
    _admin(client)
    response = client.post(
        ADD,
        {"store": store.pk, "platform": "shopify", "shop_domain": "evil.com/x?y", "active": "on"},
    )
    assert response.status_code == 200
    assert "A host name, e.g. my-shop.myshopify.com." in response.content.decode()
    assert Connection.objects.count() == 0


def test_the_woocommerce_webhook_url_names_the_store(client, db, store):
    _admin(client)
    connection = services.connection_create(
        store_id=store.pk, platform="woocommerce", api_url="https://shop.example.org"
    )
    other = cart_services.store_create(name="Other shop").store_id
    services.connection_create(store_id=other, platform="saleor", api_url="https://x.example/g")

    html = client.get(f"/admin/integrations/connection/{connection.pk}/change/").content.decode()

    assert f"http://testserver/api/v1/webhooks/woocommerce/{store.pk}" in html
    assert client.get("/admin/integrations/inbounddelivery/").status_code == 200
    assert client.get("/admin/integrations/platformcode/").status_code == 200


def test_codes_on_the_platform_need_its_credentials(client, db, store):
    """Without them every code, and every discount email with it, would be refused."""
    _admin(client)
    fields = {
        "store": store.pk, "platform": "shopify", "shop_domain": "my-shop.myshopify.com",
        "active": "on", "codes_on_platform": "on",
    }  # fmt: skip

    refused = client.post(ADD, fields)
    kept_off = client.post(ADD, {**fields, "codes_on_platform": ""})

    assert refused.status_code == 200
    assert "enter them below, or untick this" in refused.content.decode()
    assert kept_off.status_code == 302
    assert Connection.objects.get().codes_on_platform is False
