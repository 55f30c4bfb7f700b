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
