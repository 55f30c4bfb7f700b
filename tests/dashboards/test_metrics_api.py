"""The metrics API: the selectors' figures as JSON for a store's secret key or a marketer's
session, with the pages' filters, field errors and the OpenAPI schema."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from carts import services
from carts.models import Store, StoreMember
from dashboards import selectors
from dashboards.apis import DAY_PATTERN
from tests.dashboards.test_pages import RANGE, Log, T, client_for, log_build, member

ENDPOINTS = ("overview", "timeseries", "funnel", "offers", "scores", "products")
NOW = T + timedelta(days=2)  # every cart of the log is settled by then, as it is now


@pytest.fixture
def log(store) -> Log:
    return log_build(store)


@pytest.fixture
def keyed(log, credentials) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credentials.secret_key}")
    return client


def _filters(log: Log, **kw: Any) -> selectors.Filters:
    return selectors.Filters(
        store_id=log.store.pk, start=date(2026, 11, 8), end=date(2026, 11, 15), **kw
    )


def _plain(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("filters", "timezone")}


def test_the_overview_is_the_selectors_for_the_stores_key(log, keyed):
    response = keyed.get(f"/api/v1/metrics/overview?{RANGE}")

    assert response.status_code == 200
    body = response.json()
    assert body["filters"] == {
        "store": log.store.pk,
        "start": "2026-11-08",
        "end": "2026-11-14",
        "campaign": None,
        "channel": None,
        "timezone": "UTC",
    }
    assert _plain(body) == _plain(selectors.overview(_filters(log), now=NOW).as_dict())
    assert body["carts_started"] == {"value": 3, "previous": 0, "change": None, "kind": "count"}
    assert body["recovered_revenue"]["value"] == {"EUR": 2200}
    assert body["lift"]["treated_rate"] == 1.0
    assert body["lift"]["absolute_low"] == pytest.approx(-0.1221, abs=1e-4)


def test_every_endpoint_returns_the_selectors_figures(log, keyed):
    filters = _filters(log)
    expected = {
        "timeseries": _plain(selectors.timeseries(filters, now=NOW).as_dict()),
        "funnel": {"rows": [r.as_dict() for r in selectors.funnel(filters)]},
        "offers": _plain(selectors.offers(filters).as_dict()),
        "scores": {"bands": [b.as_dict() for b in selectors.scores(filters, now=NOW)]},
        "products": {
            "by": "sku",
            "rows": [r.as_dict() for r in selectors.top_products(filters, now=NOW)],
        },
    }
    for name, figures in expected.items():
        response = keyed.get(f"/api/v1/metrics/{name}?{RANGE}")
        assert response.status_code == 200, name
        assert _plain(response.json()) == figures, name


def test_the_endpoints_carry_exact_figures(log, keyed):
    funnel = keyed.get(f"/api/v1/metrics/funnel?{RANGE}").json()["rows"]
    offers = keyed.get(f"/api/v1/metrics/offers?{RANGE}").json()
    products = keyed.get(f"/api/v1/metrics/products?{RANGE}&by=category").json()
    series = keyed.get(f"/api/v1/metrics/timeseries?{RANGE}").json()

    assert [(r["scheduled"], r["sent"], r["suppressed"], r["converted"]) for r in funnel] == [
        (2, 1, 1, 1)
    ]
    assert funnel[0]["revenue"] == {"EUR": 2200}
    assert [(k["kind"], k["shown"], k["accepted"]) for k in offers["kinds"]] == [
        ("percent_discount", 1, 1)
    ]
    assert products["by"] == "category"
    assert products["rows"] == [
        {"key": "furniture", "name": "furniture", "currency": "EUR", "carts": 1, "value": 4500}
    ]
    assert series["granularity"] == "day"
    assert [p["carts_started"] for p in series["points"]] == [0, 0, 3, 0, 0, 0, 0]


def test_filters_reach_the_selectors(log, keyed):
    response = keyed.get(
        f"/api/v1/metrics/overview?{RANGE}&campaign={log.campaign.pk}&channel=email"
    )
    filters = _filters(log, campaign_id=log.campaign.pk, channel="email")

    assert response.status_code == 200
    assert response.json()["filters"]["campaign"] == log.campaign.pk
    assert response.json()["filters"]["channel"] == "email"
    assert _plain(response.json()) == _plain(selectors.overview(filters, now=NOW).as_dict())


def test_a_short_range_is_hourly(log, keyed):
    body = keyed.get("/api/v1/metrics/timeseries?start=2026-11-10&end=2026-11-10").json()

    assert body["granularity"] == "hour"
    assert len(body["points"]) == 24
    assert body["points"][10]["start"] == "2026-11-10T10:00:00+00:00"
    assert body["points"][10]["carts_started"] == 3


def test_products_take_a_limit(log, keyed):
    body = keyed.get(f"/api/v1/metrics/products?{RANGE}&limit=1&by=sku").json()

    assert [r["key"] for r in body["rows"]] == ["CHAIR"]


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ("start=2026-11-10&end=2026-11-01", {"end": ["The end must not be before the start."]}),
        ("start=2025-01-01&end=2026-11-01", {"start": ["The range is 670 days; at most 366."]}),
        ("end=2026-11-01&start=2025-10-31", {"start": ["The range is 367 days; at most 366."]}),
        ("channel=pigeon", {"channel": ['"pigeon" is not a valid choice.']}),
        ("campaign=x", {"campaign": ["A valid integer is required."]}),
        (
            "start=tomorrow",
            {"start": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]},
        ),
    ],
)
def test_bad_filters_are_a_400_with_field_errors(log, keyed, query, errors):
    response = keyed.get(f"/api/v1/metrics/overview?{query}")

    assert response.status_code == 400
    assert response.json() == errors


def test_a_campaign_the_store_does_not_have_is_a_404(log, keyed):
    # As a store the caller may not see; the schema lists 404 (a schema-valid id is not a 400).
    response = keyed.get("/api/v1/metrics/overview?campaign=999999")

    assert response.status_code == 404
    assert response.json() == {"detail": "This store has no campaign 999999."}


@pytest.mark.parametrize("name", ["start", "end", "campaign", "channel", "store", "by", "limit"])
def test_a_parameter_sent_empty_is_a_400_on_every_metrics_endpoint(log, keyed, name):
    for endpoint in ENDPOINTS:
        response = keyed.get(f"/api/v1/metrics/{endpoint}?{name}=")

        assert response.status_code == 400, endpoint
        assert response.json() == {name: ["Give a value, or leave the parameter out."]}


def test_a_range_of_366_days_is_allowed(log, keyed):
    response = keyed.get("/api/v1/metrics/overview?start=2025-11-01&end=2026-11-01")

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ("by=brand", {"by": ['"brand" is not a valid choice.']}),
        ("limit=0", {"limit": ["Ensure this value is greater than or equal to 1."]}),
        ("limit=101", {"limit": ["Ensure this value is less than or equal to 100."]}),
    ],
)
def test_bad_product_parameters_are_a_400(log, keyed, query, errors):
    response = keyed.get(f"/api/v1/metrics/products?{query}")

    assert response.status_code == 400
    assert response.json() == errors


def test_a_marketer_session_reads_the_store_given(log):
    client = client_for(member(log.store, "mia"))

    response = client.get(f"/api/v1/metrics/overview?store={log.store.pk}&{RANGE}")

    assert response.status_code == 200
    assert response.json()["filters"]["store"] == log.store.pk
    assert response.json()["carts_started"]["value"] == 3


def test_a_session_without_store_reads_the_users_only_store(log):
    client = client_for(member(log.store, "mia"))

    response = client.get(f"/api/v1/metrics/offers?{RANGE}")

    assert response.status_code == 200
    assert response.json()["filters"]["store"] == log.store.pk


def test_a_session_with_two_stores_must_say_which(log):
    user = member(log.store, "mia")
    other = Store.objects.get(pk=services.store_create(name="Other", domain="o.example").store_id)
    StoreMember.objects.create(store=other, user=user, role=StoreMember.Role.MARKETER)

    response = client_for(user).get("/api/v1/metrics/overview")

    assert response.status_code == 400
    assert response.json() == {"store": ["Required: the id of one of your stores."]}


def test_a_session_get_needs_no_csrf_token(log):
    client = client_for(member(log.store, "mia"))
    client.handler.enforce_csrf_checks = True

    assert client.get(f"/api/v1/metrics/scores?{RANGE}").status_code == 200


def test_the_metrics_paths_are_in_the_openapi_schema(db):
    schema = APIClient().get("/api/schema/?format=json").json()

    for name in ENDPOINTS:
        path = schema["paths"][f"/api/v1/metrics/{name}"]
        operation = path["get"]
        assert operation["operationId"] == f"metrics_{name}"
        parameters = {p["name"] for p in operation["parameters"]}
        assert {"store", "start", "end", "campaign", "channel"} <= parameters
        assert set(operation["responses"]) == {"200", "400", "401", "404", "429"}
        assert operation["responses"]["429"]["headers"]["Retry-After"]["required"] is True
        start = next(p for p in operation["parameters"] if p["name"] == "start")
        assert start["schema"]["pattern"] == DAY_PATTERN
    products = schema["paths"]["/api/v1/metrics/products"]["get"]
    assert {"by", "limit"} <= {p["name"] for p in products["parameters"]}
    overview = schema["components"]["schemas"]["OverviewOut"]
    assert {"carts_started", "recovered_revenue", "lift"} <= set(overview["properties"])
    channel = next(
        p
        for p in schema["paths"]["/api/v1/metrics/overview"]["get"]["parameters"]
        if p["name"] == "channel"
    )
    assert channel["schema"]["enum"] == ["onsite", "email", "discount"]
