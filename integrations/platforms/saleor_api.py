"""Saleor: discount codes as vouchers, through its GraphQL API.

Followed (Saleor 3.18 or newer):
- https://docs.saleor.io/api-reference/discounts/mutations/voucher-create and
  .../inputs/voucher-input: ``addCodes: [code]`` (added in 3.18; ``code`` is deprecated), ``type``
  (``ENTIRE_ORDER``, ``SHIPPING``), ``discountValueType`` (``PERCENTAGE``, ``FIXED``),
  ``startDate``, ``endDate``, ``usageLimit``, ``singleUse``, ``applyOncePerCustomer``.
- .../mutations/voucher-channel-listing-update and .../inputs/voucher-channel-listing-add-input:
  a voucher's value and minimum spend are per channel (``channelId``, ``discountValue``,
  ``minAmountSpent``, in the channel's currency); without a listing the voucher applies nowhere.
- Saleor's DiscountErrorCode: ``UNIQUE`` / ``ALREADY_EXISTS`` for a code in use;
  ``vouchers(filter: {search:})`` finds a voucher by name or code.

Calls: two on the first attempt (create, then the channel listing). A partial failure (the
voucher made, its listing not: a timeout, a 5xx) raises Transient, and the retry finishes it:
the create meets ``UNIQUE``, the look-up finds the voucher without our channel, and the listing is
added (three calls), confirmed as ``existed``. Saleor does not honour Idempotency-Key.

Needs an app token (or a staff user's token) with the ``MANAGE_DISCOUNTS`` permission, and
``credentials["channel_id"]``: the channel's global id, whose currency is the store's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

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

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

_CREATE = """
mutation voucherCreate($input: VoucherInput!) {
  voucherCreate(input: $input) {
    voucher { id }
    errors { field code message }
  }
}
"""

_LISTING = """
mutation voucherChannelListingUpdate($id: ID!, $input: VoucherChannelListingInput!) {
  voucherChannelListingUpdate(id: $id, input: $input) {
    voucher { id }
    errors { field code message }
  }
}
"""

_FIND = """
query vouchers($search: String!) {
  vouchers(first: 20, filter: {search: $search}) {
    edges {
      node {
        id
        code
        codes(first: 20) { edges { node { code } } }
        channelListings { channel { id } }
      }
    }
  }
}
"""


def graphql_url(target: Target) -> str:
    url = target.api_url.strip()
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return url
    raise Permanent("saleor: the GraphQL API URL must start with https:// (the token goes with it)")


def voucher_input(request: CodeRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": request.title or f"Cart recovery {request.code}",
        "addCodes": [request.code],
        "startDate": request.starts_at.isoformat(),
        "endDate": request.expires_at.isoformat(),
        "usageLimit": 1,
        "singleUse": True,
        "applyOncePerCustomer": True,
    }
    if request.kind == "free_shipping":
        body.update(type="SHIPPING", discountValueType="PERCENTAGE")
    elif request.kind == "percent":
        body.update(type="ENTIRE_ORDER", discountValueType="PERCENTAGE")
    elif request.kind == "fixed":
        body.update(type="ENTIRE_ORDER", discountValueType="FIXED")
    else:
        raise Permanent(f"saleor: unknown discount kind {request.kind!r}")
    return body


def listing_input(request: CodeRequest, channel_id: str) -> dict[str, Any]:
    if request.kind == "free_shipping":
        value = "100"
    elif request.kind == "percent":
        value = str(percent_points(request.amount))
    else:
        if request.amount <= 0:
            raise Permanent(f"saleor: a fixed discount must be positive, not {request.amount}")
        value = major_units(request.amount, request.currency)
    channel: dict[str, Any] = {"channelId": channel_id, "discountValue": value}
    if request.min_cart_value > 0:
        channel["minAmountSpent"] = major_units(request.min_cart_value, request.currency)
    return {"addChannels": [channel]}


def _post(session: Session, url: str, token: str, query: str, variables: dict) -> dict[str, Any]:
    response = session.request(
        "POST",
        url,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
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
        messages = "; ".join(
            str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors
        )
        # Saleor answers 200 for a bad token ("InvalidTokenError", "ExpiredSignatureError") and a
        # missing permission ("PermissionDenied"): nothing a retry mends.
        raise session.fail(Permanent, messages)
    data = body.get("data")
    if not isinstance(data, dict):
        raise session.fail(Transient, "the answer has no data")
    return data


def _payload(session: Session, data: dict[str, Any], field: str) -> tuple[Any, list[dict]]:
    payload = data.get(field)
    if not isinstance(payload, dict):
        raise session.fail(Transient, f"the answer has no {field}")
    errors = [e for e in payload.get("errors") or [] if isinstance(e, dict)]
    return payload.get("voucher"), errors


def _describe(errors: list[dict]) -> str:
    return "; ".join(f"{e.get('field') or ''}: {e.get('message') or e.get('code')}" for e in errors)


def _find(session: Session, url: str, token: str, code: str) -> dict[str, Any] | None:
    data = _post(session, url, token, _FIND, {"search": code})
    edges = ((data.get("vouchers") or {}).get("edges")) or []
    for edge in edges:
        node = edge.get("node") if isinstance(edge, dict) else None
        if not isinstance(node, dict) or not node.get("id"):
            continue
        codes = {str(node.get("code") or "")} | {
            str((e.get("node") or {}).get("code") or "")
            for e in ((node.get("codes") or {}).get("edges") or [])
            if isinstance(e, dict)
        }
        if code in codes:
            return node
    return None


def code_create(*, target: Target, request: CodeRequest, timeout: float) -> RemoteCode:
    """Make the voucher and list it in the store's channel (one attempt: see the module)."""
    token = str(target.credentials.get("token") or "")
    channel_id = str(target.credentials.get("channel_id") or "")
    if not token:
        raise Permanent("saleor: the connection has no API token")
    if not channel_id:
        raise Permanent("saleor: the connection has no channel id (credentials channel_id)")
    url = graphql_url(target)
    listing = listing_input(request, channel_id)
    session = Session(
        timeout=timeout,
        idempotency_key=request.idempotency_key,
        secrets=(token,),
        platform="saleor",
    )
    voucher, errors = _payload(
        session,
        _post(session, url, token, _CREATE, {"input": voucher_input(request)}),
        "voucherCreate",
    )
    existed = False
    if errors:
        if not any(e.get("code") in ("UNIQUE", "ALREADY_EXISTS") for e in errors):
            raise session.fail(Permanent, f"refused: {_describe(errors)}")
        found = _find(session, url, token, request.code)
        if found is None:
            raise session.fail(Transient, f"the code {request.code} is taken but not found yet")
        existed = True
        listed = {
            str((item.get("channel") or {}).get("id"))
            for item in found.get("channelListings") or []
            if isinstance(item, dict)
        }
        if channel_id in listed:
            return RemoteCode(remote_id=str(found["id"]), existed=True)
        voucher = found
    if not isinstance(voucher, dict) or not voucher.get("id"):
        raise session.fail(Transient, "the answer has no voucher")
    remote_id = str(voucher["id"])
    _, errors = _payload(
        session,
        _post(session, url, token, _LISTING, {"id": remote_id, "input": listing}),
        "voucherChannelListingUpdate",
    )
    if errors:
        raise session.fail(Permanent, f"the channel listing was refused: {_describe(errors)}")
    return RemoteCode(remote_id=remote_id, existed=existed)
