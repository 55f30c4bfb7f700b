"""OpenAPI (drf-spectacular): the store's secret-key authentication, and the answers and
schema class the API's operations share.

Imported from CartsConfig.ready(): drf-spectacular finds extensions by subclassing, so the
class must be defined before the schema is generated.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse


class StoreSecretKeyScheme(OpenApiAuthenticationExtension):
    target_class = "carts.auth.StoreSecretKeyAuthentication"
    name = "storeSecretKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The store's secret key: `Authorization: Bearer sk_...`.",
        }


# -- the API's shared answers (extend_schema(responses=...)), so every operation lists every
# status it can answer (security review 2, finding 16: schemathesis checks it, tests/e2e) ---------


class ApiSchema(AutoSchema):
    """drf-spectacular's schema, with an operation's request body required: every body of this
    API is an object with required fields, and no body is refused with 400 like any other."""

    def _get_request_body(self, direction: str = "request") -> Any:
        body = super()._get_request_body(direction)
        if body:
            body["required"] = True
        return body


_DETAIL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
    "required": ["detail"],
}
_FIELD_ERRORS = {
    "type": "object",
    "description": "Errors by field (nested like the input: a list of messages per field), or "
    "{detail, code} for a body that is not JSON.",
    "additionalProperties": True,
}


def bad_request(description: str = "") -> OpenApiResponse:
    """400 with field errors."""
    return OpenApiResponse(
        _FIELD_ERRORS, description or 'Invalid input: messages by field, e.g. {"limit": ["..."]}.'
    )


def error(description: str) -> OpenApiResponse:
    """An error answered with ``{"detail": ..., "code"?: ...}``."""
    return OpenApiResponse(_DETAIL, description)


UNAUTHORIZED = error(
    "No Authorization header, a scheme other than Bearer, or an unknown or revoked secret key."
)
CART_NOT_FOUND = error("This store has no such cart.")
THROTTLED = error(
    "Over the store's requests per minute, or (shopper endpoints) over a limit per client "
    'address or store with {"code": "rate_limited", "detail", "limit"}: the Retry-After '
    "header says in how many seconds to try again (docs/security.md)."
)
LENGTH_REQUIRED = error('{"code": "length_required"}: a body sent chunked, without Content-Length.')
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    OpenApiParameter.HEADER,
    response=[429],
    required=True,
    description="Seconds until a request may succeed again.",
)
