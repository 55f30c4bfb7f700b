"""The one place that maps domain errors to HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.db import InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from carts import errors as carts_errors

log = logging.getLogger(__name__)

_STATUS = {
    carts_errors.EventIdConflict: status.HTTP_409_CONFLICT,
    carts_errors.VersionConflict: status.HTTP_409_CONFLICT,
    carts_errors.EventRejected: status.HTTP_400_BAD_REQUEST,
    carts_errors.StoreNotFound: status.HTTP_404_NOT_FOUND,
}

# A server we depend on is down or restarting (PostgreSQL: OperationalError / InterfaceError,
# whether connecting, mid-query or at commit; Redis: any RedisError). The request is refused as
# a whole, to be sent again: an event that did commit before its connection was cut is
# recognised by its id (200, duplicate), so a retry never appends twice.
OUTAGES: tuple[type[Exception], ...] = (OperationalError, InterfaceError, redis.RedisError)
RETRY_AFTER_SECONDS = 5


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, carts_errors.CartsError):
        body: dict[str, Any] = {"code": exc.code, "detail": exc.message, **exc.detail}
        if isinstance(exc, carts_errors.EventRejected):
            body["field"] = f"data.{exc.field}"
            body["errors"] = {"data": {exc.field: [exc.message]}}
        return Response(body, status=_STATUS.get(type(exc), status.HTTP_400_BAD_REQUEST))
    if isinstance(exc, OUTAGES):
        return service_unavailable(exc)
    response = exception_handler(exc, context)
    if isinstance(exc, exceptions.ParseError) and response is not None:
        response.data = {"detail": response.data["detail"], "code": "parse_error"}
    return response


def outage_log(exc: Exception) -> str:
    """Log the outage; which server it is ("database" or "redis")."""
    server = "redis" if isinstance(exc, redis.RedisError) else "database"
    log.warning("%s unavailable: %s: %s", server, type(exc).__name__, exc)
    return server


def service_unavailable(exc: Exception) -> Response:
    """503 with Retry-After: the request may be sent again as it was."""
    server = outage_log(exc)
    return Response(
        {
            "code": "service_unavailable",
            "detail": f"The {server} is unavailable; send the request again later.",
        },
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
