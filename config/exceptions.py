"""The one place that maps domain errors to HTTP responses."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from carts import errors as carts_errors

_STATUS = {
    carts_errors.EventIdConflict: status.HTTP_409_CONFLICT,
    carts_errors.VersionConflict: status.HTTP_409_CONFLICT,
    carts_errors.EventRejected: status.HTTP_400_BAD_REQUEST,
    carts_errors.StoreNotFound: status.HTTP_404_NOT_FOUND,
}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, carts_errors.CartsError):
        body: dict[str, Any] = {"code": exc.code, "detail": exc.message, **exc.detail}
        if isinstance(exc, carts_errors.EventRejected):
            body["field"] = f"data.{exc.field}"
            body["errors"] = {"data": {exc.field: [exc.message]}}
        return Response(body, status=_STATUS.get(type(exc), status.HTTP_400_BAD_REQUEST))
    response = exception_handler(exc, context)
    if isinstance(exc, exceptions.ParseError) and response is not None:
        response.data = {"detail": response.data["detail"], "code": "parse_error"}
    return response
