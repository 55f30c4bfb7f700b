"""Stores and their keys: creation, the demo store, allowed origins, key rotation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction

from carts import extensions, keys
from carts import origins as origins_module
from carts.models import Store, StoreKey


@dataclass(frozen=True, slots=True)
class StoreCredentials:
    store_id: int
    secret_key: str
    publishable_key: str
    webhook_secret: str


def _issue_keys(store: Store) -> tuple[str, str]:
    secret = keys.new_key(keys.SECRET_PREFIX)
    publishable = keys.new_key(keys.PUBLISHABLE_PREFIX)
    StoreKey.objects.bulk_create(
        [
            StoreKey(store=store, kind=kind, prefix=key[:10], key_hash=keys.hash_key(key))
            for kind, key in (
                (StoreKey.Kind.SECRET, secret),
                (StoreKey.Kind.PUBLISHABLE, publishable),
            )
        ]
    )
    return secret, publishable


def store_webhook_secret(*, store: Store) -> str:
    return keys.webhook_secret(
        secret_key=settings.SECRET_KEY, store_id=store.pk, nonce=store.webhook_secret_nonce
    )


@transaction.atomic
def store_create(*, name: str, domain: str = "") -> StoreCredentials:
    """Create a store and its keys. The keys are returned here once and never again."""
    store = Store.objects.create(name=name, domain=domain, webhook_secret_nonce=keys.new_nonce())
    secret, publishable = _issue_keys(store)
    return StoreCredentials(store.pk, secret, publishable, store_webhook_secret(store=store))


DEMO_STORE_NAME = "Demo store"
# pg_advisory_xact_lock key: two `make run` starting together create one demo store, not two.
DEMO_STORE_LOCK = 0x64656D6F  # "demo"


@transaction.atomic
def store_demo_ensure(
    *, domain: str = "", origins: Sequence[str] = ()
) -> tuple[Store, StoreCredentials | None]:
    """The demo store, created on first use, with ``origins`` allowed and whatever the other
    apps add to it. Credentials come back only when it was created."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DEMO_STORE_LOCK])
    store = Store.objects.filter(name=DEMO_STORE_NAME).order_by("pk").first()
    creds = None
    if store is None:
        creds = store_create(name=DEMO_STORE_NAME, domain=domain)
        store = Store.objects.get(pk=creds.store_id)
    store_origins_add(store=store, origins=origins)
    for hook in extensions.demo_store_hooks():
        hook(store)
    return store, creds


def store_origins_add(*, store: Store, origins: Sequence[str]) -> Store:
    """Allow these origins (normalised; ValueError for one that is not an origin)."""
    allowed = list(store.allowed_origins)
    for origin in origins:
        normal = origins_module.origin_normalise(origin)
        if normal not in allowed:
            allowed.append(normal)
    if allowed != store.allowed_origins:
        store.allowed_origins = allowed
        store.save(update_fields=["allowed_origins"])
    return store


def store_publishable_key_issue(*, store: Store) -> str:
    """One more publishable key for the store (publishable keys are public: the demo page
    embeds one). Returned once; stored hashed like every key."""
    key = keys.new_key(keys.PUBLISHABLE_PREFIX)
    StoreKey.objects.create(
        store=store,
        kind=StoreKey.Kind.PUBLISHABLE,
        prefix=key[:10],
        key_hash=keys.hash_key(key),
    )
    return key


@transaction.atomic
def store_keys_rotate(*, store: Store, now: datetime) -> StoreCredentials:
    """Revoke every live key of the store, replace the webhook secret, and issue new keys."""
    StoreKey.objects.filter(store=store, revoked_at__isnull=True).update(revoked_at=now)
    store.webhook_secret_nonce = keys.new_nonce()
    store.save(update_fields=["webhook_secret_nonce"])
    secret, publishable = _issue_keys(store)
    return StoreCredentials(store.pk, secret, publishable, store_webhook_secret(store=store))
