"""Crypto-shredding: shoppers' personal data sealed in the log, erased by destroying their key."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from django.db import connection

from carts import pii, privacy, projectors, selectors, services
from carts.errors import EventIdConflict
from carts.models import CartEvent, CartState, ShopperKey, Store
from carts.sources import Source
from tests.conftest import T0, item, new_event

EMAIL = "Ada.Lovelace@Example.com"
PHONE = "+4915112345678"


def append(store, *events, source=None):
    return services.events_append(
        store_id=store.pk, events=list(events), source=source or Source.server("test")
    )


def contact(cart="cart-1", email=EMAIL, **extra):
    return new_event(
        "checkout.contact_captured",
        cart,
        {"email": email, "phone": PHONE, "consent": {"email": True}, **extra},
    )


def with_shopper(type, cart="cart-1", data=None, **shopper):
    return new_event(type, cart, data, shopper=shopper)


def raw_rows(store) -> list[str]:
    """Every stored event of the store as PostgreSQL's text of the row."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT e::text FROM carts_cartevent e WHERE store_id = %s ORDER BY position",
            [store.pk],
        )
        return [row[0] for row in cursor.fetchall()]


def test_personal_fields_are_sealed_in_the_log_and_open_for_readers(store):
    # given a cart whose shopper gives an address, in the payload and in the envelope
    append(
        store,
        with_shopper("cart.item_added", data=item("X"), id="cust-1", email=EMAIL),
        contact(),
    )

    # then the log holds neither the address nor the phone, in any form a reader could see
    rows = "\n".join(raw_rows(store))
    assert EMAIL not in rows and EMAIL.lower() not in rows and PHONE not in rows
    stored = CartEvent.objects.get(store=store, type="checkout.contact_captured")
    assert stored.data["email"].startswith(pii.PREFIX) and stored.data["consent"] == {"email": True}
    # and the cart's readers get them back in clear
    events = selectors.cart_events_list(store_id=store.pk, token="cart-1")
    assert events[0].shopper == {"id": "cust-1", "email": EMAIL}
    assert events[1].data["email"] == EMAIL and events[1].data["phone"] == PHONE
    state = CartState.objects.get(store=store, token="cart-1")
    assert (state.email, state.phone) == (EMAIL, PHONE)


def test_one_key_per_shopper_across_carts_and_batches(store):
    append(store, with_shopper("cart.item_added", "a", item("X"), email=EMAIL), contact("a"))
    append(store, new_event("cart.item_added", "b", item("Y")), contact("b", EMAIL.upper()))
    append(store, new_event("cart.item_added", "c", item("Y")), contact("c", "bob@example.com"))

    keys = ShopperKey.objects.filter(store=store)
    assert keys.count() == 2  # Ada (any case) and Bob
    ada = keys.get(subject=pii.subject_of(EMAIL))
    ids = {
        value.split(":")[1]
        for e in CartEvent.objects.filter(store=store, cart__in=["a", "b"])
        for value in [*(e.data or {}).values(), *(e.shopper or {}).values()]
        if isinstance(value, str) and value.startswith(pii.PREFIX)
    }
    assert ids == {str(ada.pk)}


def test_a_sealed_value_opens_in_no_other_field_or_store(store, credentials):
    append(store, new_event("cart.item_added", "a", item("X")), contact("a"))
    ada = CartEvent.objects.get(store=store, cart="a", type="checkout.contact_captured")
    sealed = ada.data["email"]

    # moved into another field, or into another store's event, it does not open
    ada.data = {**ada.data, "phone": sealed}
    pii.events_reveal([ada])
    assert (ada.data["email"], ada.data["phone"]) == (EMAIL, None)
    other = Store.objects.create(name="Other", webhook_secret_nonce="n")
    append(other, new_event("cart.item_added", "b", item("X")), contact("b", "bob@example.com"))
    bob = CartEvent.objects.get(store=other, cart="b", type="checkout.contact_captured")
    bob.data = {**bob.data, "email": sealed}
    pii.events_reveal([bob])
    assert bob.data["email"] is None


def test_erasure_destroys_the_key_clears_the_carts_and_changes_no_event_row(store):
    append(store, with_shopper("cart.item_added", "a", item("X"), email=EMAIL), contact("a"))
    append(store, new_event("cart.item_added", "b", item("Y")), contact("b"))
    append(store, new_event("cart.item_added", "c", item("Y")), contact("c", "bob@example.com"))
    before = raw_rows(store)

    erasure = privacy.shopper_erase(store_id=store.pk, shopper=privacy.Shopper(email=EMAIL))

    assert (sorted(erasure.carts), erasure.keys) == (["a", "b"], 1)
    # no event row changed; one shopper.erased per cart was appended
    after = raw_rows(store)
    assert after[: len(before)] == before
    assert [r for r in after[len(before) :] if "shopper.erased" in r] == after[len(before) :]
    assert len(after) - len(before) == 2
    # the key is gone, the rows that used it no longer open
    key = ShopperKey.objects.get(store=store, erased_at__isnull=False)
    assert key.key is None and key.subject == ""
    events = selectors.cart_events_list(store_id=store.pk, token="a")
    assert events[0].shopper == {"email": None}
    assert events[1].data["email"] is None and events[1].data["phone"] is None
    # the carts show no contact; Bob's is untouched
    states = {c.token: (c.email, c.phone) for c in CartState.objects.filter(store=store)}
    assert states == {"a": ("", ""), "b": ("", ""), "c": ("bob@example.com", PHONE)}
    # and erasing again finds nothing left
    again = privacy.shopper_erase(store_id=store.pk, shopper=privacy.Shopper(email=EMAIL))
    assert (again.carts, again.keys) == ([], 0)


def test_a_rebuilt_cart_state_shows_the_erasure_and_keeps_everything_else(store):
    append(store, new_event("cart.item_added", "a", item("X", 2)), contact("a"))
    append(
        store, new_event("order.placed", "a", {"order_id": "o-1", "total": 2000, "currency": "EUR"})
    )
    before = CartState.objects.get(store=store, token="a")
    privacy.shopper_erase(store_id=store.pk, shopper=privacy.Shopper(email=EMAIL))

    projectors.rebuild(projectors.CART_STATE)

    after = CartState.objects.get(store=store, token="a")
    assert (after.email, after.phone, after.consent) == ("", "", {})
    assert (after.status, after.value, after.item_count, after.order_total) == (
        before.status,
        before.value,
        before.item_count,
        before.order_total,
    )
    assert after.last_activity_at == before.last_activity_at  # erasure is not activity
    assert "email_sha256" not in after.features or after.features["email_sha256"] is None


def test_erasure_by_the_shops_shopper_id_covers_every_address_of_its_carts(store):
    append(store, with_shopper("cart.item_added", "a", item("X"), id="cust-9"), contact("a"))
    append(
        store,
        with_shopper("cart.item_added", "b", item("X"), id="cust-9"),
        contact("b", "ada@work.example"),
    )
    append(store, new_event("cart.item_added", "c", item("X")), contact("c"))  # guest, same email

    erasure = privacy.shopper_erase(store_id=store.pk, shopper=privacy.Shopper(shopper_id="cust-9"))

    assert (sorted(erasure.carts), erasure.keys) == (["a", "b", "c"], 2)
    assert set(CartState.objects.filter(store=store).values_list("email", flat=True)) == {""}


def test_a_shopper_who_returns_after_erasure_gets_a_new_key(store):
    append(store, new_event("cart.item_added", "a", item("X")), contact("a"))
    privacy.shopper_erase(store_id=store.pk, shopper=privacy.Shopper(email=EMAIL))

    append(store, new_event("cart.item_added", "b", item("X")), contact("b"))

    assert ShopperKey.objects.filter(store=store, erased_at__isnull=True).count() == 1
    assert selectors.cart_events_list(store_id=store.pk, token="b")[1].data["email"] == EMAIL
    assert selectors.cart_events_list(store_id=store.pk, token="a")[1].data["email"] is None


def test_the_browser_cannot_post_a_shopper_erased_event(post_events):
    response = post_events(
        {
            "id": "b8a4c7f0-5d7e-4d1e-9c55-9a0e6a1c2f10",
            "cart": "x",
            "type": "shopper.erased",
            "occurred_at": T0.isoformat(),
            "data": {},
        }
    )
    assert response.status_code == 400, response.content
    assert "appended by the system" in response.content.decode()


def test_with_encryption_off_events_stay_in_clear(store, settings):
    settings.CARTS_PII_ENCRYPTION = False
    append(store, new_event("cart.item_added", "a", item("X")), contact("a"))
    assert EMAIL in "\n".join(raw_rows(store))
    assert not ShopperKey.objects.exists()


# Retention ---------------------------------------------------------------------------------------


def test_retention_erases_shoppers_idle_longer_than_the_stores_setting(store):
    now = T0 + timedelta(days=40)
    services.events_append(
        store_id=store.pk,
        events=[new_event("cart.item_added", "old", item("X")), contact("old")],
        source=Source.server("test"),
        now=T0,
    )
    services.events_append(
        store_id=store.pk,
        events=[new_event("cart.item_added", "new", item("X")), contact("new", "bob@example.com")],
        source=Source.server("test"),
        now=now - timedelta(days=1),
    )
    assert privacy.retention_sweep(now=now) == 0  # no setting: kept

    Store.objects.filter(pk=store.pk).update(pii_retention_days=30)
    assert privacy.retention_sweep(now=now) == 1

    states = dict(CartState.objects.filter(store=store).values_list("token", "email"))
    assert states == {"old": "", "new": "bob@example.com"}
    assert ShopperKey.objects.filter(store=store, erased_at__isnull=True).count() == 1


@pytest.mark.parametrize("days_idle, erased", [(29, False), (31, True)])
def test_retention_counts_idleness_by_the_servers_clock_of_the_last_activity(
    store, days_idle, erased
):
    Store.objects.filter(pk=store.pk).update(pii_retention_days=30)
    now = T0 + timedelta(days=100)
    services.events_append(
        store_id=store.pk,
        events=[new_event("cart.item_added", "a", item("X")), contact("a")],
        source=Source.server("test"),
        now=T0,
    )
    # later activity without any personal data keeps the shopper
    services.events_append(
        store_id=store.pk,
        events=[new_event("page.viewed", "a", {"url": "/p", "page_type": "product"})],
        source=Source.server("test"),
        now=now - timedelta(days=days_idle),
    )
    privacy.retention_sweep(now=now)
    assert (CartState.objects.get(store=store, token="a").email == "") is erased


def test_a_cart_given_the_address_while_the_erasure_runs_is_erased_too(store, monkeypatch):
    append(store, new_event("cart.item_added", "a", item("X")), contact("a"))
    found = privacy._carts
    calls: list[int] = []

    def carts_then_a_racing_append(*args, **kwargs):
        result = found(*args, **kwargs)
        if not calls:  # the shopper fills in another cart between the scan and the erasure
            append(store, new_event("cart.item_added", "late", item("X")), contact("late"))
        calls.append(1)
        return result

    monkeypatch.setattr(privacy, "_carts", carts_then_a_racing_append)
    erasure = privacy.shopper_erase(store_id=store.pk, shopper=privacy.Shopper(email=EMAIL))

    assert sorted(erasure.carts) == ["a", "late"]
    assert set(CartState.objects.filter(store=store).values_list("email", flat=True)) == {""}
    assert not ShopperKey.objects.filter(store=store, erased_at__isnull=True).exists()


def test_one_stores_unreadable_retention_does_not_stop_the_sweep(store, credentials):
    other = Store.objects.create(name="Other", webhook_secret_nonce="n")
    Store.objects.filter(pk=store.pk).update(pii_retention_days=10**9)  # past any date
    Store.objects.filter(pk=other.pk).update(pii_retention_days=30)
    services.events_append(
        store_id=other.pk,
        events=[new_event("cart.item_added", "a", item("X")), contact("a")],
        source=Source.server("test"),
        now=T0,
    )

    assert privacy.retention_sweep(now=T0 + timedelta(days=31)) == 1
    assert CartState.objects.get(store=other, token="a").email == ""


# Review findings ---------------------------------------------------------------------------------


def test_erasure_by_shopper_id_destroys_an_address_given_only_in_the_envelope(store):
    # the account's address travels in the envelope; the contact form gives another one
    append(
        store,
        with_shopper("cart.item_added", "a", item("X"), id="cust-1", email="account@example.com"),
        contact("a", "typed@example.com"),
    )

    erasure = privacy.shopper_erase(store_id=store.pk, shopper=privacy.Shopper(shopper_id="cust-1"))

    assert erasure.keys == 2
    events = selectors.cart_events_list(store_id=store.pk, token="a")
    assert events[0].shopper == {"id": "cust-1", "email": None}
    assert events[1].data["email"] is None


def test_a_phone_belongs_to_the_address_it_came_with(store):
    append(store, new_event("cart.item_added", "a", item("X")), contact("a"))  # Ada, her phone
    append(store, new_event("checkout.contact_captured", "a", {"email": "bob@example.com"}))
    append(store, new_event("checkout.contact_captured", "a", {"email": "BOB@example.com"}))
    assert CartState.objects.get(store=store, token="a").phone == ""

    append(
        store,
        new_event("checkout.contact_captured", "a", {"email": "b@example.com", "phone": PHONE}),
    )
    append(store, new_event("checkout.contact_captured", "a", {"email": "B@example.com"}))
    assert CartState.objects.get(store=store, token="a").phone == PHONE  # the same address


def test_retention_spares_a_shopper_who_came_back_after_the_idle_scan(store):
    services.events_append(
        store_id=store.pk,
        events=[new_event("cart.item_added", "a", item("X")), contact("a")],
        source=Source.server("test"),
        now=T0,
    )
    cutoff = T0 + timedelta(days=1)
    # she is back (a new cart, her address again) before the erasure runs
    services.events_append(
        store_id=store.pk,
        events=[new_event("cart.item_added", "b", item("X")), contact("b")],
        source=Source.server("test"),
        now=cutoff + timedelta(hours=1),
    )

    erasure = privacy.shopper_erase(
        store_id=store.pk,
        shopper=privacy.Shopper(email=EMAIL),
        reason=privacy.RETENTION,
        now=cutoff + timedelta(days=1),
        idle_before=cutoff,
    )

    assert (erasure.carts, erasure.keys) == (["a"], 0)  # the old cart; her key is in use
    assert CartState.objects.get(store=store, token="b").email == EMAIL
    assert selectors.cart_events_list(store_id=store.pk, token="b")[1].data["email"] == EMAIL


def test_a_key_used_after_the_sweep_read_it_as_idle_is_not_destroyed(store):
    services.events_append(
        store_id=store.pk,
        events=[new_event("cart.item_added", "a", item("X")), contact("a")],
        source=Source.server("test"),
        now=T0,
    )
    cutoff = T0 + timedelta(days=1)
    services.events_append(  # the append that races the sweep
        store_id=store.pk,
        events=[new_event("cart.item_added", "b", item("X")), contact("b")],
        source=Source.server("test"),
        now=cutoff + timedelta(minutes=1),
    )
    assert (
        privacy._keys_destroy(
            store.pk, now=cutoff, subjects=[pii.subject_of(EMAIL)], idle_before=cutoff
        )
        == 0
    )


def test_the_log_readers_survive_malformed_sealed_values(store):
    append(store, new_event("cart.item_added", "a", item("X")), contact("a"))
    event = CartEvent.objects.get(store=store, type="checkout.contact_captured")
    for bad in ["enc1:²:AAAA", "enc1:", "enc1:12", "enc1:99999999999999999999:x", "enc1:1:%%%"]:
        event.data = {**event.data, "email": bad}
        pii.events_reveal([event])
        assert event.data["email"] is None
    event.data, event.shopper = ["not", "a", "dict"], {"email": "enc1:1:AAAA"}
    pii.events_reveal([event])
    assert event.shopper == {"email": None}


def test_a_reaction_cannot_append_personal_data_unsealed(store):
    def react(reacting):
        return [with_shopper("campaign.enrolled", "a", {}, email=EMAIL)]

    with pytest.raises(ValueError, match="no personal data"):
        services.events_append(
            store_id=store.pk,
            events=[new_event("cart.item_added", "a", item("X"))],
            source=Source.server("test"),
            react=react,
        )


def test_the_idempotency_hash_confirms_no_guessed_address_and_retries_stay_duplicates(store):
    first = contact("a")
    append(store, new_event("cart.item_added", "a", item("X")), first)
    stored = CartEvent.objects.get(store=store, event_id=first.event_id)
    # the hash of the body in clear is not what is stored: a dump cannot test a guess with it
    assert stored.body_hash != first.body_hash()
    # a retry while the shopper's key lives is a duplicate; another body under the id a conflict
    assert append(store, first)[0].duplicate
    with pytest.raises(EventIdConflict):
        append(store, dataclasses.replace(first, data={**first.data, "phone": "+15550100"}))

    privacy.shopper_erase(store_id=store.pk, shopper=privacy.Shopper(email=EMAIL))

    # after the erasure a retry of the same event is still a duplicate by its id
    retried = append(store, first)[0]
    assert (retried.duplicate, retried.position) == (True, stored.position)


def test_erasure_takes_its_locks_in_the_appends_order_so_a_concurrent_append_does_not_deadlock(
    committed_store,
):
    """An append of another of the shopper's carts holds her key (its key upsert) and then waits
    for the store's log head. Erasure must not be holding that head while it waits for the key:
    it takes the carts, then the keys, then the head, as every append does."""
    import threading
    import time

    from django.db import connection as conn
    from django.db import transaction

    store, _ = committed_store
    email = f"dead.lock.{store.pk}@example.com"
    append(store, contact("erase-me", email))
    subject = pii.subject_of(email)
    held, errors = threading.Event(), []

    def an_append_holding_the_key() -> None:
        try:
            with transaction.atomic(), conn.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '10s'")
                cursor.execute(
                    "SELECT 1 FROM carts_shopperkey WHERE store_id = %s AND subject = %s"
                    " AND erased_at IS NULL FOR UPDATE",
                    [store.pk, subject],
                )
                held.set()
                time.sleep(0.7)  # the erasure is under way and waits for the key
                cursor.execute(
                    "SELECT 1 FROM carts_loghead WHERE store_id = %s FOR UPDATE", [store.pk]
                )
        except Exception as exc:  # a deadlock is detected here or in the erasure
            errors.append(exc)
        finally:
            held.set()
            conn.close()

    def erasure() -> None:
        try:
            result = privacy.shopper_erase(store_id=store.pk, shopper=privacy.Shopper(email=email))
            assert (result.carts, result.keys) == (["erase-me"], 1)
        except Exception as exc:
            errors.append(exc)
        finally:
            conn.close()

    holder = threading.Thread(target=an_append_holding_the_key, daemon=True)
    holder.start()
    assert held.wait(10)
    eraser = threading.Thread(target=erasure, daemon=True)
    eraser.start()
    holder.join(30)
    eraser.join(30)

    assert not holder.is_alive() and not eraser.is_alive()
    assert errors == []
    assert CartState.objects.get(store=store, token="erase-me").email == ""
