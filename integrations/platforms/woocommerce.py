"""WooCommerce's order webhooks, read into facts (integrations/facts.py).

A WooCommerce webhook is signed with the secret the merchant typed when creating it:
``X-WC-Webhook-Signature`` is base64(HMAC-SHA256(secret, raw body)). WooCommerce has no cart or
checkout webhooks: an order that waits for payment (pending, on-hold, failed, checkout-draft) is
the shopper's checkout, one that is paid (processing, completed) is the order, refunds ride on the
order's ``refunds`` list. Pure apart from opening the connection's secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import EmailValidator

from carts import money
from carts.validation import CART_TOKEN_PATTERN, MAX_QUANTITY, PHONE_PATTERN
from integrations import selectors
from integrations.facts import (
    BadDelivery,
    CheckoutDeleted,
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
from integrations.platforms.reading import minor_units as _money
from integrations.platforms.reading import text as _text
from integrations.platforms.reading import timestamp as _time

SIGNATURE = "X-WC-Webhook-Signature"
DELIVERY_ID = "X-WC-Webhook-Delivery-ID"
TOPIC = "X-WC-Webhook-Topic"
# The key of an order's meta_data entry that carries our cart token (the storefront snippet's
# WordPress plugin writes it at checkout), binding the platform's order to the cart we saw.
CART_META_KEY = "_cart_recovery_cart"

AWAITING_PAYMENT = frozenset({"pending", "on-hold", "failed", "checkout-draft"})
PAID = frozenset({"processing", "completed"})
ORDER_TOPICS = frozenset({"order.created", "order.updated", "order.restored"})

_PING = re.compile(rb"^webhook_id=([0-9]{1,20})$")
_CART_TOKEN = re.compile(CART_TOKEN_PATTERN)
_PHONE = re.compile(PHONE_PATTERN)
_EMAIL = EmailValidator()
_MAX_BODY_LINES = 1000


def _header(headers: dict[str, str], name: str) -> str:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value.strip()
    return ""


def _is_ping(headers: dict[str, str], body: bytes) -> bool:
    """WooCommerce's test delivery when a webhook is saved: ``webhook_id=<n>``, form-encoded,
    without topic or signature. It must get a 2xx or WooCommerce refuses to save the webhook."""
    return not _header(headers, TOPIC) and _PING.match(body.strip()) is not None


class WooCommerceAdapter:
    platform = "woocommerce"

    def verify(self, *, connection: Any, headers: dict[str, str], body: bytes) -> None:
        """BadDelivery(401) unless the body carries the connection's webhook signature
        (constant-time). WooCommerce's unsigned ping passes: it says nothing we record."""
        if _is_ping(headers, body):
            return
        given = _header(headers, SIGNATURE)
        if not given:
            raise BadDelivery(401, f"The {SIGNATURE} header is missing.")
        try:
            secret = selectors.connection_webhook_secret(connection)
        except ValueError:
            secret = ""
        if not secret:
            raise BadDelivery(401, "No webhook secret is set for this store's WooCommerce.")
        expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        if not hmac.compare_digest(expected, given.encode("utf-8", "replace")):
            raise BadDelivery(401, f"The {SIGNATURE} does not match the body.")

    def read(self, *, headers: dict[str, str], body: bytes, connection: Any = None) -> Delivery:
        """The delivery's facts; BadDelivery(400) for a body we cannot read. The connection's
        ``storefront_url``, when given, makes order-pay restore links."""
        storefront_url = getattr(connection, "storefront_url", "") or ""
        if _is_ping(headers, body):
            match = _PING.match(body.strip())
            assert match is not None
            webhook = match.group(1).decode()
            return Delivery(
                delivery_id=f"ping:{webhook}",
                topic="ping",
                facts=(Ignored(f"ping: webhook {webhook} was saved"),),
                recorded=False,
            )
        delivery_id = _header(headers, DELIVERY_ID)
        if not delivery_id:
            raise BadDelivery(
                400,
                f"The {DELIVERY_ID} header is missing.",
                **{DELIVERY_ID: ["This header is required."]},
            )
        if len(delivery_id) > 128:
            raise BadDelivery(
                400,
                f"The {DELIVERY_ID} header is too long.",
                **{DELIVERY_ID: ["At most 128 characters."]},
            )
        topic = _header(headers, TOPIC).lower()[:64]
        if not topic:
            raise BadDelivery(
                400, f"The {TOPIC} header is missing.", **{TOPIC: ["This header is required."]}
            )
        if topic not in ORDER_TOPICS and topic != "order.deleted":
            return Delivery(delivery_id, topic, (Ignored(f"topic {topic} is not mapped"),))
        order = _json_object(body)
        if topic == "order.deleted":
            order_id = _id(order, "id")
            return Delivery(delivery_id, topic, (CheckoutDeleted(refs=(f"order:{order_id}",)),))
        return Delivery(delivery_id, topic, order_facts(order, storefront_url=storefront_url))


ADAPTER = WooCommerceAdapter()


def order_facts(order: dict[str, Any], *, storefront_url: str = "") -> tuple[Fact, ...]:
    """What one WooCommerce order (REST API v3 shape) says, by its status."""
    order_id = _id(order, "id")
    status = _text(order, "status", 32).lower()
    currency = _currency(order)
    refs = [f"order:{order_id}"]
    cart = _cart_token(order)
    if cart:
        refs.append(f"ours:{cart}")
    if status in AWAITING_PAYMENT:
        return (
            CheckoutSnapshot(
                refs=tuple(refs),
                updated_at=_time(order, "date_modified_gmt"),
                currency=currency,
                lines=_lines(order, currency),
                contact=_contact(order),
                checkout=True,
                restore_url=_restore_url(order, order_id, storefront_url),
            ),
        )
    if status in PAID:
        return (
            _placed(order, order_id, tuple(refs), currency),
            *_refunds(order, order_id, currency),
        )
    if status == "refunded":
        # Placed first: a refunded order that arrives before (or instead of) its paid delivery
        # still converts its cart; the order's id makes the second one a duplicate.
        refunds = _refunds(order, order_id, currency)
        if not refunds:
            refunds = (
                OrderRefunded(
                    refs=(f"order:{order_id}",),
                    order_id=order_id,
                    amount=_money(order.get("total"), currency, "total"),
                    currency=currency,
                    refund_id=f"{order_id}:full",
                    refunded_at=_time(order, "date_modified_gmt"),
                ),
            )
        return (_placed(order, order_id, tuple(refs), currency), *refunds)
    if status == "cancelled":
        return (Ignored("cancelled: the order never completed"),)
    return (Ignored(f"status {status or '(none)'} is not mapped"),)


def _placed(order: dict[str, Any], order_id: str, refs: tuple[str, ...], currency: str) -> Fact:
    codes = []
    coupon_lines = order.get("coupon_lines") or []
    if not isinstance(coupon_lines, list):
        raise _bad("coupon_lines", "Expected a list.")
    for coupon in coupon_lines[:_MAX_BODY_LINES]:
        if isinstance(coupon, dict) and isinstance(coupon.get("code"), str):
            code = coupon["code"].strip()[:64]
            if code and code not in codes:
                codes.append(code)
    return OrderPlaced(
        refs=refs,
        order_id=order_id,
        total=_money(order.get("total"), currency, "total"),
        currency=currency,
        placed_at=_time(order, "date_paid_gmt") or _time(order, "date_created_gmt"),
        discount_codes=tuple(codes),
        contact=_contact(order),
        lines=_lines(order, currency),
    )


def _refunds(order: dict[str, Any], order_id: str, currency: str) -> tuple[OrderRefunded, ...]:
    """One fact per refund WooCommerce lists (each with its own id), so a later delivery that
    lists one more refund adds only that one. A refund's ``total`` is negative."""
    refunds = order.get("refunds") or []
    if not isinstance(refunds, list):
        raise _bad("refunds", "Expected a list.")
    at = _time(order, "date_modified_gmt")
    out = []
    for i, refund in enumerate(refunds[:_MAX_BODY_LINES]):
        if not isinstance(refund, dict):
            raise _bad(f"refunds.{i}", "Expected an object.")
        refund_id = _id(refund, "id", where=f"refunds.{i}.id")
        amount = _money(
            _negated(refund.get("total"), f"refunds.{i}.total"), currency, f"refunds.{i}.total"
        )
        if not amount:
            continue  # a zero refund moves no money
        out.append(
            OrderRefunded(
                refs=(f"order:{order_id}",),
                order_id=order_id,
                amount=amount,
                currency=currency,
                refund_id=refund_id,
                refunded_at=at,
            )
        )
    return tuple(out)


def _negated(value: Any, where: str) -> str:
    try:
        return str(-Decimal(str(value)))
    except (InvalidOperation, ValueError):
        raise _bad(where, "Expected a decimal amount.") from None


def _lines(order: dict[str, Any], currency: str) -> tuple[Line, ...]:
    items = order.get("line_items") or []
    if not isinstance(items, list):
        raise _bad("line_items", "Expected a list.")
    if len(items) > _MAX_BODY_LINES:
        raise _bad("line_items", f"At most {_MAX_BODY_LINES} lines.")
    lines = []
    for i, item in enumerate(items):
        where = f"line_items.{i}"
        if not isinstance(item, dict):
            raise _bad(where, "Expected an object.")
        quantity = item.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            raise _bad(f"{where}.quantity", "Expected a whole number.")
        if quantity <= 0:
            continue  # WooCommerce keeps fully refunded lines at 0 (or below): nothing in the cart
        if quantity > MAX_QUANTITY:
            raise _bad(f"{where}.quantity", f"At most {MAX_QUANTITY}.")
        sku = _text(item, "sku", 128)
        if not sku:
            variation = _optional_id(item, "variation_id")
            sku = f"variation:{variation}" if variation else f"product:{_id(item, 'product_id')}"
        price = item.get("price")
        if price is None or price == "":
            # Older payloads: the line's subtotal (before discounts) over its quantity.
            try:
                price = Decimal(str(item.get("subtotal"))) / quantity
            except (InvalidOperation, ValueError):
                raise _bad(f"{where}.price", "Expected a decimal amount.") from None
        name = html.unescape(_text(item, "name", 2048))
        lines.append(
            Line(
                sku=sku,
                name=(name.strip() or sku)[:512],
                quantity=quantity,
                unit_price=_money(price, currency, f"{where}.price"),
            )
        )
    return tuple(lines)


def _contact(order: dict[str, Any]) -> Contact | None:
    billing = order.get("billing")
    if not isinstance(billing, dict):
        return None
    email = _text(billing, "email", 255)
    if not email or len(email) > 254:
        return None
    try:
        _EMAIL(email)
    except DjangoValidationError:
        return None  # the order still counts; a contact we cannot mail is no contact
    phone = _text(billing, "phone", 64)
    return Contact(email=email, phone=phone if _PHONE.match(phone) else "")


def _restore_url(order: dict[str, Any], order_id: str, storefront_url: str) -> str:
    """Where the shopper pays this order: the order-pay page (it needs the order's key), or the
    payment_url WooCommerce gives."""
    key = order.get("order_key")
    if storefront_url and isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_]{1,64}", key):
        base = storefront_url.rstrip("/")
        return f"{base}/checkout/order-pay/{quote(order_id)}/?pay_for_order=true&key={quote(key)}"
    payment_url = order.get("payment_url")
    if isinstance(payment_url, str) and re.match(r"https?://[^\s]{1,2040}$", payment_url):
        return payment_url
    return ""


def _cart_token(order: dict[str, Any]) -> str:
    meta = order.get("meta_data") or []
    if not isinstance(meta, list):
        return ""
    for entry in meta[:_MAX_BODY_LINES]:
        if isinstance(entry, dict) and entry.get("key") == CART_META_KEY:
            value = entry.get("value")
            if isinstance(value, str) and _CART_TOKEN.match(value.strip()):
                return value.strip()
    return ""


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadDelivery(400, "The body is not JSON.", body=["Expected a JSON object."]) from None
    if not isinstance(data, dict):
        raise BadDelivery(400, "The body is not a JSON object.", body=["Expected a JSON object."])
    return data


def _id(data: dict[str, Any], key: str, *, where: str = "") -> str:
    value = _optional_id(data, key, where=where)
    if not value:
        raise _bad(where or key, "Expected a positive whole number.")
    return value


def _optional_id(data: dict[str, Any], key: str, *, where: str = "") -> str:
    value = data.get(key)
    if value is None or value == 0 or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _bad(where or key, "Expected a positive whole number.")
    text = str(value).strip()
    if not re.fullmatch(r"[1-9][0-9]{0,19}", text):
        raise _bad(where or key, "Expected a positive whole number.")
    return text


def _currency(order: dict[str, Any]) -> str:
    currency = _text(order, "currency", 8).upper()
    if not money.is_currency(currency):
        raise _bad("currency", "Expected an ISO 4217 currency code.")
    return currency
