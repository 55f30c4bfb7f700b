"""Shoppers' erasure and export over HTTP, by command, and the campaigns' section of an export
(issue 13; carts/privacy.py is the service, tests/carts/test_privacy.py its own tests)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client
from rest_framework.test import APIClient

from campaigns import coupons
from campaigns.models import Campaign, Coupon, Enrollment, Step, Suppression, Tier
from carts import identity, pii, services
from carts.models import CartEvent, CartState, ShopperKey, Store, StoreMember
from carts.sources import Source
from tests.conftest import item, new_event

EMAIL = "Ada.Lovelace@Example.com"
PHONE = "+4915112345678"
SHOPPER_ID = "gid://shopify/Customer/7 01"  # slashes and a space: Shopify's ids have them
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def contact(cart: str, email: str = EMAIL):
    return new_event(
        "checkout.contact_captured",
        cart,
        {"email": email, "phone": PHONE, "consent": {"email": True}},
    )


def shoppers_append(store: Store) -> None:
    """Ada: a customer cart (the shop's id) and a guest cart (her address alone); Bob: a cart."""
    services.events_append(
        store_id=store.pk,
        events=[
            new_event("cart.item_added", "ada-customer", item("X"), shopper={"id": SHOPPER_ID}),
            contact("ada-customer"),
            new_event("cart.item_added", "ada-guest", item("Y")),
            contact("ada-guest", EMAIL.upper()),
            new_event("cart.item_added", "bob", item("Z")),
            contact("bob", "bob@example.com"),
        ],
        source=Source.server("test"),
    )


def emails(store: Store) -> dict[str, str]:
    return dict(CartState.objects.filter(store=store).values_list("token", "email"))


ALL_KEPT = {"ada-customer": EMAIL, "ada-guest": EMAIL.upper(), "bob": "bob@example.com"}
ADA_ERASED = {"ada-customer": "", "ada-guest": "", "bob": "bob@example.com"}


def by_id(shopper_id: str) -> str:
    return f"/api/v1/shoppers/{quote(shopper_id, safe='')}"


def erase_by_id(client: APIClient, shopper_id: str = SHOPPER_ID) -> Any:
    return client.delete(by_id(shopper_id))


def export_by_id(client: APIClient, shopper_id: str = SHOPPER_ID) -> Any:
    return client.get(f"{by_id(shopper_id)}/export")


def erase_by_body(client: APIClient, body: Any) -> Any:
    return client.post("/api/v1/shoppers/erase", body, format="json")


def export_by_body(client: APIClient, body: Any) -> Any:
    return client.post("/api/v1/shoppers/export", body, format="json")


def key_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


# Erasure -----------------------------------------------------------------------------------------


def test_delete_by_the_shops_id_erases_every_address_of_its_carts_once(api, store):
    shoppers_append(store)

    first = erase_by_id(api)
    again = erase_by_id(api)

    assert (first.status_code, first.json()) == (200, {"erased": True, "carts": 2, "keys": 1})
    assert emails(store) == ADA_ERASED
    assert CartEvent.objects.filter(store=store, type="shopper.erased").count() == 2
    assert (again.status_code, again.json()) == (200, {"erased": True, "carts": 0, "keys": 0})
    assert CartEvent.objects.filter(store=store, type="shopper.erased").count() == 2


def test_delete_of_an_unknown_id_is_200_with_zeros_and_changes_nothing(api, store):
    shoppers_append(store)
    events = CartEvent.objects.filter(store=store).count()

    response = erase_by_id(api, "cust-unknown")

    assert (response.status_code, response.json()) == (
        200,
        {"erased": True, "carts": 0, "keys": 0},
    )
    assert emails(store) == ALL_KEPT
    assert CartEvent.objects.filter(store=store).count() == events


def test_an_id_with_slashes_is_named_by_the_path_encoded_or_not(api, store):
    shoppers_append(store)

    assert export_by_id(api).json()["shopper"]["id"] == SHOPPER_ID
    raw = api.delete("/api/v1/shoppers/gid://shopify/Customer/7%2001")

    assert raw.json() == {"erased": True, "carts": 2, "keys": 1}
    assert emails(store) == ADA_ERASED


@pytest.mark.parametrize(
    "body, carts",
    [
        ({"email": EMAIL.lower()}, 2),  # any case: both of Ada's carts
        ({"email": "  " + EMAIL + " "}, 2),
        ({"id": SHOPPER_ID}, 2),
        ({"email": EMAIL, "id": SHOPPER_ID}, 2),
        ({"email": "bob@example.com"}, 1),
    ],
)
def test_post_erase_names_the_shopper_in_the_body(api, store, body, carts):
    shoppers_append(store)

    first = erase_by_body(api, body)
    again = erase_by_body(api, body)

    assert (first.status_code, first.json()) == (200, {"erased": True, "carts": carts, "keys": 1})
    assert (again.status_code, again.json()) == (200, {"erased": True, "carts": 0, "keys": 0})
    if carts == 2:
        assert emails(store) == ADA_ERASED
        assert ShopperKey.objects.filter(store=store, erased_at__isnull=True).count() == 1  # Bob


def test_the_email_never_goes_in_a_url(api, store):
    shoppers_append(store)
    schema = APIClient().get("/api/schema/?format=json").json()

    # no operation on shoppers takes an address as a path or query parameter
    for path, operations in schema["paths"].items():
        if path.startswith("/api/v1/shoppers/"):
            for operation in operations.values():
                names = {p["name"] for p in operation.get("parameters", [])}
                assert "email" not in names and "email" not in path, path
    # an address in the path is taken as a shop's id: the guest, known by it alone, is not erased
    assert erase_by_id(api, EMAIL).json() == {"erased": True, "carts": 0, "keys": 0}
    # and one in the query string is not read: the body must name the shopper
    query = api.post(f"/api/v1/shoppers/erase?email={quote(EMAIL)}", {}, format="json")
    assert query.status_code == 400
    assert emails(store) == ALL_KEPT


# Export ------------------------------------------------------------------------------------------


def test_get_export_by_id_has_the_carts_with_their_events_in_clear(api, store):
    shoppers_append(store)

    response = export_by_id(api)

    assert response.status_code == 200
    body = response.json()
    assert body["store"] == store.pk
    assert body["shopper"] == {"email": None, "id": SHOPPER_ID}
    carts = {c["token"]: c for c in body["carts"]}
    assert set(carts) == {"ada-customer", "ada-guest"}  # the guest cart by her address
    assert carts["ada-guest"]["email"] == EMAIL.upper()
    contact_event = carts["ada-customer"]["events"][1]
    assert contact_event["type"] == "checkout.contact_captured"
    assert (contact_event["data"]["email"], contact_event["data"]["phone"]) == (EMAIL, PHONE)
    assert carts["ada-customer"]["events"][0]["shopper"] == {"id": SHOPPER_ID}
    assert body["campaigns"] == {"enrollments": [], "steps": [], "coupons": [], "suppressions": []}
    assert "bob" not in response.content.decode()


def test_post_export_by_email_and_after_erasure(api, store):
    shoppers_append(store)

    before = export_by_body(api, {"email": EMAIL})
    erase_by_body(api, {"email": EMAIL})
    by_email = export_by_body(api, {"email": EMAIL})
    by_id_ = export_by_body(api, {"id": SHOPPER_ID})

    assert before.status_code == 200
    assert before.json()["shopper"] == {"email": EMAIL.lower(), "id": None}
    assert {c["token"] for c in before.json()["carts"]} == {"ada-customer", "ada-guest"}
    # erased: no cart knows the address any more; the shop's id still names its cart, which shows
    # no contact, whose sealed fields no longer open, and which lists the erasure
    assert (by_email.status_code, by_email.json()["carts"]) == (200, [])
    [cart] = by_id_.json()["carts"]
    assert (cart["token"], cart["email"], cart["phone"]) == ("ada-customer", "", "")
    assert cart["events"][1]["data"]["email"] is None
    assert cart["events"][-1]["type"] == "shopper.erased"
    assert EMAIL.lower() not in by_id_.content.decode().lower()
    unknown = export_by_body(api, {"email": "nobody@example.com"})
    assert (unknown.status_code, unknown.json()["carts"]) == (200, [])
    assert export_by_id(api, "cust-unknown").json()["carts"] == []


# Bad input ---------------------------------------------------------------------------------------

BAD_BODIES = [
    ({}, {"non_field_errors": ["Give the shopper's email, id, or both."]}),
    ({"email": "not-an-address"}, {"email": ["Enter a valid email address."]}),
    ({"email": None}, {"email": ["This field may not be null."]}),
    ({"email": ""}, {"email": ["String should have at least 1 character."]}),
    ({"id": "   "}, {"id": ["String should have at least 1 character."]}),
    ({"id": "x" * 129}, {"id": ["String should have at most 128 characters."]}),
    ({"id": "a\x00b"}, {"id": ["Null characters are not allowed."]}),
    ({"id": 7}, {"id": ["Input should be a valid string."]}),  # the schema says a string
    ({"email": EMAIL, "name": "Ada"}, {"name": ["Unknown field."]}),
    ([EMAIL], {"non_field_errors": ["Expected a JSON object."]}),
    ("ada@example.com", {"non_field_errors": ["Expected a JSON object."]}),
]


@pytest.mark.parametrize("send", [erase_by_body, export_by_body], ids=["erase", "export"])
@pytest.mark.parametrize("body, errors", BAD_BODIES)
def test_a_bad_body_is_a_400_with_field_messages(api, store, send, body, errors):
    shoppers_append(store)

    response = send(api, body)

    assert response.status_code == 400, response.content
    assert response.json() == errors
    assert emails(store) == ALL_KEPT


@pytest.mark.parametrize("path", ["/api/v1/shoppers/erase", "/api/v1/shoppers/export"])
def test_a_body_that_is_not_json_is_a_400(api, path):
    response = api.post(path, "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


@pytest.mark.parametrize(
    "raw, message",
    [
        ("%20%20", "String should have at least 1 character."),
        ("x" * 129, "String should have at most 128 characters."),
        ("a%00b", "Null characters are not allowed."),
    ],
    ids=["blank", "long", "nul"],
)
@pytest.mark.parametrize("method", ["delete", "export"])
def test_a_bad_id_in_the_path_is_a_400(api, store, raw, message, method):
    shoppers_append(store)
    path = f"/api/v1/shoppers/{raw}"

    response = api.delete(path) if method == "delete" else api.get(f"{path}/export")

    assert (response.status_code, response.json()) == (400, {"id": [message]})
    assert emails(store) == ALL_KEPT


# Keys and tenants --------------------------------------------------------------------------------

ENDPOINTS = {
    "DELETE {id}": lambda c: erase_by_id(c),
    "GET {id}/export": lambda c: export_by_id(c),
    "POST erase": lambda c: erase_by_body(c, {"email": EMAIL}),
    "POST export": lambda c: export_by_body(c, {"email": EMAIL}),
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize(
    "key, detail",
    [
        (None, "Authentication credentials were not provided."),
        ("publishable", "Unknown or revoked key."),
        ("revoked", "Unknown or revoked key."),
        ("sk_not_a_real_key", "Unknown or revoked key."),
    ],
    ids=["missing", "publishable", "revoked", "unknown"],
)
def test_only_the_stores_secret_key_erases_or_exports(credentials, store, endpoint, key, detail):
    shoppers_append(store)
    if key == "publishable":
        key = credentials.publishable_key
    elif key == "revoked":
        services.store_keys_rotate(store=store, now=datetime.now(UTC))
        key = credentials.secret_key
    client = key_client(key) if key else APIClient()

    response = ENDPOINTS[endpoint](client)

    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert emails(store) == ALL_KEPT


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_another_stores_key_finds_no_such_shopper_and_changes_nothing(api, store, endpoint):
    shoppers_append(store)
    other = services.store_create(name="Other shop")
    # the other store has a cart of the same shopper (the same address and shop id) of its own
    services.events_append(
        store_id=other.store_id,
        events=[
            new_event("cart.item_added", "theirs", item("Q"), shopper={"id": SHOPPER_ID}),
            contact("theirs"),
        ],
        source=Source.server("test"),
    )
    keys = list(ShopperKey.objects.filter(store=store).values())
    events = CartEvent.objects.filter(store=store).count()

    response = ENDPOINTS[endpoint](key_client(other.secret_key))

    assert response.status_code == 200
    body = response.json()
    if "erase" in endpoint or endpoint.startswith("DELETE"):
        assert body == {"erased": True, "carts": 1, "keys": 1}  # its own shopper's cart
        assert emails(Store.objects.get(pk=other.store_id)) == {"theirs": ""}
    else:
        assert [c["token"] for c in body["carts"]] == ["theirs"]
        assert body["store"] == other.store_id
    # this store's shopper, carts, keys and log are as they were
    assert "ada-" not in response.content.decode()
    assert emails(store) == ALL_KEPT
    assert list(ShopperKey.objects.filter(store=store).values()) == keys
    assert CartEvent.objects.filter(store=store).count() == events
    assert ENDPOINTS[endpoint](api).status_code == 200  # the control: its own key reaches them


# The command -------------------------------------------------------------------------------------


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("erase_shopper", *args, stdout=out)
    return out.getvalue()


def test_the_command_erases_by_email_or_shopper_id(store):
    shoppers_append(store)

    by_email = json.loads(command("--store", str(store.pk), "--email", "bob@example.com"))
    by_id_ = json.loads(command("--store", str(store.pk), "--shopper-id", SHOPPER_ID))
    again = json.loads(command("--store", str(store.pk), "--shopper-id", SHOPPER_ID))

    assert by_email == {"erased": True, "carts": 1, "keys": 1}
    assert by_id_ == {"erased": True, "carts": 2, "keys": 1}
    assert again == {"erased": True, "carts": 0, "keys": 0}
    assert set(emails(store).values()) == {""}


def test_the_command_exports_without_erasing(store):
    shoppers_append(store)

    export = json.loads(command("--store", str(store.pk), "--email", EMAIL, "--export"))

    assert {c["token"] for c in export["carts"]} == {"ada-customer", "ada-guest"}
    assert export["carts"][0]["events"][1]["data"]["email"] in (EMAIL, EMAIL.upper())
    assert "campaigns" in export
    assert emails(store) == ALL_KEPT


@pytest.mark.parametrize(
    "args, message",
    [
        (["--store", "999999", "--email", EMAIL], "No store with id 999999."),
        (["--email", EMAIL], "--store"),
        ([], "Name the shopper by --email or by --shopper-id (one of them)."),
        (["--email", EMAIL, "--shopper-id", "x"], "(one of them)"),
        (["--email", "not-an-address"], "--email: Enter a valid email address."),
        (["--shopper-id", "  "], "--shopper-id: String should have at least 1 character."),
    ],
    ids=["unknown store", "no store", "neither", "both", "bad email", "blank id"],
)
def test_the_command_refuses_what_names_no_one(store, args, message):
    shoppers_append(store)
    if "--store" not in args and args != ["--email", EMAIL]:
        args = ["--store", str(store.pk), *args]

    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        command(*args)

    assert emails(store) == ALL_KEPT


# The campaigns' section --------------------------------------------------------------------------


def campaign_rows(store: Store, cart: str, label: str) -> dict[str, Any]:
    """An enrollment, an email step, a discount code (through campaigns' coupon service) and a
    suppression for the cart's shopper, as running a campaign leaves them."""
    state = CartState.objects.get(store=store, token=cart)
    shopper = identity.cart_shopper_key(shopper_id=state.shopper_id, email=state.email) or ""
    campaign = Campaign.objects.create(store=store, name=f"Win back {label}", holdout_share=0)
    email_tier = Tier.objects.create(
        campaign=campaign, position=1, channel=Tier.Channel.EMAIL, min_score=0.0
    )
    discount_tier = Tier.objects.create(
        campaign=campaign,
        position=2,
        channel=Tier.Channel.DISCOUNT,
        offer_kind=Tier.OfferKind.PERCENT_DISCOUNT,
        discount_min=5,
        discount_max=20,
        min_score=0.0,
        delay_minutes=1440,
    )
    enrollment = Enrollment.objects.create(
        store=store,
        cart=cart,
        campaign=campaign,
        shopper=shopper,
        cart_value=state.value,
        currency=state.currency,
        abandoned_at=NOW,
    )
    step = Step.objects.create(
        store=store,
        cart=cart,
        enrollment=enrollment,
        tier=email_tier,
        channel=email_tier.channel,
        shopper=shopper,
        due_at=NOW + timedelta(hours=1),
        status=Step.Status.SENT,
        reason="sent",
        finished_at=NOW + timedelta(hours=1, seconds=3),
    )
    with transaction.atomic():
        issued = coupons.coupon_issue(
            store_id=store.pk,
            cart=cart,
            shopper=shopper,
            step_id=None,
            tier=discount_tier,
            cart_value=state.value,
            currency=state.currency,
            score=0.8,
            price_sensitivity=0.5,
            gross_margin_percent=40,
            now=NOW,
        )
    assert issued.coupon is not None
    suppression = Suppression.objects.create(
        store=store, shopper=shopper, kind=Suppression.Kind.UNSUBSCRIBED, created_at=NOW
    )
    return {"campaign": campaign, "step": step, "coupon": issued.coupon, "sup": suppression}


def test_the_export_lists_the_shoppers_enrollments_steps_coupons_and_suppressions(api, store):
    shoppers_append(store)
    ada = campaign_rows(store, "ada-guest", "Ada")
    bob = campaign_rows(store, "bob", "Bob")

    section = export_by_body(api, {"email": EMAIL}).json()["campaigns"]

    coupon: Coupon = ada["coupon"]
    assert section == {
        "enrollments": [
            {
                "cart": "ada-guest",
                "campaign": "Win back Ada",
                "holdout": False,
                "abandoned_at": "2026-12-01T12:00:00+00:00",
            }
        ],
        "steps": [
            {
                "cart": "ada-guest",
                "channel": "email",
                "status": "sent",
                "reason": "sent",
                "due_at": "2026-12-01T13:00:00+00:00",
                "finished_at": "2026-12-01T13:00:03+00:00",
            }
        ],
        "coupons": [
            {
                "cart": "ada-guest",
                "code": coupon.code,
                "kind": coupon.kind,
                "amount": coupon.amount,
                "currency": "EUR",
                "issued_at": "2026-12-01T12:00:00+00:00",
                "expires_at": "2026-12-03T12:00:00+00:00",
                "redeemed_at": None,
                "order_id": "",
            }
        ],
        "suppressions": [{"kind": "unsubscribed", "created_at": "2026-12-01T12:00:00+00:00"}],
    }
    assert coupon.amount > 0
    assert bob["coupon"].code not in json.dumps(section)


def test_the_campaigns_section_is_the_registered_functions_with_iso_times(store):
    from campaigns import privacy as campaigns_privacy

    shoppers_append(store)
    ada = campaign_rows(store, "ada-guest", "Ada")
    shopper = identity.cart_shopper_key(shopper_id="", email=EMAIL) or ""

    section = campaigns_privacy.export_section(store.pk, [], [shopper])  # by shopper key alone

    assert [c["code"] for c in section["coupons"]] == [ada["coupon"].code]
    assert section["steps"][0]["due_at"] == (NOW + timedelta(hours=1)).isoformat()
    json.dumps(section)  # JSON as it is
    assert campaigns_privacy.export_section(store.pk, ["bob"], [])["suppressions"] == []
    # another store's rows never: the same carts and keys in a store without any
    other = services.store_create(name="Other shop")
    empty = campaigns_privacy.export_section(other.store_id, ["ada-guest"], [shopper])
    assert empty == {"enrollments": [], "steps": [], "coupons": [], "suppressions": []}
    assert pii.subject_of(EMAIL) == shopper  # the key's subject is the shopper key's address hash


# The admin ---------------------------------------------------------------------------------------


def _change(client: Client, store: Store, days: str) -> Any:
    return client.post(
        f"/admin/carts/store/{store.pk}/change/",
        {
            "name": store.name,
            "domain": store.domain,
            "allowed_origins": "",
            "rate_limit_per_minute": "",
            "pii_retention_days": days,
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
            "members-TOTAL_FORMS": "0",
            "members-INITIAL_FORMS": "0",
        },
    )


def test_the_store_admin_shows_and_edits_the_retention(store):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-12345678")
    client = Client()
    client.force_login(root)

    page = client.get(f"/admin/carts/store/{store.pk}/change/")
    saved = _change(client, store, "30")
    too_long = _change(client, store, "99999999")
    zero = _change(client, store, "0")

    assert page.status_code == 200 and 'name="pii_retention_days"' in page.content.decode()
    assert saved.status_code == 302, saved.content
    assert Store.objects.get(pk=store.pk).pii_retention_days == 30
    for refused in (too_long, zero):
        assert refused.status_code == 200
        assert "pii_retention_days" in refused.context["adminform"].form.errors
    assert Store.objects.get(pk=store.pk).pii_retention_days == 30
    assert _change(client, store, "").status_code == 302
    assert Store.objects.get(pk=store.pk).pii_retention_days is None


def test_a_stores_merchant_still_cannot_open_the_store_admin(store):
    merchant = get_user_model().objects.create_user("merchant", password="pw-1", is_staff=True)
    StoreMember.objects.create(store=store, user=merchant, role=StoreMember.Role.MERCHANT)
    client = Client()
    client.force_login(merchant)

    assert client.get(f"/admin/carts/store/{store.pk}/change/").status_code == 403
    assert _change(client, store, "1").status_code == 403
    assert Store.objects.get(pk=store.pk).pii_retention_days is None


def test_a_store_created_in_the_admin_keeps_its_retention(db):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-12345678")
    client = Client()
    client.force_login(root)

    response = client.post(
        "/admin/carts/store/add/",
        {
            "name": "Retaining shop",
            "domain": "r.example",
            "pii_retention_days": "90",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.content
    assert Store.objects.get(name="Retaining shop").pii_retention_days == 90


def test_the_command_reads_the_address_from_standard_input(store):
    shoppers_append(store)
    out = io.StringIO()

    call_command(
        "erase_shopper",
        "--store",
        str(store.pk),
        "--email",
        "-",
        stdin=io.StringIO("bob@example.com\n"),
        stdout=out,
    )

    assert json.loads(out.getvalue()) == {"erased": True, "carts": 1, "keys": 1}
