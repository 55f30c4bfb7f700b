"""create_store and rotate_store_keys: keys printed once, stored hashed, and working at the API."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from carts.management.commands.create_store import DEMO_STORE_NAME
from carts.models import Store, StoreKey


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def get_cart(secret_key: str, cart: str = "x") -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret_key}")
    return client.get(f"/api/v1/carts/{cart}").status_code


@pytest.mark.django_db
def test_create_store_json_prints_one_object_whose_secret_key_authenticates():
    out, _ = run("create_store", "--name", "Shop A", "--domain", "a.example", "--json")

    body = json.loads(out)
    assert set(body) == {"store_id", "secret_key", "publishable_key", "webhook_secret"}
    assert body["secret_key"].startswith("sk_")
    assert body["publishable_key"].startswith("pk_")
    assert body["webhook_secret"].startswith("whsec_")
    store = Store.objects.get(pk=body["store_id"])
    assert (store.name, store.domain) == ("Shop A", "a.example")
    assert get_cart(body["secret_key"]) == 404  # authenticated; the store has no cart "x"
    assert get_cart("sk_not-a-key") == 401
    assert get_cart(body["publishable_key"]) == 401  # a publishable key is no secret key


@pytest.mark.django_db
def test_create_store_stores_only_hashes_of_the_keys():
    body = json.loads(run("create_store", "--name", "Shop B", "--json")[0])

    rows = list(StoreKey.objects.filter(store_id=body["store_id"]).values())
    assert sorted(r["kind"] for r in rows) == ["publishable", "secret"]
    raw_keys = [body["secret_key"], body["publishable_key"], body["webhook_secret"]]
    stored = [str(value) for row in rows for value in row.values()]
    stored += [str(v) for v in Store.objects.filter(pk=body["store_id"]).values().get().values()]
    assert not [key for key in raw_keys if any(key in value for value in stored)]
    hashes = {r["kind"]: r["key_hash"] for r in rows}
    assert hashes["secret"] == hashlib.sha256(body["secret_key"].encode()).hexdigest()
    assert hashes["publishable"] == hashlib.sha256(body["publishable_key"].encode()).hexdigest()


@pytest.mark.django_db
def test_create_store_text_output_shows_the_three_secrets_once():
    out, _ = run("create_store", "--name", "Shop C")

    store = Store.objects.get(name="Shop C")
    assert f"Created store #{store.pk} 'Shop C'." in out
    assert out.count("sk_") == 1
    assert out.count("pk_") == 1
    assert out.count("whsec_") == 1
    secret = next(w for w in out.split() if w.startswith("sk_"))
    assert get_cart(secret) == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "  "], "--name must not be blank."),
        (["--name", "x" * 201], "--name is too long"),
        ([], "one of the arguments --name --demo is required"),
        (["--name", "A", "--demo"], "not allowed with argument"),
    ],
)
def test_create_store_refuses_bad_arguments(args, message):
    before = Store.objects.count()  # committed tests may have left stores in this database

    with pytest.raises(CommandError, match=message):
        run("create_store", *args)

    assert Store.objects.count() == before


@pytest.mark.django_db
def test_demo_store_is_created_once_and_its_keys_never_shown_again():
    assert not Store.objects.filter(name=DEMO_STORE_NAME).exists()

    first, _ = run("create_store", "--demo")
    second, _ = run("create_store", "--demo")
    third_json, third_err = run("create_store", "--demo", "--json")

    demo = Store.objects.get(name=DEMO_STORE_NAME)  # exactly one
    assert f"Created store #{demo.pk} 'Demo store'." in first
    secret = next(w for w in first.split() if w.startswith("sk_"))
    assert get_cart(secret) == 404
    assert f"Store #{demo.pk} 'Demo store' already exists" in second
    assert "sk_" not in second and "pk_" not in second and "whsec_" not in second
    assert json.loads(third_json) == {
        "store_id": demo.pk,
        "secret_key": None,
        "publishable_key": None,
        "webhook_secret": None,
    }
    assert "already exists" in third_err
    assert StoreKey.objects.filter(store=demo).count() == 2


@pytest.mark.django_db
def test_rotate_revokes_the_old_keys_and_the_new_secret_key_works():
    old = json.loads(run("create_store", "--name", "Shop D", "--json")[0])
    assert get_cart(old["secret_key"]) == 404

    out, _ = run("rotate_store_keys", "--store", str(old["store_id"]), "--json")

    new = json.loads(out)
    assert set(new) == {"store_id", "secret_key", "publishable_key", "webhook_secret"}
    assert new["store_id"] == old["store_id"]
    assert get_cart(old["secret_key"]) == 401
    assert get_cart(new["secret_key"]) == 404
    assert new["secret_key"] != old["secret_key"]
    assert new["publishable_key"] != old["publishable_key"]
    assert new["webhook_secret"] != old["webhook_secret"]
    keys = StoreKey.objects.filter(store_id=old["store_id"])
    assert keys.filter(revoked_at__isnull=True).count() == 2
    assert keys.filter(revoked_at__isnull=False).count() == 2
    live_hashes = set(keys.filter(revoked_at__isnull=True).values_list("key_hash", flat=True))
    assert live_hashes == {
        hashlib.sha256(new[k].encode()).hexdigest() for k in ("secret_key", "publishable_key")
    }


@pytest.mark.django_db
def test_rotate_text_output_prints_the_new_keys():
    old = json.loads(run("create_store", "--name", "Shop E", "--json")[0])

    out, _ = run("rotate_store_keys", "--store", str(old["store_id"]))

    assert f"Rotated the keys of store #{old['store_id']} 'Shop E'" in out
    secret = next(w for w in out.split() if w.startswith("sk_"))
    assert get_cart(secret) == 404
    assert get_cart(old["secret_key"]) == 401


@pytest.mark.django_db
def test_rotate_unknown_store_is_a_clear_error_and_changes_nothing():
    body = json.loads(run("create_store", "--name", "Shop F", "--json")[0])
    missing = body["store_id"] + 1000

    with pytest.raises(CommandError, match=f"No store with id {missing}."):
        run("rotate_store_keys", "--store", str(missing))

    assert StoreKey.objects.filter(store_id=body["store_id"], revoked_at__isnull=False).count() == 0
    assert get_cart(body["secret_key"]) == 404
