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
