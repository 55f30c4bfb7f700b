"""The merchant admin: keys are shown once at creation; the log and carts are read-only."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from carts import services
from carts.keys import hash_key
from carts.models import CartEvent, Store, StoreKey
from carts.sources import Source
from tests.conftest import item, new_event


@pytest.fixture
def admin_client(db) -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-12345678")
    client = Client()
    client.force_login(user)
    return client


def test_creating_a_store_in_the_admin_shows_its_keys_once(admin_client):
    response = admin_client.post(
        "/admin/carts/store/add/",
        {
            "name": "Admin shop",
            "domain": "a.example",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
        follow=True,
    )

    assert response.status_code == 200
    store = Store.objects.get(name="Admin shop")
    [message] = [str(m) for m in response.context["messages"] if "Secret key" in str(m)]
    secret = message.split("Secret key: ")[1].split(" ")[0]
    assert secret.startswith("sk_")
    assert StoreKey.objects.filter(store=store, key_hash=hash_key(secret)).exists()
    # then the change page never shows a key again
    page = admin_client.get(f"/admin/carts/store/{store.pk}/change/").content.decode()
    assert secret not in page
    assert hash_key(secret) not in page
    assert secret[:10] in page  # the prefix, to recognise it


def test_rotating_keys_from_the_admin_revokes_the_old_ones(admin_client):
    creds = services.store_create(name="Rotating shop")

    response = admin_client.post(
        "/admin/carts/store/",
        {"action": "rotate_keys", "_selected_action": [creds.store_id]},
        follow=True,
    )

    assert response.status_code == 200
    old = StoreKey.objects.get(key_hash=hash_key(creds.secret_key))
    assert old.revoked_at is not None
    assert "Secret key: sk_" in " ".join(str(m) for m in response.context["messages"])


def test_event_log_and_carts_are_browsable_but_read_only(admin_client):
    creds = services.store_create(name="Browsed shop")
    services.events_append(
        source=Source.server("test"),
        store_id=creds.store_id,
        events=[new_event("cart.item_added", "browse-1", item())],
    )
    event = CartEvent.objects.get(store_id=creds.store_id)

    listing = admin_client.get("/admin/carts/cartevent/")
    assert listing.status_code == 200
    # Provenance is shown and can be filtered on.
    assert b'<td class="field-source">server</td>' in listing.content
    assert b'<td class="field-source_ref">test</td>' in listing.content
    assert (
        admin_client.get("/admin/carts/cartevent/?source=browser").context["cl"].result_count == 0
    )
    detail = admin_client.get(f"/admin/carts/cartevent/{event.pk}/change/")
    assert detail.status_code == 200  # viewable
    assert b'name="_save"' not in detail.content  # but no save button
    assert admin_client.get("/admin/carts/cartevent/add/").status_code == 403
    assert admin_client.post(f"/admin/carts/cartevent/{event.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/carts/cartstate/?q=browse-1").status_code == 200
    assert admin_client.get("/admin/carts/cartstate/add/").status_code == 403
    assert CartEvent.objects.filter(store_id=creds.store_id).count() == 1


@pytest.mark.parametrize(
    "model",
    ["store", "storemember", "cartevent", "cartstate", "deadletter", "scoringmodel"],
)
def test_pages_spanning_every_store_are_for_superusers_whatever_permissions_staff_hold(
    db, client, model
):
    # A staff user (a merchant of some store) given Django's view and change permissions on a
    # model that spans every store still sees none of it: these pages would show every store's
    # carts, emails and keys (tests/test_tenant_isolation.py, the admin rows).
    from django.contrib.auth.models import Permission, User

    app = "recovery" if model == "scoringmodel" else "carts"
    staff = User.objects.create_user("staff-with-perms", password="pw", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(content_type__app_label=app, content_type__model=model)
    )
    client.force_login(staff)

    assert client.get(f"/admin/{app}/{model}/").status_code == 403
    index = client.get("/admin/").content.decode()
    assert f"/admin/{app}/{model}/" not in index
