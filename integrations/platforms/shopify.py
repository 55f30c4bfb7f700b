"""Shopify's webhooks: verified with the app's client secret (X-Shopify-Hmac-Sha256, base64 of the
HMAC-SHA256 of the raw body) and read into facts (integrations/facts.py).

Pure but for the secret: no ORM writes, no clock. Header names arrive lower-cased. Ids are kept as
strings (json.loads keeps big integers exact) and prices are read as decimals, never floats.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

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

PLATFORM = "shopify"

CHECKOUT_TOPICS = frozenset({"checkouts/create", "checkouts/update"})
CART_TOPICS = frozenset({"carts/create", "carts/update"})
ORDER_TOPICS = frozenset({"orders/create", "orders/paid"})
MAPPED_TOPICS = (
    CHECKOUT_TOPICS | CART_TOPICS | ORDER_TOPICS | {"checkouts/delete", "refunds/create"}
)


logger = logging.getLogger("integrations.inbound")


class ShopifyAdapter:
    platform = PLATFORM

    def verify(self, *, connection: Any, headers: dict[str, str], body: bytes) -> None:
        """401 unless X-Shopify-Hmac-Sha256 is the body's HMAC under the connection's secret."""
        given = headers.get("x-shopify-hmac-sha256", "")
        if not given:
            raise BadDelivery(401, "The X-Shopify-Hmac-Sha256 header is missing.")
        try:
            secret = selectors.connection_webhook_secret(connection)
        except ValueError:  # sealed under a SECRET_KEY no longer known (docs/operations.md)
            logger.error(
                "Shopify connection %s: its webhook secret cannot be opened", connection.pk
            )
            raise BadDelivery(
                401, "This shop's webhook secret cannot be read; set it again."
            ) from None
        if not secret:
            raise BadDelivery(401, "This shop's connection has no webhook secret set.")
        expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise BadDelivery(401, "The X-Shopify-Hmac-Sha256 signature does not match the body.")

    def read(self, *, headers: dict[str, str], body: bytes, connection: Any = None) -> Delivery:
        delivery_id = headers.get("x-shopify-webhook-id", "").strip()
        if not delivery_id:
            raise BadDelivery(
                400,
                "The X-Shopify-Webhook-Id header is missing.",
                **{"X-Shopify-Webhook-Id": ["This header is required."]},
            )
        check_delivery_id(delivery_id, "X-Shopify-Webhook-Id")
        topic = headers.get("x-shopify-topic", "").strip()[:64]
        if not topic:
            raise BadDelivery(
                400,
                "The X-Shopify-Topic header is missing.",
                **{"X-Shopify-Topic": ["This header is required."]},
            )
        if topic not in MAPPED_TOPICS:
            return Delivery(delivery_id, topic, (Ignored(f"Topic {topic} is not mapped."),))
        payload = json_object(body)
        return Delivery(delivery_id, topic, (_fact(topic, payload),))


ADAPTER = ShopifyAdapter()


def _fact(topic: str, p: Mapping[str, Any]) -> Fact:
    if topic in CHECKOUT_TOPICS:
        return _checkout(p)
    if topic in CART_TOPICS:
        return _cart(p)
    if topic == "checkouts/delete":
        refs = _refs(("checkout-id", p.get("id")), ("cart", p.get("cart_token")))
        if not refs:
            raise bad("id", "A deleted checkout needs its id or cart_token.")
        return CheckoutDeleted(refs=refs)
    if topic in ORDER_TOPICS:
        return _order(p)
    return _refund(p)


def _checkout(p: Mapping[str, Any]) -> CheckoutSnapshot:
    refs = _refs(
        ("cart", p.get("cart_token")), ("checkout", p.get("token")), ("checkout-id", p.get("id"))
    )
    if not refs:
        raise bad("token", "A checkout needs its token, cart_token or id.")
    currency = read_currency(p.get("presentment_currency") or p.get("currency"), "currency")
    return CheckoutSnapshot(
        refs=refs,
        updated_at=read_timestamp(p.get("updated_at"), "updated_at"),
        currency=currency,
        lines=_lines(p.get("line_items"), currency),
        contact=_contact(p),
        checkout=True,
        restore_url=read_url(p.get("abandoned_checkout_url")),
        completed=p.get("completed_at") is not None,
    )


def _cart(p: Mapping[str, Any]) -> CheckoutSnapshot:
    refs = _refs(("cart", p.get("token") or p.get("id")))
    if not refs:
        raise bad("token", "A cart needs its token.")
    items = p.get("line_items")
    currency = ""
    if isinstance(items, list):
        for item in items:
            money = _get(item, "price_set", "presentment_money", "currency_code")
            if money:
                currency = str(money)
                break
    if not currency and isinstance(p.get("currency"), str):
        currency = str(p["currency"])
    if items:
        currency = read_currency(currency, "line_items.price_set.presentment_money")
    return CheckoutSnapshot(
        refs=refs,
        updated_at=read_timestamp(p.get("updated_at"), "updated_at"),
        currency=currency,
        lines=_lines(items, currency),
        checkout=False,
    )


def _order(p: Mapping[str, Any]) -> OrderPlaced:
    order_id = read_id(p.get("id"), "id", required=True)
    refs = _refs(
        ("order", order_id), ("cart", p.get("cart_token")), ("checkout", p.get("checkout_token"))
    )
    presentment = _get(p, "total_price_set", "presentment_money")
    if isinstance(presentment, Mapping) and presentment.get("amount") is not None:
        currency = read_currency(presentment.get("currency_code"), "total_price_set")
        total = read_amount(presentment.get("amount"), currency, "total_price_set")
    else:
        currency = read_currency(p.get("presentment_currency") or p.get("currency"), "currency")
        total = read_amount(p.get("total_price"), currency, "total_price")
    codes: list[str] = []
    raw_codes = p.get("discount_codes") or []
    if not isinstance(raw_codes, list):
        raise bad("discount_codes", "Expected a list.")
    for entry in raw_codes:
        code = entry.get("code") if isinstance(entry, Mapping) else None
        if isinstance(code, str) and code.strip():
            codes.append(code.strip()[:64])
    placed_at = read_timestamp(p.get("processed_at") or p.get("created_at"), "created_at")
    return OrderPlaced(
        refs=refs,
        order_id=order_id,
        total=total,
        currency=currency,
        placed_at=placed_at,
        discount_codes=tuple(codes),
        contact=_contact(p),
        lines=_lines(p.get("line_items"), currency),
    )


def _refund(p: Mapping[str, Any]) -> Fact:
    order_id = read_id(p.get("order_id"), "order_id", required=True)
    refund_id = read_id(p.get("id"), "id", required=True)
    transactions = p.get("transactions") or []
    if not isinstance(transactions, list):
        raise bad("transactions", "Expected a list.")
    amount = 0
    currency = ""
    for i, t in enumerate(transactions):
        if not isinstance(t, Mapping):
            raise bad(f"transactions.{i}", "Expected an object.")
        if t.get("kind") != "refund" or t.get("status") != "success":
            continue
        t_currency = read_currency(t.get("currency") or currency, f"transactions.{i}.currency")
        if currency and t_currency != currency:
            raise bad(f"transactions.{i}.currency", "Refunds in two currencies.")
        currency = t_currency
        amount += read_amount(t.get("amount"), currency, f"transactions.{i}.amount")
    if amount == 0:
        return Ignored("The refund has no successful refund transaction (no money returned).")
    check_money(amount, "transactions")
    return OrderRefunded(
        refs=(f"order:{order_id}",),
        order_id=order_id,
        amount=amount,
        currency=currency,
        refund_id=refund_id,
        refunded_at=read_timestamp(p.get("processed_at") or p.get("created_at"), "created_at"),
    )


def _lines(items: Any, currency: str) -> tuple[Line, ...]:
    """Line items merged by SKU (Shopify may list the same SKU twice)."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise bad("line_items", "Expected a list.")
    merged: dict[str, Line] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise bad(f"line_items.{i}", "Expected an object.")
        quantity = read_quantity(item.get("quantity"), f"line_items.{i}.quantity")
        if quantity == 0:
            continue
        sku = item.get("sku")
        if not isinstance(sku, str) or not sku.strip():
            variant = read_id(item.get("variant_id"), f"line_items.{i}.variant_id")
            if not variant:
                variant = read_id(item.get("id"), f"line_items.{i}.id")
            if not variant:
                raise bad(f"line_items.{i}.sku", "A line needs a sku or a variant_id.")
            sku = f"variant:{variant}"
        sku = sku.strip()
        if len(sku) > 128:
            raise bad(f"line_items.{i}.sku", "At most 128 characters.")
        title = item.get("title") or item.get("presentment_title") or item.get("name")
        name = str(title).strip()[:512] if isinstance(title, str) and title.strip() else sku
        price = read_amount(item.get("price"), currency, f"line_items.{i}.price")
        known = merged.get(sku)
        if known is not None:
            merged[sku] = Line(sku, known.name, known.quantity + quantity, known.unit_price)
        else:
            merged[sku] = Line(sku=sku, name=name, quantity=quantity, unit_price=price)
    return tuple(merged.values())


def _contact(p: Mapping[str, Any]) -> Contact | None:
    email = p.get("email") or p.get("contact_email")
    customer = p.get("customer")
    if not email and isinstance(customer, Mapping):
        email = customer.get("email")
    if not isinstance(email, str) or not email.strip():
        return None
    accepts = p.get("buyer_accepts_marketing")
    phone = p.get("phone")
    locale = p.get("customer_locale")
    return Contact(
        email=email.strip(),
        phone=phone.strip() if isinstance(phone, str) else "",
        accepts_marketing=accepts if isinstance(accepts, bool) else None,
        locale=locale.strip() if isinstance(locale, str) else "",
    )


def _refs(*pairs: tuple[str, Any]) -> tuple[str, ...]:
    out: list[str] = []
    for kind, value in pairs:
        ident = read_id(value, kind)
        if ident and f"{kind}:{ident}" not in out:
            out.append(f"{kind}:{ident}")
    return tuple(out)


def _get(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


# Reading platform JSON (pure; usable by every platform's adapter) --------------------------------

_DELIVERY_ID_MAX = 128


def bad(field: str, message: str) -> BadDelivery:
    """A 400 naming the payload's field."""
    return BadDelivery(400, f"{field}: {message}", **{field: [message]})


def check_delivery_id(delivery_id: str, header: str) -> None:
    if len(delivery_id) > _DELIVERY_ID_MAX or not delivery_id.isprintable():
        raise BadDelivery(
            400,
            f"The {header} header is not a delivery id.",
            **{header: [f"At most {_DELIVERY_ID_MAX} printable characters."]},
        )


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object: big integers exact, decimals as Decimal (never floats), depth
    bounded; 400 for anything else."""
    from carts import parsers

    try:
        value = parsers.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadDelivery(
            400, "The body is not valid JSON.", non_field_errors=[f"Not valid JSON: {exc}"]
        ) from None
    if not isinstance(value, dict):
        raise BadDelivery(
            400, "The body is not a JSON object.", non_field_errors=["Expected a JSON object."]
        )
    return value


def read_id(value: Any, field: str, *, required: bool = False) -> str:
    """A platform id (integer or string) as exact text; "" when absent."""
    if value is None or value == "":
        if required:
            raise bad(field, "This field is required.")
        return ""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise bad(field, "Expected an integer or a string id.")
    text = str(value).strip()
    if not text or len(text) > 128 or not text.isprintable():
        raise bad(field, "Expected an id of 1 to 128 printable characters.")
    return text


def read_currency(value: Any, field: str) -> str:
    from carts import money

    code = value.strip().upper() if isinstance(value, str) else ""
    if not money.is_currency(code):
        raise bad(field, f"{str(value)[:16]!r} is not an ISO 4217 currency code.")
    return code


def check_money(minor: int, field: str) -> int:
    from carts.validation import MAX_MONEY

    if minor > MAX_MONEY:
        raise bad(field, f"At most {MAX_MONEY} minor units.")
    return minor


def read_amount(value: Any, currency_code: str, field: str) -> int:
    """A decimal amount in major units ("19.99" or an exact JSON number) as minor units."""
    from carts import money

    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise bad(field, 'Expected a decimal amount such as "19.99".')
    try:
        parsed = Decimal(str(value).strip())
    except InvalidOperation:
        raise bad(field, 'Expected a decimal amount such as "19.99".') from None
    if not parsed.is_finite() or parsed < 0 or parsed.adjusted() > 15:
        raise bad(field, 'Expected a decimal amount such as "19.99", at least 0.')
    return check_money(money.to_minor_units(parsed, currency_code), field)


def read_quantity(value: Any, field: str) -> int:
    from carts.validation import MAX_QUANTITY

    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(field, "Expected an integer.")
    if value < 0 or value > MAX_QUANTITY:
        raise bad(field, f"Expected 0 to {MAX_QUANTITY}.")
    return value


def read_timestamp(value: Any, field: str) -> datetime | None:
    """An ISO 8601 time (the platform's clock) as aware UTC; None when absent."""
    from datetime import UTC

    from django.utils.dateparse import parse_datetime

    if value is None or value == "":
        return None
    parsed = None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
    if parsed is None:
        raise bad(field, "Expected an ISO 8601 date and time.")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise bad(field, "Date and time out of range.") from None


def read_url(value: Any) -> str:
    """An http(s) URL of at most 2048 characters, else "" (a restore link is optional)."""
    if not isinstance(value, str):
        return ""
    value = value.strip()
    if len(value) > 2048 or not value.startswith(("https://", "http://")):
        return ""
    from django.core.exceptions import ValidationError
    from django.core.validators import URLValidator

    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        return ""
    return value
