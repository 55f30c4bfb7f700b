"""Shopify: discount codes through the Admin GraphQL API.

Followed (API version ``settings.INTEGRATIONS_SHOPIFY_API_VERSION``, 2025-10 by default):
- https://shopify.dev/docs/api/admin-graphql/2025-10/mutations/discountCodeBasicCreate and
  .../input-objects/DiscountCodeBasicInput: ``context: {all: ALL}`` (``customerSelection`` is
  deprecated since 2024-07), ``customerGets.value`` a ``percentage`` (0..1) or a
  ``discountAmount {amount, appliesOnEachItem}``, ``minimumRequirement.subtotal``.
- .../mutations/discountCodeFreeShippingCreate (``DiscountCodeFreeShippingInput``,
  ``destination: {all: true}``).
- .../queries/codeDiscountNodeByCode: finds the discount an earlier attempt made.
- https://shopify.dev/docs/api/usage/authentication (``X-Shopify-Access-Token``) and
  https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits: throttling is a 200 with a
  top-level ``THROTTLED`` error and ``extensions.cost.throttleStatus`` (a 429 with Retry-After is
  possible too); the wait is (requested - available) / restoreRate.

Needs the access scopes ``write_discounts`` (and ``read_discounts`` for the look-up). Shopify
does not document an Idempotency-Key for these mutations: a retry after a lost answer meets the
code's uniqueness (``TAKEN``) and is confirmed by the look-up.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from integrations.platforms.api import (
    CodeRequest,
    Permanent,
    RemoteCode,
    Session,
    Target,
    Transient,
    major_units,
    percent_points,
)

_BASIC = """
mutation discountCodeBasicCreate($discount: DiscountCodeBasicInput!) {
  discountCodeBasicCreate(basicCodeDiscount: $discount) {
    codeDiscountNode { id }
    userErrors { field code message }
  }
}
"""

_FREE_SHIPPING = """
mutation discountCodeFreeShippingCreate($discount: DiscountCodeFreeShippingInput!) {
  discountCodeFreeShippingCreate(freeShippingCodeDiscount: $discount) {
    codeDiscountNode { id }
    userErrors { field code message }
  }
}
"""

_BY_CODE = """
query codeDiscountNodeByCode($code: String!) {
  codeDiscountNodeByCode(code: $code) { id }
}
"""


def endpoint(target: Target) -> str:
    """``https://<shop>/admin/api/<version>/graphql.json``; ``api_url`` (tests) replaces the
    scheme and host."""
    path = f"/admin/api/{settings.INTEGRATIONS_SHOPIFY_API_VERSION}/graphql.json"
    if target.api_url:
        parts = urlsplit(target.api_url)
        if parts.scheme != "https" and not settings.INTEGRATIONS_ALLOW_PRIVATE_URLS:
            # The access token goes with every call: never over plain http in production.
            raise Permanent("shopify: the API URL must start with https://")
        return f"{parts.scheme}://{parts.netloc}{path}"
    domain = target.shop_domain.strip().lower()
    if not domain or "/" in domain or "@" in domain:
        raise Permanent("shopify: the connection has no shop domain (<shop>.myshopify.com)")
    return f"https://{domain}{path}"


def discount_input(request: CodeRequest) -> tuple[str, dict[str, Any]]:
    """The mutation and its ``$discount`` variable for ``request``."""
    common: dict[str, Any] = {
        "title": request.title or f"Cart recovery {request.code}",
        "code": request.code,
        "startsAt": request.starts_at.isoformat(),
        "endsAt": request.expires_at.isoformat(),
        "usageLimit": 1,
        "appliesOncePerCustomer": True,
        "context": {"all": "ALL"},
    }
    if request.min_cart_value > 0:
        common["minimumRequirement"] = {
            "subtotal": {
                "greaterThanOrEqualToSubtotal": major_units(
                    request.min_cart_value, request.currency
                )
            }
        }
    if request.kind == "free_shipping":
        return _FREE_SHIPPING, {**common, "destination": {"all": True}}
    if request.kind == "percent":
        # Shopify takes a fraction: 15 % is 0.15 (exact for whole points).
        value: dict[str, Any] = {"percentage": percent_points(request.amount) / 100}
    elif request.kind == "fixed":
        if request.amount <= 0:
            raise Permanent(f"shopify: a fixed discount must be positive, not {request.amount}")
        value = {
            "discountAmount": {
                "amount": major_units(request.amount, request.currency),
                "appliesOnEachItem": False,
            }
        }
    else:
        raise Permanent(f"shopify: unknown discount kind {request.kind!r}")
    return _BASIC, {**common, "customerGets": {"value": value, "items": {"all": True}}}


def _throttle_wait(body: dict[str, Any]) -> float | None:
    try:
        cost = body["extensions"]["cost"]
        status = cost["throttleStatus"]
        missing = float(cost["requestedQueryCost"]) - float(status["currentlyAvailable"])
        rate = float(status["restoreRate"])
    except (KeyError, TypeError, ValueError):
        return None
    if rate <= 0:
        return None
    return min(max(missing / rate, 0.5), 60.0)


def _post(session: Session, url: str, token: str, query: str, variables: dict) -> dict[str, Any]:
    """The GraphQL answer's ``data``; Transient/Permanent for HTTP and top-level errors."""
    response = session.request(
        "POST",
        url,
        headers={"X-Shopify-Access-Token": token, "Content-Type": "application/json"},
        json_body={"query": query, "variables": variables},
    )
    if response.status_code != 200:
        raise session.http_error(response)
    body = session.json(response)
    if not isinstance(body, dict):
        raise session.fail(Transient, "the answer is not a JSON object")
    errors = body.get("errors")
    if errors:
        errors = errors if isinstance(errors, list) else [errors]
        codes = {
            str((e.get("extensions") or {}).get("code", "")) for e in errors if isinstance(e, dict)
        }
        messages = "; ".join(
            str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors
        )
        if "THROTTLED" in codes:
            raise session.fail(
                Transient, f"throttled: {messages}", retry_after=_throttle_wait(body)
            )
        if "INTERNAL_SERVER_ERROR" in codes:
            raise session.fail(Transient, messages)
        if "ACCESS_DENIED" in codes:
            raise session.fail(Permanent, f"access denied (scope write_discounts?): {messages}")
        raise session.fail(Permanent, messages)
    data = body.get("data")
    if not isinstance(data, dict):
        raise session.fail(Transient, "the answer has no data")
    return data


def _taken(errors: list[dict[str, Any]]) -> bool:
    return any(
        e.get("code") == "TAKEN"
        or ("code" in (e.get("field") or []) and "unique" in str(e.get("message", "")).lower())
        for e in errors
    )


def code_create(*, target: Target, request: CodeRequest, timeout: float) -> RemoteCode:
    """Make the code (one attempt, at most two calls: the mutation, and the look-up when the code
    was taken, i.e. an earlier attempt made it)."""
    token = str(target.credentials.get("access_token") or "")
    if not token:
        raise Permanent("shopify: the connection has no access token")
    url = endpoint(target)
    session = Session(
        timeout=timeout,
        idempotency_key=request.idempotency_key,
        secrets=(token,),
        platform="shopify",
    )
    mutation, discount = discount_input(request)
    data = _post(session, url, token, mutation, {"discount": discount})
    field = (
        "discountCodeFreeShippingCreate"
        if mutation is _FREE_SHIPPING
        else ("discountCodeBasicCreate")
    )
    payload = data.get(field)
    if not isinstance(payload, dict):
        raise session.fail(Transient, f"the answer has no {field}")
    errors = [e for e in payload.get("userErrors") or [] if isinstance(e, dict)]
    node = payload.get("codeDiscountNode")
    if not errors and isinstance(node, dict) and node.get("id"):
        return RemoteCode(remote_id=str(node["id"]))
    if errors and _taken(errors):
        found = _post(session, url, token, _BY_CODE, {"code": request.code})
        existing = found.get("codeDiscountNodeByCode")
        if isinstance(existing, dict) and existing.get("id"):
            return RemoteCode(remote_id=str(existing["id"]), existed=True)
        # Taken, yet not found: the shop's index lags behind its write; the next attempt sees it.
        raise session.fail(Transient, f"the code {request.code} is taken but not found yet")
    if errors:
        messages = "; ".join(
            f"{'.'.join(map(str, e.get('field') or []))}: {e.get('message', '')}".lstrip(": ")
            for e in errors
        )
        raise session.fail(Permanent, f"refused: {messages}")
    raise session.fail(Transient, "no discount and no error in the answer")
