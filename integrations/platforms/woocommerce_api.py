"""WooCommerce: discount codes through the REST API (``wc/v3``).

Followed:
- https://woocommerce.github.io/woocommerce-rest-api-docs/#create-a-coupon: ``POST
  /wp-json/wc/v3/coupons`` with ``code``, ``discount_type`` (``percent``, ``fixed_cart``),
  ``amount`` (a decimal string in the shop's currency), ``usage_limit``, ``individual_use``,
  ``date_expires_gmt``, ``minimum_amount``, ``free_shipping``; ``GET /wp-json/wc/v3/coupons?code=``
  lists a coupon by its code (WooCommerce stores codes lower-cased).
- https://woocommerce.github.io/woocommerce-rest-api-docs/#authentication-over-https: HTTP Basic
  with the consumer key and secret, over HTTPS only (over plain HTTP WooCommerce wants OAuth 1.0a
  signatures, and Basic would put the secret on the wire); plain HTTP is accepted for loopback
  test servers only.
- WooCommerce's WC_REST_Coupons_Controller refuses a second coupon with the same code with
  ``woocommerce_rest_coupon_code_already_exists`` (HTTP 400).

Needs a REST API key with Read/Write permission. WooCommerce does not honour Idempotency-Key; a
retry after a lost answer meets the duplicate-code error and is confirmed by the look-up.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
ALREADY_EXISTS = "woocommerce_rest_coupon_code_already_exists"


def coupons_url(target: Target) -> str:
    parts = urlsplit(target.api_url.strip())
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/wp-json/wc/v3/coupons"
    raise Permanent(
        "woocommerce: the shop's URL must start with https:// (the API key is sent with each call)"
    )


def _gmt(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat()


def coupon_body(request: CodeRequest) -> dict[str, Any]:
    """The coupon as WooCommerce's create endpoint takes it."""
    body: dict[str, Any] = {
        "code": request.code,
        "description": request.title or "Cart recovery",
        "usage_limit": 1,
        "usage_limit_per_user": 1,
        "individual_use": True,
        "date_expires_gmt": _gmt(request.expires_at),
        "free_shipping": False,
    }
    if request.kind == "percent":
        body.update(discount_type="percent", amount=str(percent_points(request.amount)))
    elif request.kind == "fixed":
        if request.amount <= 0:
            raise Permanent(f"woocommerce: a fixed discount must be positive, not {request.amount}")
        body.update(
            discount_type="fixed_cart", amount=major_units(request.amount, request.currency)
        )
    elif request.kind == "free_shipping":
        # Applies where the shop's shipping method offers "free shipping: a valid coupon".
        body.update(discount_type="fixed_cart", amount="0", free_shipping=True)
    else:
        raise Permanent(f"woocommerce: unknown discount kind {request.kind!r}")
    if request.min_cart_value > 0:
        body["minimum_amount"] = major_units(request.min_cart_value, request.currency)
    return body


def _error(session: Session, response: Any) -> tuple[str, Exception]:
    """The WooCommerce error code of a refused call, and what to raise for it."""
    code, message = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code", ""))
        message = str(body.get("message", ""))
        params = (
            (body.get("data") or {}).get("params") if isinstance(body.get("data"), dict) else None
        )
        if isinstance(params, dict) and params:
            message += " " + "; ".join(f"{k}: {v}" for k, v in params.items())
    detail = f"{code}: {message}" if code else ""
    return code, session.http_error(response, detail)


def code_create(*, target: Target, request: CodeRequest, timeout: float) -> RemoteCode:
    """Make the coupon (one attempt, at most two calls: the create, and the look-up when the code
    exists already, i.e. an earlier attempt made it)."""
    key = str(target.credentials.get("consumer_key") or "")
    secret = str(target.credentials.get("consumer_secret") or "")
    if not key or not secret:
        raise Permanent("woocommerce: the connection has no consumer key and secret")
    url = coupons_url(target)
    session = Session(
        timeout=timeout,
        idempotency_key=request.idempotency_key,
        secrets=(key, secret),
        platform="woocommerce",
    )
    response = session.request(
        "POST",
        url,
        headers={"Content-Type": "application/json"},
        json_body=coupon_body(request),
        auth=(key, secret),
    )
    if response.status_code in (200, 201):
        created = session.json(response)
        if isinstance(created, dict) and created.get("id") is not None:
            return RemoteCode(remote_id=str(created["id"]))
        raise session.fail(Transient, "the answer has no coupon id")
    code, error = _error(session, response)
    if code != ALREADY_EXISTS:
        raise error
    found = session.request(
        "GET", url, headers={}, params={"code": request.code}, auth=(key, secret)
    )
    if found.status_code != 200:
        raise _error(session, found)[1]
    coupons = session.json(found)
    for coupon in coupons if isinstance(coupons, list) else []:
        if (
            isinstance(coupon, dict)
            and str(coupon.get("code", "")).lower() == request.code.lower()
            and coupon.get("id") is not None
        ):
            return RemoteCode(remote_id=str(coupon["id"]), existed=True)
    # It exists (said the create) yet is not listed: in the trash, say. The next attempt retries.
    raise session.fail(Transient, f"the code {request.code} exists but is not listed")
