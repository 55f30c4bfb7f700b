"""The ASGI application that uvicorn serves: HTTP requests go through Django's WSGI handler."""

import json
import uuid

import pytest
from channels.testing import HttpCommunicator

from config.asgi import application


@pytest.fixture
def wait_for_request_threads(committed_db):
    """The pool thread closes its database connection just after sending the response: wait for
    it, so the test database can be dropped at the end of the session. Only the connections
    opened during the test are waited for: earlier tests' (a live server's, a hints thread's)
    are not this test's to close."""
    import time

    from django.db import connection

    def others() -> set[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return {pid for (pid,) in cursor.fetchall()}

    before = others()
    yield
    deadline = time.monotonic() + 10
    while others() - before and time.monotonic() < deadline:
        time.sleep(0.05)


async def _post_events(body: bytes, key: str):
    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", f"Bearer {key}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    communicator = HttpCommunicator(
        application, "POST", "/api/v1/events", body=body, headers=headers
    )
    return await communicator.get_response(timeout=10)


@pytest.mark.asyncio
async def test_an_event_posted_through_the_asgi_app_is_stored(
    committed_store, wait_for_request_threads
):
    from asgiref.sync import sync_to_async

    from carts.models import CartEvent

    store, creds = committed_store
    event = {
        "id": str(uuid.uuid4()),
        "cart": "asgi-1",
        "type": "checkout.started",
        "occurred_at": "2026-11-01T10:00:00Z",
        "data": {},
    }
    body = json.dumps(event).encode()
    response = await _post_events(body, creds.secret_key)

    assert response["status"] == 201, response["body"]
    [result] = json.loads(response["body"])["events"]
    assert (result["cart"], result["version"], result["duplicate"]) == ("asgi-1", 1, False)

    def stored() -> int:
        from django.db import connection

        try:
            return CartEvent.objects.filter(store=store).count()
        finally:
            connection.close()  # this executor thread's own connection

    assert await sync_to_async(stored)() == 1


@pytest.mark.asyncio
async def test_an_oversize_body_gets_413_through_the_asgi_app(
    committed_store, settings, wait_for_request_threads
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    _, creds = committed_store
    body = json.dumps({"events": [{"pad": "x" * 200}]}).encode()
    response = await _post_events(body, creds.secret_key)

    assert response["status"] == 413


def test_http_is_served_by_djangos_wsgi_handler_in_a_thread_pool():
    # The measured choice of docs/adr/0002: one thread per request for the whole sync stack.
    from a2wsgi import WSGIMiddleware
    from django.core.handlers.wsgi import WSGIHandler

    http = application.application_mapping["http"]
    assert isinstance(http, WSGIMiddleware)
    assert isinstance(http.app, WSGIHandler)
