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


class OutageMiddleware:
    """A page that fails because PostgreSQL or Redis is down or restarting (the dashboards, the
    admin, restore and unsubscribe links, the demo) answers 503 with ``Retry-After``, as the API
    does (config/exceptions.py), instead of a 500: the request may be sent again as it was."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from config.exceptions import OUTAGES, RETRY_AFTER_SECONDS, outage_log

        if not isinstance(exception, OUTAGES):
            return None
        server = outage_log(exception)
        detail = f"The {server} is unavailable; try again in a few seconds."
        accept = request.headers.get("Accept", "")
        if request.path.startswith("/api/") or "json" in accept:
            response: HttpResponse = JsonResponse(
                {"code": "service_unavailable", "detail": detail}, status=503
            )
        else:
            response = HttpResponse(
                f"<!doctype html><title>Unavailable</title><h1>Temporarily unavailable</h1>"
                f"<p>{detail}</p>",
                status=503,
                content_type="text/html; charset=utf-8",
            )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
