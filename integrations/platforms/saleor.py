"""Saleor's webhooks, read into facts (integrations/facts.py).

Saleor signs each delivery with its instance's RSA key: ``Saleor-Signature`` is a JWS with a
detached payload, ``base64url(header)..base64url(signature)``, header
``{"alg":"RS256","kid":...,"b64":false,"crit":["b64"]}``, so the signing input is
``base64url(header) + "." + raw body`` (saleor/core/jwt_manager.py, ``jws_encode``). The public
keys are the instance's JWKS (``/.well-known/jwks.json``), fetched with a timeout and cached per
process. Saleor sends no delivery id: a delivery is ``<event>:<sha256 of the body>`` (a retry
resends the same stored payload).

A payload is what the app's subscription query asks for (SUBSCRIPTION below, documented in
docs/integrations.md); the legacy payloads (a list of snake_case objects) are read as far as they
carry the fields.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import EmailValidator

from carts import money
from carts.validation import MAX_QUANTITY
from integrations.facts import (
    BadDelivery,
    CheckoutSnapshot,
    Contact,
    Delivery,
    Fact,
    Ignored,
    Line,
    OrderPlaced,
    OrderRefunded,
)
from integrations.platforms.reading import bad as _bad
from integrations.platforms.reading import decimal as _decimal
from integrations.platforms.reading import minor_units as _money
from integrations.platforms.reading import text as _text
from integrations.platforms.reading import timestamp as _time
from integrations.platforms.saleor_jwks import JWKS, b64decode

SIGNATURE = "Saleor-Signature"
EVENT = "Saleor-Event"
CHECKOUT_EVENTS = frozenset({"checkout_created", "checkout_updated"})
ORDER_EVENTS = frozenset({"order_created", "order_fully_paid", "order_refunded"})

# The subscription query the app's webhook uses (one webhook for the five events).
SUBSCRIPTION = """\
subscription {
  event {
    __typename
    issuedAt
    ... on CheckoutCreated { checkout { ...CartRecoveryCheckout } }
    ... on CheckoutUpdated { checkout { ...CartRecoveryCheckout } }
    ... on OrderCreated { order { ...CartRecoveryOrder } }
    ... on OrderFullyPaid { order { ...CartRecoveryOrder } }
    ... on OrderRefunded { order { ...CartRecoveryOrder } }
  }
}

fragment CartRecoveryMoney on TaxedMoney { gross { amount currency } }

fragment CartRecoveryCheckout on Checkout {
  id
  token
  updatedAt
  email
  user { email }
  voucherCode
  totalPrice { ...CartRecoveryMoney }
  lines {
    quantity
    variant { id sku name product { name } }
    unitPrice { ...CartRecoveryMoney }
    totalPrice { ...CartRecoveryMoney }
  }
}

fragment CartRecoveryOrder on Order {
  id
  number
  checkoutId
  created
  updatedAt
  userEmail
  voucherCode
  total { ...CartRecoveryMoney }
  totalRefunded { amount currency }
  lines {
    productSku
    productVariantId
    productName
    variantName
    quantity
    unitPrice { ...CartRecoveryMoney }
  }
  transactions { events { id type createdAt amount { amount currency } } }
  payments { transactions { id kind isSuccess created amount { amount currency } } }
}
"""

logger = logging.getLogger("integrations.inbound")

_MAX_LINES = 1000
_EMAIL = EmailValidator()


def _header(headers: dict[str, str], *names: str) -> str:
    wanted = {name.lower() for name in names}
    for key, value in headers.items():
        if key.lower() in wanted:
            return value.strip()
    return ""


# Keys


def jwks_url(connection: Any) -> str:
    """The connection's JWKS URL, or the one at its API URL's origin."""
    if getattr(connection, "jwks_url", ""):
        return str(connection.jwks_url)
    api_url = getattr(connection, "api_url", "") or ""
    if api_url:
        parts = urlsplit(api_url)
        return f"{parts.scheme}://{parts.netloc}/.well-known/jwks.json"
    return ""


# The adapter


class SaleorAdapter:
    platform = "saleor"

    def verify(self, *, connection: Any, headers: dict[str, str], body: bytes) -> None:
        """BadDelivery(401) unless ``Saleor-Signature`` is the instance's RS256 JWS of the raw
        body; 503 when its keys cannot be fetched (Saleor retries). Fetches: no transaction."""
        token = _header(headers, SIGNATURE, "X-" + SIGNATURE)
        if not token:
            raise BadDelivery(401, f"The {SIGNATURE} header is missing.")
        parts = token.split(".")
        if len(parts) != 3 or parts[1] or not parts[0] or not parts[2]:
            raise BadDelivery(
                401,
                f"The {SIGNATURE} is not a JWS with a detached payload (a webhook with a"
                " secret key is signed with HMAC instead: remove its secret key in Saleor).",
            )
        try:
            header = json.loads(b64decode(parts[0]))
            signature = b64decode(parts[2])
        except (ValueError, RecursionError):
            raise BadDelivery(401, f"The {SIGNATURE} header cannot be read.") from None
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            raise BadDelivery(401, f"The {SIGNATURE} is not signed with RS256.")
        crit = header.get("crit", [])
        if not isinstance(crit, list) or any(name != "b64" for name in crit):
            raise BadDelivery(401, f"The {SIGNATURE} names critical parameters we do not know.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise BadDelivery(401, f"The {SIGNATURE} names no key (kid).")
        if header.get("b64", True) is False:
            signed = parts[0].encode() + b"." + body
        else:
            signed = parts[0].encode() + b"." + base64.urlsafe_b64encode(body).rstrip(b"=")
        url = jwks_url(connection)
        if not url:
            raise BadDelivery(401, "No JWKS URL is set for this store's Saleor.")
        key = JWKS.key(url, kid, timeout=settings.INTEGRATIONS_HTTP_TIMEOUT)
        if key is None:
            raise BadDelivery(401, f"Saleor's keys at {url} have no key {kid[:64]!r}.")
        try:
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise BadDelivery(401, f"The {SIGNATURE} does not match the body.") from None

    def read(self, *, headers: dict[str, str], body: bytes, connection: Any = None) -> Delivery:
        """The delivery's facts; BadDelivery(400) for a body we cannot read. The connection's
        ``storefront_url``, when given, makes the checkout's restore link."""
        event = _header(headers, EVENT, "X-" + EVENT).lower()[:64]
        if not event:
            raise BadDelivery(
                400, f"The {EVENT} header is missing.", **{EVENT: ["This header is required."]}
            )
        delivery_id = f"{event}:{hashlib.sha256(body).hexdigest()}"
        if event not in CHECKOUT_EVENTS | ORDER_EVENTS:
            return Delivery(delivery_id, event, (Ignored(f"event {event} is not mapped"),))
        storefront_url = getattr(connection, "storefront_url", "") or ""
        payload = _payload(body)
        # The signature covers the body, not the Saleor-Event header: the body's own
        # __typename (the documented subscription asks for it) must be the event named.
        typename = payload.get("__typename")
        if isinstance(typename, str) and _snake(typename) != event:
            raise BadDelivery(
                400,
                f"The {EVENT} header says {event}; the signed payload is a {typename[:64]}.",
                **{EVENT: ["Does not match the payload's __typename."]},
            )
        if event in CHECKOUT_EVENTS:
            checkout = _object(payload, "checkout", "Checkout")
            return Delivery(
                delivery_id, event, (checkout_snapshot(checkout, payload, storefront_url),)
            )
        order = _object(payload, "order", "Order")
        return Delivery(delivery_id, event, order_facts(event, order))


ADAPTER = SaleorAdapter()


def _snake(typename: str) -> str:
    """``CheckoutCreated`` -> ``checkout_created`` (Saleor's event names)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", typename).lower()


def _payload(body: bytes) -> dict[str, Any]:
    """The event object: the subscription's ``event`` as Saleor sends it, also inside
    ``{"data": {"event": ...}}`` / ``{"data": {"orderCreated": ...}}``, or a legacy list."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadDelivery(400, "The body is not JSON.", body=["Expected a JSON object."]) from None
    if isinstance(data, list):
        if len(data) != 1 or not isinstance(data[0], dict):
            raise BadDelivery(400, "A legacy payload holds one object.", body=["Expected one."])
        return {"legacy": data[0]}
    if not isinstance(data, dict):
        raise BadDelivery(400, "The body is not a JSON object.", body=["Expected a JSON object."])
    inner = data.get("data")
    if isinstance(inner, dict):
        data = inner
        if len(data) == 1 and "event" not in data:
            (only,) = data.values()
            data = only if isinstance(only, dict) else data
    event = data.get("event")
    return event if isinstance(event, dict) else data


def _object(payload: dict[str, Any], key: str, legacy_type: str) -> dict[str, Any]:
    legacy = payload.get("legacy")
    if isinstance(legacy, dict):
        if legacy.get("type", legacy_type) != legacy_type:
            raise _bad("body", f"Expected a {legacy_type}.")
        return {**legacy, "_legacy": True}
    value = payload.get(key)
    if not isinstance(value, dict):
        raise _bad(key, "Expected an object (is the subscription query the documented one?).")
    return value


def checkout_snapshot(
    checkout: dict[str, Any], payload: dict[str, Any], storefront_url: str
) -> CheckoutSnapshot:
    legacy = bool(checkout.get("_legacy"))
    global_id = _text(checkout, "id", 200)
    token = _text(checkout, "token", 128) or _token_from_global_id(global_id, "Checkout")
    if not token:
        raise _bad("checkout.token", "Expected the checkout's token (or its id).")
    total = checkout.get("totalPrice")
    currency = _currency_of(
        _gross(total, "checkout.totalPrice")[1] if isinstance(total, dict) else "",
        checkout.get("currency"),
        "checkout.totalPrice.gross.currency",
    )
    updated = (
        _time(checkout, "updatedAt")
        or _time(checkout, "last_change")
        or _time(checkout, "lastChange")
        or _time(payload, "issuedAt")
    )
    restore = ""
    if storefront_url:
        checkout_id = global_id or base64.b64encode(f"Checkout:{token}".encode()).decode()
        restore = f"{storefront_url.rstrip('/')}/checkout?checkout={quote(checkout_id, safe='')}"
    return CheckoutSnapshot(
        refs=(f"checkout:{token}",),
        updated_at=updated,
        currency=currency,
        lines=_lines(checkout.get("lines"), currency, "checkout.lines", legacy=legacy),
        contact=_contact(checkout.get("email"), checkout.get("user")),
        checkout=True,
        restore_url=restore,
    )


def order_facts(event: str, order: dict[str, Any]) -> tuple[Fact, ...]:
    legacy = bool(order.get("_legacy"))
    order_id = _text(order, "id", 128)
    if not order_id:
        raise _bad("order.id", "Expected the order's id.")
    total = order.get("total")
    if isinstance(total, dict):
        amount, currency = _gross(total, "order.total")
    elif legacy and order.get("total_gross_amount") is not None:
        amount, currency = order.get("total_gross_amount"), _text(order, "currency", 8)
    else:
        return (
            Ignored(
                "order without total: the webhook's subscription query lacks"
                " total { gross { amount currency } } (see docs/integrations.md)"
            ),
        )
    currency = _currency_of(currency, None, "order.total.gross.currency")
    refs = [f"order:{order_id}"]
    checkout_token = _token_from_global_id(_text(order, "checkoutId", 200), "Checkout")
    if not checkout_token and legacy:
        checkout_token = _text(order, "checkout_token", 128)
    if checkout_token:
        refs.append(f"checkout:{checkout_token}")
    codes = []
    for code in (
        order.get("voucherCode"),
        (order.get("voucher") or {}).get("code") if isinstance(order.get("voucher"), dict) else "",
        order.get("voucher_code"),
    ):
        if isinstance(code, str) and code.strip() and code.strip()[:64] not in codes:
            codes.append(code.strip()[:64])
    placed = OrderPlaced(
        refs=tuple(refs),
        order_id=order_id,
        total=_money(amount, currency, "order.total.gross.amount"),
        currency=currency,
        placed_at=_time(order, "created"),
        discount_codes=tuple(codes),
        contact=_contact(order.get("userEmail") or order.get("user_email") or order.get("email")),
        lines=_lines(order.get("lines"), currency, "order.lines", legacy=legacy),
    )
    if event != "order_refunded":
        return (placed,)
    # Placed first: a refund that arrives before the order was seen still converts its cart.
    return (placed, *_refunds(order, order_id, currency))


def _refunds(order: dict[str, Any], order_id: str, currency: str) -> tuple[OrderRefunded, ...]:
    """One fact per successful refund the order lists (transactions' REFUND_SUCCESS events, or
    legacy payments' REFUND transactions); else one for the order's totalRefunded."""
    found: list[tuple[str, Any, datetime | None, str]] = []
    for i, transaction in enumerate(_list(order.get("transactions"), "order.transactions")):
        where = f"order.transactions.{i}.events"
        for j, event in enumerate(_list(_dict(transaction).get("events"), where)):
            event = _dict(event)
            if event.get("type") == "REFUND_SUCCESS":
                amount = _dict(event.get("amount"))
                found.append(
                    (
                        _text(event, "id", 128),
                        amount.get("amount"),
                        _time(event, "createdAt"),
                        f"{where}.{j}.amount.amount",
                    )
                )
    for i, payment in enumerate(_list(order.get("payments"), "order.payments")):
        where = f"order.payments.{i}.transactions"
        for j, transaction in enumerate(_list(_dict(payment).get("transactions"), where)):
            transaction = _dict(transaction)
            if transaction.get("kind") == "REFUND" and transaction.get("isSuccess") is True:
                amount = _dict(transaction.get("amount"))
                found.append(
                    (
                        _text(transaction, "id", 128),
                        amount.get("amount"),
                        _time(transaction, "created"),
                        f"{where}.{j}.amount.amount",
                    )
                )
    if not found:
        refunded = order.get("totalRefunded")
        if not isinstance(refunded, dict):
            return ()
        # Without the refunds listed, the order's refunded total counts once for the order.
        found.append(
            (
                f"{order_id}:refunded",
                refunded.get("amount"),
                _time(order, "updatedAt"),
                "order.totalRefunded.amount",
            )
        )
    out = []
    for refund_id, amount, at, where in found:
        if not refund_id:
            raise _bad(where.rsplit(".", 2)[0] + ".id", "Expected the refund's id.")
        minor = _money(amount, currency, where)
        if minor:
            out.append(
                OrderRefunded(
                    refs=(f"order:{order_id}",),
                    order_id=order_id,
                    amount=minor,
                    currency=currency,
                    refund_id=refund_id,
                    refunded_at=at,
                )
            )
    return tuple(out)


def _lines(value: Any, currency: str, where: str, *, legacy: bool) -> tuple[Line, ...]:
    items = _list(value, where)
    if len(items) > _MAX_LINES:
        raise _bad(where, f"At most {_MAX_LINES} lines.")
    lines = []
    for i, item in enumerate(items):
        at = f"{where}.{i}"
        if not isinstance(item, dict):
            raise _bad(at, "Expected an object.")
        quantity = item.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            raise _bad(f"{at}.quantity", "Expected a whole number.")
        if quantity <= 0:
            continue
        if quantity > MAX_QUANTITY:
            raise _bad(f"{at}.quantity", f"At most {MAX_QUANTITY}.")
        variant = _dict(item.get("variant"))
        product = _dict(variant.get("product"))
        sku = (
            _text(variant, "sku", 128)
            or _text(item, "productSku", 128)
            or _text(item, "product_sku", 128)
            or _text(item, "sku", 128)
        )
        if not sku:
            variant_id = (
                _text(variant, "id", 100)
                or _text(item, "productVariantId", 100)
                or _text(item, "variant_id", 100)
            )
            if not variant_id:
                raise _bad(f"{at}.variant", "Expected the variant's sku or id.")
            sku = f"variant:{variant_id}"
        product_name = (
            _text(product, "name", 256)
            or _text(item, "productName", 256)
            or _text(item, "product_name", 256)
        )
        variant_name = (
            _text(variant, "name", 256)
            or _text(item, "variantName", 256)
            or _text(item, "variant_name", 256)
        )
        if variant_name == product_name:
            variant_name = ""
        name = " / ".join(n for n in (product_name, variant_name) if n)
        unit = item.get("unitPrice")
        if isinstance(unit, dict):
            price, line_currency = _gross(unit, f"{at}.unitPrice")
            if line_currency and line_currency != currency:
                raise _bad(f"{at}.unitPrice.gross.currency", f"Expected {currency}.")
        elif isinstance(item.get("totalPrice"), dict):
            total, _ = _gross(item["totalPrice"], f"{at}.totalPrice")
            price = _decimal(total, f"{at}.totalPrice.gross.amount") / quantity
        elif legacy and item.get("unit_price_gross_amount") is not None:
            price = item.get("unit_price_gross_amount")
        else:
            raise _bad(f"{at}.unitPrice", "Expected the line's unit price.")
        lines.append(
            Line(
                sku=sku,
                name=(name or sku)[:512],
                quantity=quantity,
                unit_price=_money(price, currency, f"{at}.unitPrice.gross.amount"),
            )
        )
    return tuple(lines)


def _contact(email: Any, user: Any = None) -> Contact | None:
    if not (isinstance(email, str) and email.strip()) and isinstance(user, dict):
        email = user.get("email")
    if not isinstance(email, str):
        return None
    email = email.strip()
    if not email or len(email) > 254:
        return None
    try:
        _EMAIL(email)
    except DjangoValidationError:
        return None
    return Contact(email=email)


def _token_from_global_id(global_id: str, type_name: str) -> str:
    """The token inside a Saleor global id (base64 of "Checkout:<token>")."""
    if not global_id:
        return ""
    try:
        decoded = base64.b64decode(global_id, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""
    name, _, value = decoded.partition(":")
    if name != type_name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}", value):
        return ""
    return value


def _gross(value: dict[str, Any], where: str) -> tuple[Any, str]:
    gross = value.get("gross")
    if not isinstance(gross, dict):
        raise _bad(f"{where}.gross", "Expected an object with amount and currency.")
    currency = gross.get("currency")
    return gross.get("amount"), currency if isinstance(currency, str) else ""


def _currency_of(value: Any, fallback: Any, where: str) -> str:
    for candidate in (value, fallback):
        if isinstance(candidate, str) and candidate.strip():
            currency = candidate.strip().upper()[:8]
            if money.is_currency(currency):
                return currency
            break
    raise _bad(where, "Expected an ISO 4217 currency code.")


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(where, "Expected a list.")
    return value[: _MAX_LINES + 1]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
