"""A POST, PUT or PATCH with a chunked body and no Content-Length gets 411 (docs/api.md, "Bounds"),
through the ASGI application that uvicorn serves (tests/e2e/test_length_required.py: uvicorn)."""

from __future__ import annotations

import json

import pytest
from channels.testing import HttpCommunicator

from config.asgi import application

pytestmark = [pytest.mark.asyncio]
EVENT = {
    "id": "6f0d2f4e-43c5-4b33-a6a3-8e7c0d8c2a11",
    "cart": "chunked-1",
    "type": "checkout.started",
    "occurred_at": "2026-11-01T10:00:00Z",
    "data": {},
}


async def _request(method: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> dict:
    communicator = HttpCommunicator(
        application,
        method,
        "/api/v1/events",
        body=body,
        headers=[(b"host", b"127.0.0.1"), *headers],
    )
    return await communicator.get_response(timeout=10)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
@pytest.mark.parametrize("encoding", [b"chunked", b"gzip, Chunked"])
async def test_a_chunked_body_without_a_length_is_411(method, encoding):
    response = await _request(
        method,
        [
            (b"authorization", b"Bearer sk_whatever"),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", encoding),
        ],
        json.dumps(EVENT).encode(),
    )

    assert response["status"] == 411
    assert json.loads(response["body"]) == {
        "detail": "Send the request body with a Content-Length header, not chunked.",
        "code": "length_required",
    }


async def test_a_get_with_transfer_encoding_is_not_411():
    response = await _request("GET", [(b"transfer-encoding", b"chunked")])

    assert response["status"] == 401  # on to the view, which wants a key
