"""The demo storefront (/demo/): a tiny shop running the storefront snippet against this server,
and the shop's server side of its checkout (/demo/order): orders come from the shop's server,
never from the browser (docs/api.md, "Sources"). A discount code is checked and redeemed by the
coupons service, as a shop's server does with /api/v1/coupons/validate and /redeem: the page
shows the price the server quotes (``"preview": true``) and the order charges that price."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from django.conf import settings
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from campaigns import coupons, discounts, errors
from carts import event_types, money
from carts.errors import EventIdConflict
from carts.models import Store
from carts.selectors import cart_state_get
from carts.services import DEMO_STORE_NAME, NewEvent, events_append
from carts.sources import Source
from recovery import cart_tokens, live

_KEY = re.compile(r"pk_[A-Za-z0-9_-]{1,200}")


class Product(TypedDict):
    sku: str
    name: str
    unit_price: int  # minor units (EUR cents), as the events carry them
    colour: str


PRODUCTS: list[Product] = [
    {"sku": "MUG-01", "name": "Stoneware mug", "unit_price": 1299, "colour": "#c96f4a"},
    {"sku": "POUR-02", "name": "Pour-over coffee kit", "unit_price": 3450, "colour": "#5b7f6a"},
    {"sku": "TEA-03", "name": "Loose-leaf tea sampler", "unit_price": 1875, "colour": "#b59a3c"},
    {"sku": "APRON-04", "name": "Linen apron", "unit_price": 2900, "colour": "#4a6a9c"},
]
CURRENCY = "EUR"
SHIPPING = (495, 995)  # the demo's standard and express shipping, minor units
_ORDER_NAMESPACE = uuid.UUID("5d0e8f0a-9a43-4c38-8f3e-3c7a64e1f2b7")


def _demo_store_key() -> str | None:
    """The demo store's publishable key from the file `make run` writes, if there is one."""
    path: Path | None = getattr(settings, "DEMO_STORE_FILE", None)
    if path is None:
        return None
    try:
        key = json.loads(Path(path).read_text()).get("publishable_key")
    except (OSError, ValueError, AttributeError):
        return None
    return key if isinstance(key, str) and _KEY.fullmatch(key) else None


def demo_storefront(request: HttpRequest) -> HttpResponse:
    given = request.GET.get("key")
    problem = ""
    if given is not None:
        key = given if _KEY.fullmatch(given) else None
        if key is None:
            problem = "The key parameter must be a publishable key (pk_...)."
    else:
        key = _demo_store_key()
        if key is None:
            problem = (
                "No demo store yet: run make run (it creates the demo store), "
                "or open this page with ?key=pk_... of a store of yours."
            )
    products = [
        {**p, "price": f"{p['unit_price'] // 100}.{p['unit_price'] % 100:02d}"} for p in PRODUCTS
    ]
    context = {
        "key": key,
        "problem": problem,
        "products": products,
        "currency": CURRENCY,
        "catalogue": {p["sku"]: p for p in PRODUCTS},
    }
    # A bad ?key= is the caller's mistake (400); no demo store yet is a page that says what to do.
    status = 400 if given is not None and key is None else 200
    return render(request, "demo/storefront.html", context, status=status)


# The shop's server side of the demo checkout ------------------------------------------------------


class DemoOrderRefused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True, slots=True)
class DemoOrder:
    order_id: str
    subtotal: int  # the cart's value
    total: int
    discount: int
    shipping: int
    duplicate: bool
    code: str | None = None  # the code applied, as the store knows it


# A code the coupons service refuses: the demo's answer (an unknown code keeps the demo's own).
_COUPON_REFUSED: dict[type[errors.CampaignsError], tuple[int, str]] = {
    errors.CouponNotFound: (400, "unknown_coupon"),
    errors.CouponAlreadyRedeemed: (409, errors.CouponAlreadyRedeemed.code),
    errors.CouponExpired: (410, errors.CouponExpired.code),
    errors.CouponNotApplicable: (422, errors.CouponNotApplicable.code),
}


def _coupon_refused(exc: errors.CampaignsError) -> DemoOrderRefused:
    status, code = _COUPON_REFUSED.get(type(exc), (400, exc.code))
    detail = "This store has no such code." if code == "unknown_coupon" else exc.message
    return DemoOrderRefused(status, code, detail)


def demo_order_place(
    *,
    store: Store,
    cart: str,
    coupon: str | None,
    shipping: int,
    now: datetime,
    preview: bool = False,
    expected_total: int | None = None,
) -> DemoOrder:
    """Place the demo cart's order as the shop's server would: the demo store only, a cart its
    browser minted, priced from the cart's state (the shop's own prices), the discount of the
    store's code it names, checked and redeemed by the coupons service in the order's commit
    (a code refused is DemoOrderRefused). One order per cart (a repeat is a duplicate). With
    ``preview``, the price it would charge, and nothing is recorded. With ``expected_total`` (the
    quote the page showed), a price that has changed since is refused (409 ``price_changed``):
    the shopper is never charged other than what they were shown."""
    demo = Store.objects.filter(name=DEMO_STORE_NAME).order_by("pk").values_list("pk", flat=True)
    if store.pk != demo.first():  # the one store_demo_ensure made, not any store of that name
        raise DemoOrderRefused(403, "not_the_demo_store", "Demo orders are for the demo store.")
    if not cart_tokens.cart_token_minted(store_id=store.pk, token=cart):
        raise DemoOrderRefused(403, "cart_not_allowed", "Not a cart of this shop's browser.")
    if shipping not in SHIPPING:
        raise DemoOrderRefused(400, "invalid_shipping", f"Shipping is one of {SHIPPING}.")
    state = cart_state_get(store_id=store.pk, token=cart)
    if state is None or not state.value:
        raise DemoOrderRefused(400, "empty_cart", "The cart is empty.")
    discount, code = 0, None
    if coupon:
        try:
            valid = coupons.coupon_validate(
                store_id=store.pk, code=coupon, cart_value=state.value, currency=CURRENCY, now=now
            )
        except errors.CampaignsError as exc:
            raise _coupon_refused(exc) from None
        code = valid.coupon.code
        discount = valid.discount_applied or 0
        if valid.coupon.kind == discounts.FREE_SHIPPING:
            shipping = 0
    event_id = uuid.uuid5(_ORDER_NAMESPACE, f"{store.pk}:{cart}")
    order_id = "D-" + event_id.hex[:10].upper()
    total = state.value - discount + shipping
    if preview:
        return DemoOrder("", state.value, total, discount, shipping, False, code)
    if expected_total is not None and expected_total != total:
        raise DemoOrderRefused(
            409,
            "price_changed",
            f"The price is now {_money(total, store)}, not {_money(expected_total, store)}: "
            "check it and place the order again.",
        )
    data: dict[str, Any] = {"order_id": order_id, "total": total, "currency": CURRENCY}
    if code:
        data["coupon"] = code
    version, payload = event_types.validate("order.placed", None, data)
    event = NewEvent(
        event_id=event_id,
        cart=cart,
        type="order.placed",
        schema_version=version,
        occurred_at=now,
        data=payload,
    )
    try:
        with transaction.atomic():  # the order and its code's redemption, or neither
            [appended] = events_append(
                store_id=store.pk, events=[event], source=Source.server("demo")
            )
            if code:
                coupons.coupon_redeem(
                    store_id=store.pk,
                    code=code,
                    order_id=order_id,
                    cart_value=state.value,
                    currency=CURRENCY,
                    now=now,
                )
    except EventIdConflict:  # ordered before, differently: the first order stands
        raise DemoOrderRefused(409, "already_ordered", "This cart was ordered already.") from None
    except errors.CampaignsError as exc:  # redeemed for another order since the check
        raise _coupon_refused(exc) from None
    return DemoOrder(order_id, state.value, total, discount, shipping, appended.duplicate, code)


def _money(minor: int, store: Store) -> str:
    """The one money format (carts.money.display), in the store's locale."""
    return money.display(minor, CURRENCY, store.locale)


def _refused(status: int, code: str, detail: str, origin: str | None) -> JsonResponse:
    response = JsonResponse({"code": code, "detail": detail}, status=status)
    if origin:
        response["Access-Control-Allow-Origin"] = origin
    return response


@csrf_exempt  # no cookies: the publishable key, the store's origins and a minted cart
@require_POST
def demo_order(request: HttpRequest) -> HttpResponse:
    """POST /demo/order {"publishable_key", "cart", "shipping", "coupon"?, "preview"?,
    "expected_total"?}: the demo checkout (201), or with ``"preview": true`` the price it would
    charge (200, nothing recorded); an order whose price is no longer ``expected_total`` is 409
    ``price_changed``. Served only where DEMO_ORDERS is on (make run, tests); 404 elsewhere."""
    if not settings.DEMO_ORDERS:
        raise Http404("No demo orders here.")
    origin = request.headers.get("Origin")
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        return _refused(400, "invalid_json", "The body must be a JSON object.", origin)
    if not isinstance(body, dict):
        return _refused(400, "invalid_json", "The body must be a JSON object.", origin)
    cart, coupon, shipping = body.get("cart"), body.get("coupon"), body.get("shipping")
    preview = body.get("preview", False)
    expected = body.get("expected_total")
    if (
        not isinstance(cart, str)
        or not isinstance(shipping, int)
        or isinstance(shipping, bool)
        or (coupon is not None and (not isinstance(coupon, str) or len(coupon) > 64))
        or not isinstance(preview, bool)
        or (expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)))
    ):
        return _refused(
            400,
            "invalid_order",
            "cart and shipping are required; coupon is a string, preview true or false, "
            "expected_total an integer (minor units).",
            origin,
        )
    store = live.store_for_publishable_key(body.get("publishable_key"))
    if store is None:
        return _refused(401, "invalid_key", "Unknown or revoked publishable key.", origin)
    try:
        live.origin_check(store=store, origin=origin)
        order = demo_order_place(
            store=store,
            cart=cart,
            coupon=coupon or None,
            shipping=shipping,
            now=timezone.now(),
            preview=preview,
            expected_total=expected,
        )
    except live.OriginNotAllowed:
        return _refused(403, "origin_not_allowed", "This origin is not allowed.", origin)
    except DemoOrderRefused as refused:
        return _refused(refused.status, refused.code, refused.detail, origin)
    if preview:
        quoted = JsonResponse(
            {
                "subtotal": order.subtotal,
                "total": order.total,
                "discount": order.discount,
                "code": order.code,
                "shipping": order.shipping,
                "currency": CURRENCY,
                "preview": True,
            }
        )
        if origin:
            quoted["Access-Control-Allow-Origin"] = origin
        return quoted
    return JsonResponse(
        {
            "order_id": order.order_id,
            "subtotal": order.subtotal,
            "total": order.total,
            "discount": order.discount,
            "code": order.code,
            "shipping": order.shipping,
            "currency": CURRENCY,
            "duplicate": order.duplicate,
        },
        status=201,
    )
