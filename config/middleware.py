"""Project-wide HTTP middleware."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class LengthRequiredMiddleware:
    """A POST, PUT or PATCH sent chunked with no Content-Length gets 411 ``length_required``.

    Django reads a body by its Content-Length under WSGI (config/asgi.py): without one, a chunked
    body reached the view empty and a valid event was refused as "Field required". Clients send
    the length; the body limit (CARTS_MAX_BODY_BYTES) is then checked before it is read.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            request.method in _WITH_BODY
            and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
            and not request.META.get("CONTENT_LENGTH")
        ):
            return JsonResponse(
                {
                    "detail": "Send the request body with a Content-Length header, not chunked.",
                    "code": "length_required",
                },
                status=411,
            )
        return self.get_response(request)
