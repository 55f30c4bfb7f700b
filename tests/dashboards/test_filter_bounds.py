"""Dashboard date filters are bounded to the years 2000-9998 (docs/api.md, "Bounds"): outside, the
metrics API answers 400 with field errors, pages a form error and CSV exports a 400, never a 500
(dates at the ends of the calendar overflowed the previous period and the local day's end)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from carts.models import StoreMember
from tests.dashboards.test_pages import client_for, member

MESSAGE = "Enter a date in the years 2000 to 9998."
OUTSIDE = {
    "start in year 1": ("start=0001-01-01&end=0001-01-01", ["start", "end"]),
    "end in year 9999": ("end=9999-12-31", ["end"]),
    "start in 1999": ("start=1999-12-31&end=2000-01-01", ["start"]),
    "start in year 9999": ("start=9999-12-30&end=9999-12-31", ["start", "end"]),
}
ENDPOINTS = ("overview", "timeseries", "funnel", "offers", "scores", "products")


@pytest.fixture
def keyed(credentials) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credentials.secret_key}")
    return client


@pytest.mark.parametrize(("query", "fields"), OUTSIDE.values(), ids=OUTSIDE.keys())
def test_the_metrics_api_refuses_dates_outside_the_years_2000_to_9998(keyed, query, fields):
    for endpoint in ENDPOINTS:
        response = keyed.get(f"/api/v1/metrics/{endpoint}?{query}")

        assert response.status_code == 400, endpoint
        assert response.json() == {field: [MESSAGE] for field in fields}, endpoint


def test_the_ends_of_the_range_are_allowed(keyed):
    first = keyed.get("/api/v1/metrics/overview?start=2000-01-01&end=2000-01-31")
    last = keyed.get("/api/v1/metrics/timeseries?start=9998-12-01&end=9998-12-31")
    products = keyed.get("/api/v1/metrics/products?start=9998-12-31&end=9998-12-31")

    assert (first.status_code, last.status_code, products.status_code) == (200, 200, 200)
    assert first.json()["previous_start"] == "1999-12-01"
    assert len(last.json()["points"]) == 31


@pytest.fixture
def marketer(store):
    return client_for(member(store, "bounded", StoreMember.Role.MARKETER))


@pytest.mark.parametrize(
    "query", ["start=0001-01-01&end=0001-01-01", "end=9999-12-31"], ids=["year 1", "year 9999"]
)
def test_the_overview_page_shows_a_form_error(store, marketer, query):
    response = marketer.get(f"/dashboard/{store.pk}/?{query}")

    assert response.status_code == 400
    page = response.content.decode()
    assert f"<strong>end</strong>: {MESSAGE}" in page
    assert '<section class="figures"' not in page


@pytest.mark.parametrize(
    "query", ["start=0001-01-01&end=0001-01-01", "end=9999-12-31"], ids=["year 1", "year 9999"]
)
def test_a_csv_export_is_a_400(store, marketer, query):
    response = marketer.get(f"/dashboard/{store.pk}/export/timeseries.csv?{query}")

    assert response.status_code == 400
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert f"end: {MESSAGE}" in response.content.decode()
