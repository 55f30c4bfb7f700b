"""OpenAPI (drf-spectacular): the store's secret-key authentication, and the answers and
schema class the API's operations share.

Imported from CartsConfig.ready(): drf-spectacular finds extensions by subclassing, so the
class must be defined before the schema is generated.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ComponentIdentity, ComponentRegistry, ResolvedComponent
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from pydantic import TypeAdapter

from carts import event_types


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


# -- each client event type's payload (EventIn.data), from carts/event_types.py's TypedDicts ------

PAYLOAD_PREFIX = "EventData."


def payload_component_name(type_name: str) -> str:
    """The component holding ``type_name``'s payload schema, e.g. EventData.cart.item_added."""
    return f"{PAYLOAD_PREFIX}{type_name}"


def payload_schemas() -> dict[str, dict[str, Any]]:
    """Components by name: each client event type's current payload schema (pydantic's JSON
    schema of its TypedDict, with a description naming the type), and the schemas they nest."""
    found: dict[str, dict[str, Any]] = {}
    ref = "#/components/schemas/" + PAYLOAD_PREFIX + "{model}"
    for name in event_types.CLIENT_TYPES:
        event_type = event_types.REGISTRY[name]
        if event_type.schema is None:
            continue
        schema = TypeAdapter(event_type.schema).json_schema(ref_template=ref)
        for nested, definition in schema.pop("$defs", {}).items():
            found.setdefault(PAYLOAD_PREFIX + nested, definition)
        schema["title"] = payload_component_name(name)
        schema["description"] = (
            f"`data` of a `{name}` event (schema version {event_type.version}, the default; "
            "docs/api.md lists older versions)."
        )
        found[payload_component_name(name)] = schema
    return found


PAYLOADS_DESCRIPTION = (
    "The payload, per `type`; its schema is the component named EventData.<type> (see Schemas "
    "below): "
    + ", ".join(f"`{name}`" for name in event_types.CLIENT_TYPES)
    + ". Checked against the type's schema: errors come back by field under `data`."
)


def payload_components_register(registry: ComponentRegistry) -> None:
    for name, schema in payload_schemas().items():
        registry.register_on_missing(
            ResolvedComponent(
                name=name,
                type=ResolvedComponent.SCHEMA,
                schema=schema,
                object=ComponentIdentity(name),
            )
        )


class ApiSchema(AutoSchema):
    """drf-spectacular's schema, with an operation's request body required: every body of this
    API is an object with required fields, and no body is refused with 400 like any other. The
    event types' payload schemas are listed under components (EventIn.data names them)."""

    def get_operation(
        self,
        path: str,
        path_regex: str,
        path_prefix: str,
        method: str,
        registry: ComponentRegistry,
    ) -> Any:
        payload_components_register(registry)
        return super().get_operation(path, path_regex, path_prefix, method, registry)

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
