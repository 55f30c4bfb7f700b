"""Through uvicorn as `make run` serves it: a chunked request body without Content-Length gets
411 (review 2 finding 17: it reached the view empty, and a valid event was refused as "Field
required"), and nothing is stored; the same event with its length is stored."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from carts.models import CartEvent
from tests.conftest import subprocess_env
from tests.e2e import procs


@pytest.fixture
def server(committed_store, tmp_path) -> Iterator[tuple[int, str]]:
    _, creds = committed_store
    port = procs.free_port()
    log = tmp_path / "web.log"
    with procs.web_server(port, env=subprocess_env(DJANGO_DEBUG="0"), log=log):
        yield port, creds.secret_key


def _post(port: int, key: str, body: bytes, *, chunked: bool) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        if chunked:  # http.client sends Transfer-Encoding: chunked and no Content-Length
            connection.request("POST", "/api/v1/events", iter([body]), headers, encode_chunked=True)
        else:
            connection.request("POST", "/api/v1/events", body, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_chunked_body_gets_411_and_stores_nothing(server, committed_store):
    port, key = server
    store, _ = committed_store
    event = {
        "id": str(uuid.uuid4()),
        "cart": "chunked-e2e",
        "type": "checkout.started",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {},
    }
    body = json.dumps(event).encode()

    status, answer = _post(port, key, body, chunked=True)

    assert (status, answer["code"]) == (411, "length_required")
    assert not CartEvent.objects.filter(store=store).exists()

    status, answer = _post(port, key, body, chunked=False)

    assert status == 201, answer
    assert CartEvent.objects.filter(store=store).count() == 1
