"""OpenAPI (drf-spectacular) description of the store's secret-key authentication.

Imported from CartsConfig.ready(): drf-spectacular finds extensions by subclassing, so the
class must be defined before the schema is generated.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class StoreSecretKeyScheme(OpenApiAuthenticationExtension):
    target_class = "carts.auth.StoreSecretKeyAuthentication"
    name = "storeSecretKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The store's secret key: `Authorization: Bearer sk_...`.",
        }
