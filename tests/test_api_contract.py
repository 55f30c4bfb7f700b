"""The schema states what validation enforces, and validation what the schema states (security
review 2, finding 16); tests/e2e/test_schemathesis.py checks the whole API against the live
server, these pin the pieces."""

from __future__ import annotations

import re
import zoneinfo

import pytest
from rest_framework.test import APIClient

from carts import money
from carts.validation import NOT_BLANK


@pytest.fixture
def schema(db) -> dict:
    return APIClient().get("/api/schema/?format=json").json()


def _parameter(schema: dict, path: str, name: str, method: str = "get") -> dict:
    return next(p for p in schema["paths"][path][method]["parameters"] if p["name"] == name)


def test_the_secret_key_operations_list_401_and_429_with_retry_after(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if not path.startswith("/api/v1/") or operation.get("security") == [{}]:
                continue
            assert {"401", "429"} <= set(operation["responses"]), (method, path)
            headers = operation["responses"]["429"]["headers"]
            assert headers["Retry-After"]["required"] is True, (method, path)


def test_cart_paths_and_history_parameters_carry_their_constraints(schema):
    cart = _parameter(schema, "/api/v1/carts/{cart}", "cart")
    limit = _parameter(schema, "/api/v1/carts/{cart}/events", "limit")
    after = _parameter(schema, "/api/v1/carts/{cart}/events", "after")

    assert cart["schema"]["pattern"] == r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)
    assert (after["schema"]["minimum"], after["schema"]["maximum"]) == (0, 2**31 - 1)
    assert set(schema["paths"]["/api/v1/carts/{cart}"]["get"]["responses"]) == {
        "200", "401", "404", "429"
    }  # fmt: skip


def test_request_bodies_are_required(schema):
    for path in ("/api/v1/events", "/api/v1/coupons/redeem", "/api/v1/coupons/validate"):
        assert schema["paths"][path]["post"]["requestBody"]["required"] is True, path


def test_currencies_and_time_zones_are_the_enums_validation_takes(schema):
    text = str(schema)

    assert str(sorted(money.currency_codes())) in text
    assert str(sorted(zoneinfo.available_timezones())) in text


@pytest.mark.parametrize(
    ("value", "valid"),
    [("a", True), (" a ", True), ("a b", True), ("", False), ("   ", False),
     ("\u00a0\u3000", False), ("\t\n", False), ("a\x00", False)],
)  # fmt: skip
def test_the_not_blank_pattern_is_what_validation_takes(value, valid):
    assert bool(re.search(NOT_BLANK, value)) is valid


def test_a_blank_code_is_refused_as_the_schema_says(api):
    response = api.post("/api/v1/coupons/validate", {"code": "\u00a0"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"code": ["String should have at least 1 character."]}


@pytest.mark.parametrize(
    "url",
    ["/api/v1/carts/c1/events?limit=", "/api/v1/carts/c1/events?after=",
     "/api/v1/carts/c1/score?at="],
)  # fmt: skip
def test_a_query_parameter_sent_empty_is_a_400(api, url):
    name = url.rsplit("?", 1)[1].rstrip("=")

    response = api.get(url)

    assert response.status_code == 400
    assert response.json() == {name: ["Give a value, or leave the parameter out."]}


def test_the_shopper_offers_refuse_empty_parameters(db):
    response = APIClient().get("/api/v1/shopper-sessions/offers?publishable_key=&cart=c1&grant=")

    assert response.status_code == 400
    assert response.json() == {
        "publishable_key": ["Give a value, or leave the parameter out."],
        "grant": ["Give a value, or leave the parameter out."],
    }
