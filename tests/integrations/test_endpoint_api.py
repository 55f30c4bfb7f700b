"""/api/v1/webhook-endpoints: made, read, changed and deleted with the store's secret key, their
deliveries listed with attempts; bad input answered 400 by field; other stores' endpoints 404."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from carts.services import store_create
from integrations import outbound
from integrations.models import Endpoint, OutboundDelivery
from tests.integrations.test_outbound import Receiver, _cart, _enrolled, _project

BASE = "/api/v1/webhook-endpoints"


def test_creating_an_endpoint_answers_its_secret_and_listing_does_not(api, store):
    created = api.post(
        BASE,
        {"url": "https://hooks.example.com/x", "event_types": ["cart.recovered", "cart.abandoned"]},
        format="json",
    )
    listed = api.get(BASE)

    endpoint = Endpoint.objects.get(store=store)
    assert created.status_code == 201
    body = created.json()
    assert body["secret"] == outbound.endpoint_secret(endpoint)
    assert body["event_types"] == ["cart.abandoned", "cart.recovered"]
    assert (body["id"], body["url"], body["description"], body["active"]) == (
        endpoint.pk,
        "https://hooks.example.com/x",
        "",
        True,
    )
    assert listed.status_code == 200
    assert [set(e) for e in listed.json()] == [
        {"id", "url", "event_types", "description", "active", "created_at"}
    ]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"url": ["Field required."]}),
        (
            {"url": "ftp://hooks.example.com/"},
            {
                "url": [
                    "Enter an http:// or https:// URL with a host name (no spaces, user or "
                    "fragment)."
                ]
            },
        ),
        (
            {"url": "http://169.254.169.254/latest"},
            {
                "url": [
                    "This host is not allowed (link-local and cloud metadata addresses are "
                    "refused, and private and loopback ones unless "
                    "INTEGRATIONS_ALLOW_PRIVATE_URLS)."
                ]
            },
        ),
        (
            {"url": "https://a.example/", "event_types": ["cart.abandoned", "order.placed"]},
            {
                "event_types": {
                    "1": [
                        "Input should be 'cart.abandoned', 'cart.recovered', "
                        "'campaign.step_sent', 'offer.accepted' or 'coupon.redeemed'."
                    ]
                }
            },
        ),
        ({"url": "https://a.example/", "secret": "x"}, {"secret": ["Unknown field."]}),
        ([], {"non_field_errors": ["Expected a JSON object."]}),
    ],
)
def test_bad_endpoints_are_refused_with_field_messages(api, body, errors):
    response = api.post(BASE, body, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert Endpoint.objects.count() == 0


def test_patch_changes_fields_and_rotates_the_secret(api, store):
    endpoint = outbound.endpoint_create(store_id=store.pk, url="https://hooks.example.com/x")
    old = outbound.endpoint_secret(endpoint)

    changed = api.patch(
        f"{BASE}/{endpoint.pk}",
        {"description": "CRM", "active": False, "event_types": ["offer.accepted"]},
        format="json",
    )
    rotated = api.patch(f"{BASE}/{endpoint.pk}", {"rotate_secret": True}, format="json")
    refused = api.patch(f"{BASE}/{endpoint.pk}", {"active": "yes"}, format="json")

    endpoint.refresh_from_db()
    assert changed.status_code == 200
    assert (changed.json()["description"], changed.json()["active"], changed.json()["secret"]) == (
        "CRM",
        False,
        "",
    )
    assert endpoint.event_types == ["offer.accepted"]
    assert rotated.json()["secret"] == outbound.endpoint_secret(endpoint) != old
    assert refused.status_code == 400
    assert refused.json() == {"active": ["Input should be a valid boolean."]}


def test_another_stores_key_gets_404_for_every_operation(store):
    endpoint = outbound.endpoint_create(store_id=store.pk, url="https://hooks.example.com/x")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {store_create(name='Other').secret_key}")
    url = f"{BASE}/{endpoint.pk}"

    answers = [
        other.get(url).status_code,
        other.patch(url, {"description": "mine"}, format="json").status_code,
        other.delete(url).status_code,
        other.get(f"{url}/deliveries").status_code,
    ]

    assert answers == [404, 404, 404, 404]
    assert other.get(BASE).json() == []
    assert Endpoint.objects.get(pk=endpoint.pk).description == ""


def test_an_id_beyond_the_column_is_404_not_500(api):
    assert api.get(f"{BASE}/99999999999999999999").status_code == 404


def test_delete_removes_the_endpoint(api, store):
    endpoint = outbound.endpoint_create(store_id=store.pk, url="https://hooks.example.com/x")

    response = api.delete(f"{BASE}/{endpoint.pk}")

    assert response.status_code == 204
    assert Endpoint.objects.filter(pk=endpoint.pk).exists() is False


def test_deliveries_are_listed_with_their_attempts(api, store):
    with Receiver() as receiver:
        endpoint = outbound.endpoint_create(store_id=store.pk, url=receiver.url)
        _enrolled(store.pk, _cart(store.pk), timezone.now())
        _project()
        receiver.plan = [500]
        t0 = timezone.now()
        outbound.deliveries_send(now=lambda: t0, rand=lambda: 0.5)
        outbound.deliveries_send(now=lambda: t0 + timedelta(seconds=5), rand=lambda: 0.5)

    response = api.get(f"{BASE}/{endpoint.pk}/deliveries")

    delivery = OutboundDelivery.objects.get(endpoint=endpoint)
    assert response.status_code == 200
    [row] = response.json()
    assert (row["webhook_id"], row["event_type"], row["status"], row["attempts"]) == (
        delivery.webhook_id,
        "cart.abandoned",
        "delivered",
        2,
    )
    assert [(t["status_code"], t["error"]) for t in row["tries"]] == [(500, "HTTP 500"), (204, "")]
    assert row["payload"] == delivery.payload
    assert api.get(f"{BASE}/{endpoint.pk}/deliveries?limit=").status_code == 400


# -- the admin ---------------------------------------------------------------------------------


def test_a_merchant_adds_an_endpoint_in_the_admin_and_sees_its_secret_there(store):
    from tests.campaigns.test_admin import logged_in, make_store, make_user

    other = make_store("Shop B")
    merchant = logged_in(make_user("merchant-w", store=store))
    stranger = logged_in(make_user("merchant-x", store=other))

    added = merchant.post(
        "/admin/integrations/endpoint/add/",
        {
            "store": store.pk,
            "url": "https://hooks.example.com/a",
            "event_types": ["cart.recovered"],
            "description": "",
            "active": "on",
        },
    )
    refused = merchant.post(
        "/admin/integrations/endpoint/add/",
        {"store": store.pk, "url": "http://169.254.169.254/x", "description": "", "active": "on"},
    )
    endpoint = Endpoint.objects.get(store=store)
    page = merchant.get(f"/admin/integrations/endpoint/{endpoint.pk}/change/")
    hidden = stranger.get(f"/admin/integrations/endpoint/{endpoint.pk}/change/")

    assert added.status_code == 302
    assert endpoint.event_types == ["cart.recovered"] and len(endpoint.secret_nonce) == 32
    assert refused.status_code == 200 and Endpoint.objects.count() == 1
    assert outbound.endpoint_secret(endpoint) in page.content.decode()
    assert hidden.status_code == 302  # not one of its stores: back to the admin index
    assert outbound.endpoint_secret(endpoint) not in hidden.content.decode()


def test_the_retry_action_sends_failed_deliveries_again_only_in_the_merchants_stores(
    store, settings
):
    from tests.campaigns.test_admin import logged_in, make_user

    settings.INTEGRATIONS_OUTBOUND_ATTEMPTS = 1
    with Receiver() as receiver:
        outbound.endpoint_create(store_id=store.pk, url=receiver.url)
        _enrolled(store.pk, _cart(store.pk), timezone.now())
        _project()
        receiver.plan = [500]
        outbound.deliveries_send(now=timezone.now)
    delivery = OutboundDelivery.objects.get()
    merchant = logged_in(make_user("merchant-r", store=store))

    listed = merchant.get("/admin/integrations/outbounddelivery/")
    page = merchant.get(f"/admin/integrations/outbounddelivery/{delivery.pk}/change/")
    response = merchant.post(
        "/admin/integrations/outbounddelivery/",
        {"action": "retry_now", "_selected_action": [delivery.pk]},
    )

    delivery.refresh_from_db()
    assert listed.status_code == 200 and delivery.webhook_id in listed.content.decode()
    assert "HTTP 500" in page.content.decode()
    assert response.status_code == 302
    assert (delivery.status, delivery.attempts, delivery.finished_at) == ("pending", 0, None)


def test_a_patch_without_a_body_or_with_a_number_for_text_is_refused(api, store):
    endpoint = outbound.endpoint_create(store_id=store.pk, url="https://hooks.example.com/x")

    empty = api.patch(f"{BASE}/{endpoint.pk}")
    number = api.post(BASE, {"url": "https://a.example/", "description": 0}, format="json")

    assert (empty.status_code, empty.json()) == (
        400,
        {"non_field_errors": ["Expected a JSON object."]},
    )
    assert (number.status_code, number.json()) == (
        400,
        {"description": ["Input should be a valid string."]},
    )
