"""Pages outside the API answer an outage of PostgreSQL or Redis with 503 and Retry-After, as the
API does, never 500 (config/middleware.py OutageMiddleware)."""

from __future__ import annotations

import pytest
import redis
from django.db import OperationalError
from django.test import Client

from carts.models import Store


class _Unavailable:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def filter(self, *args, **kwargs):
        raise self.error


@pytest.mark.parametrize(
    ("error", "server"),
    [
        (OperationalError("server closed the connection unexpectedly"), "database"),
        (redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379"), "redis"),
    ],
    ids=["postgres", "redis"],
)
def test_a_page_answers_an_outage_with_503_and_retry_after(db, monkeypatch, error, server):
    # the site root reads the demo store first: its server is gone
    monkeypatch.setattr(Store, "objects", _Unavailable(error))
    client = Client(raise_request_exception=False)

    page = client.get("/")
    as_json = client.get("/", HTTP_ACCEPT="application/json")

    assert page.status_code == 503
    assert page["Retry-After"] == "5"
    assert "Temporarily unavailable" in page.content.decode()
    assert f"The {server} is unavailable" in page.content.decode()
    assert as_json.status_code == 503
    assert as_json.json()["code"] == "service_unavailable"


def test_other_errors_are_left_to_django(db, monkeypatch):
    monkeypatch.setattr(Store, "objects", _Unavailable(ValueError("a bug")))
    assert Client(raise_request_exception=False).get("/").status_code == 500


def test_connections_to_postgresql_give_up_after_the_connect_timeout(settings):
    from django.db import connection

    assert settings.DATABASES["default"]["OPTIONS"]["connect_timeout"] == 5
    assert connection.get_connection_params()["connect_timeout"] == settings.DB_CONNECT_TIMEOUT
