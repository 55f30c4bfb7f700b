from django.test import Client


def test_schema_documents_the_ingestion_and_cart_endpoints(db):
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    assert set(schema["paths"]) >= {
        "/api/v1/events",
        "/api/v1/carts/{cart}",
        "/api/v1/carts/{cart}/events",
    }
    assert "post" in schema["paths"]["/api/v1/events"]


def test_browsable_docs_are_served_without_a_cdn(db):
    page = Client().get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html


def test_schema_documents_the_events_request_body_one_event_or_a_batch(db):
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]

    def resolve(node: dict) -> dict:
        return components[node["$ref"].rsplit("/", 1)[1]]

    body = schema["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    one_of = [resolve(ref) for ref in resolve(body["schema"])["oneOf"]]
    batch, one = sorted(one_of, key=lambda s: "events" not in s["properties"])
    assert resolve(batch["properties"]["events"]["items"]) == one
    assert batch["properties"]["events"]["maxItems"] == 1000
    assert one["required"] == ["id", "cart", "type", "occurred_at"]
    assert one["properties"]["occurred_at"]["format"] == "date-time"
    assert one["additionalProperties"] is False


def test_every_client_event_types_payload_schema_is_in_the_schema(db):
    # Issue 14 (UX review 2, section 1): EventIn.data was an untyped object.
    from typing import get_type_hints

    from pydantic import TypeAdapter, ValidationError

    from carts import event_types

    def _errors(typed_dict: type) -> list:
        try:
            TypeAdapter(typed_dict).validate_python({})
        except ValidationError as exc:
            return exc.errors()
        return []

    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]
    data = components["EventIn"]["properties"]["data"]

    documented = 0
    for name in event_types.CLIENT_TYPES:
        typed_dict = event_types.REGISTRY[name].schema
        assert typed_dict is not None, name
        payload = components[f"EventData.{name}"]
        assert f"`{name}`" in payload["description"]
        assert f"`{name}`" in data["description"]
        assert set(payload["properties"]) == set(get_type_hints(typed_dict)), name
        # required: what the type's validation reports missing from an empty payload
        missing = {e["loc"][0] for e in _errors(typed_dict) if e["type"] == "missing"}
        assert set(payload.get("required", [])) == missing, name
        assert payload["additionalProperties"] is False
        documented += 1
    assert documented == len(event_types.CLIENT_TYPES) >= 11
    added = components["EventData.cart.item_added"]
    assert added["properties"]["unit_price"]["type"] == "integer"  # v2: minor units
    # nested schemas resolve (checkout.contact_captured's consent)
    consent = components["EventData.checkout.contact_captured"]["properties"]["consent"]
    assert components[consent["$ref"].rsplit("/", 1)[1]]["properties"].keys() == {"email", "sms"}
    assert not [name for name in components if name.startswith("EventData.shopper.erased")]


def test_try_it_out_on_the_event_api_authenticates_with_the_schemas_bearer_scheme(credentials):
    # What Swagger UI's Authorize does: the operation's security names a scheme; an http bearer
    # scheme sends "Authorization: Bearer <value typed in>".
    from uuid import uuid4

    from django.utils import timezone

    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/events"]["post"]
    schemes = schema["components"]["securitySchemes"]
    [bearer] = [
        name
        for requirement in operation["security"]
        for name in requirement
        if schemes[name] == {**schemes[name], "type": "http", "scheme": "bearer"}
    ]
    assert "sk_" in schemes[bearer]["description"]
    body = {
        "id": str(uuid4()),
        "cart": "swagger-1",
        "type": "cart.item_added",
        "occurred_at": timezone.now().isoformat(),
        "data": {"sku": "MUG-01", "name": "Mug", "quantity": 1, "unit_price": 1299,
                 "currency": "EUR"},
    }  # fmt: skip

    answer = Client().post(
        "/api/v1/events",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {credentials.secret_key}",
    )

    assert answer.status_code == 201, answer.content
