"""Campaign emails: the message for one email or discount step, its preview, and template checks.

Merchants write a tier's subject and body in Django template syntax. They are rendered by an
engine of their own (no template loaders, no tag libraries, no ``{% debug %}``), with autoescape
on for the HTML part and off for the text part and the subject, then put into the wrappers in
templates/campaigns/ (items table, restore button, unsubscribe and "don't remind me" footer).
Nothing here writes: the step runner sends the message and records the outcome.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

from anymail.message import AnymailMessage
from django.conf import settings as django_settings
from django.core.mail import EmailMultiAlternatives
from django.template import (
    Context,
    Engine,
    Template,
    TemplateDoesNotExist,
    TemplateSyntaxError,
)
from django.template.defaulttags import DebugNode
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import linebreaks
from django.utils.safestring import SafeString, mark_safe

from campaigns import links, rules
from campaigns.models import CampaignSettings, Coupon, Step, Tier
from carts import money
from carts.models import CartState, Store

METADATA_KEY = "campaign_link"  # the message's metadata naming its step (its link_id)
PREVIEW_LINK_ID = uuid.UUID(int=0)  # links in a preview carry this id, which no step has
SAMPLE_CODE = "SAMPLE-7K2M9Q"


@dataclass(frozen=True, slots=True)
class EmailPreview:
    subject: str
    text: str
    html: str


# Formatting ---------------------------------------------------------------------------------------


def money_format(amount: int, currency: str) -> str:
    """``1299, "EUR"`` -> ``"12.99 EUR"`` (the currency's minor units; no currency: the number)."""
    exponent = money.exponent(currency) if currency else 2
    value = Decimal(int(amount)).scaleb(-exponent)
    number = f"{value:.{exponent}f}"
    return f"{number} {currency}" if currency else number


def discount_format(coupon: Coupon | None, currency: str) -> str:
    """``"10%"``, ``"5.00 EUR"`` or ``"free shipping"``; empty without a coupon."""
    if coupon is None:
        return ""
    if coupon.kind == Coupon.Kind.PERCENT:
        return f"{coupon.amount}%"
    if coupon.kind == Coupon.Kind.FIXED:
        return money_format(coupon.amount, coupon.currency or currency)
    return "free shipping"


def when_format(moment: datetime, *, tz_name: str, fallback_tz: str) -> str:
    """``"3 November 2026, 14:00 CET"`` in the shopper's zone (else the store's, else UTC)."""
    local = moment.astimezone(rules.zone(tz_name, fallback_tz))
    return f"{local.day} {local:%B %Y, %H:%M} {local.tzname()}"


_NAME_PART = re.compile(r"[a-z]{2,}")
_NOT_NAMES = frozenset(
    {"info", "sales", "support", "admin", "contact", "hello", "mail", "office", "shop", "team"}
)


def shopper_name(email: str) -> str:
    """A first name guessed from ``first.last@...`` (or ``_``/``-``); otherwise empty. The log
    holds no names, and "Dear Info" is worse than no name, so anything less clear is empty."""
    local = email.partition("@")[0].lower()
    parts = re.split(r"[._-]", local)
    if len(parts) != 2 or not all(_NAME_PART.fullmatch(p) for p in parts):
        return ""
    first = parts[0]
    return "" if first in _NOT_NAMES else first.capitalize()


def _web_url(value: object) -> str:
    # Ingestion validates URLs already; an href in an email is no place to find out it did not.
    text = str(value or "")
    return text if urlsplit(text).scheme in ("http", "https") else ""


def items_context(lines: list[dict[str, Any]], currency: str) -> list[dict[str, Any]]:
    """Cart lines for templates: ``unit_price`` and ``line_total`` are formatted money, the
    ``*_minor`` twins are integers in minor units."""
    out = []
    for line in lines:
        quantity = int(line.get("quantity") or 0)
        unit = int(line.get("unit_price") or 0)
        out.append(
            {
                "sku": str(line.get("sku", "")),
                "name": str(line.get("name", "")),
                "category": str(line.get("category", "")),
                "quantity": quantity,
                "unit_price": money_format(unit, currency),
                "line_total": money_format(unit * quantity, currency),
                "unit_price_minor": unit,
                "line_total_minor": unit * quantity,
                "url": _web_url(line.get("url")),
                "image_url": _web_url(line.get("image_url")),
            }
        )
    return out


# The store's cart URL -----------------------------------------------------------------------------


def _items_param(items: list[dict[str, Any]]) -> str:
    # SKUs are encoded; ":" and "," stay literal, as cart permalinks expect them (Shopify's
    # /cart/<id>:<qty>,<id>:<qty>), and both are legal in paths and query strings.
    return ",".join(
        f"{quote(str(i.get('sku', '')), safe='')}:{int(i.get('quantity') or 0)}" for i in items
    )


def _store_base(store: Store) -> str:
    domain = store.domain.strip().rstrip("/")
    if domain:
        return domain if "://" in domain else f"https://{domain}"
    if store.allowed_origins:
        return str(store.allowed_origins[0]).rstrip("/")
    # No domain and no origin: the only address we know. The admin should ask for a domain.
    return django_settings.CAMPAIGNS_PUBLIC_URL


def cart_url(
    *,
    settings: CampaignSettings,
    store: Store,
    cart: CartState | None,
    items: list[dict],
    code: str,
) -> str:
    """The store's cart URL from ``settings.cart_url`` with ``{items}`` (``sku:qty,...``),
    ``{code}`` and ``{cart}`` filled in (URL-encoded); by default ``https://<domain>/cart``, plus
    ``?discount=<code>`` with a code. A template that does not give an http(s) URL is ignored."""
    default = f"{_store_base(store)}/cart"
    if code:
        default += f"?discount={quote(code, safe='')}"
    template = settings.cart_url.strip()
    if not template:
        return default
    url = (
        template.replace("{items}", _items_param(items))
        .replace("{code}", quote(code, safe=""))
        .replace("{cart}", quote(cart.token if cart is not None else "", safe=""))
    )
    return url if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc else default


# Rendering merchants' templates -------------------------------------------------------------------


@functools.cache
def _engine() -> Engine:
    # No loaders (so no {% include %} or {% extends %} of project templates), no tag libraries.
    return Engine(libraries={}, loaders=[("django.template.loaders.locmem.Loader", {})])


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> Template:
    template = _engine().from_string(source)
    if template.nodelist.get_nodes_by_type(DebugNode):
        raise TemplateSyntaxError("The {% debug %} tag is not allowed in emails.")
    return template


def _render(source: str, context: dict[str, Any], *, autoescape: bool) -> str:
    return _compile(source).render(Context(context, autoescape=autoescape))


def _subject(rendered: str, fallback: str) -> str:
    # One line (headers cannot hold newlines); an empty {{ shopper_name }} at the end of the
    # default subject would leave a dangling comma.
    line = " ".join(rendered.split()).rstrip(" ,;:-").strip()
    return line or fallback


_HTML_BLOCK = re.compile(r"<(p|div|br|table|ul|ol|h[1-6])\b", re.IGNORECASE)


def _body_html(rendered: str) -> SafeString:
    # Plain-text bodies get paragraphs and line breaks; a body written in HTML is kept as written.
    if _HTML_BLOCK.search(rendered):
        return mark_safe(rendered)  # noqa: S308 - autoescaped render of the merchant's template
    return mark_safe(linebreaks(rendered, autoescape=False))  # noqa: S308 - as above


@dataclass(frozen=True, slots=True)
class _Rendered:
    subject: str
    text: str
    html: str


def _context(
    *,
    link_id: uuid.UUID,
    settings: CampaignSettings,
    store: Store,
    cart: CartState,
    coupon: Coupon | None,
) -> dict[str, Any]:
    code = coupon.code if coupon is not None else ""
    if settings.track_clicks:
        restore = links.restore_url(link_id)
    else:
        restore = cart_url(settings=settings, store=store, cart=cart, items=cart.items, code=code)
    return {
        "shopper_name": shopper_name(cart.email),
        "items": items_context(cart.items, cart.currency),
        "cart_value": money_format(cart.value, cart.currency),
        "currency": cart.currency,
        "restore_url": restore,
        "code": code,
        "discount": discount_format(coupon, cart.currency),
        "code_expires": (
            when_format(coupon.expires_at, tz_name=cart.timezone, fallback_tz=settings.timezone)
            if coupon is not None
            else ""
        ),
        "store_name": store.name,
    }


def _render_email(
    *,
    link_id: uuid.UUID,
    tier: Tier,
    settings: CampaignSettings,
    store: Store,
    cart: CartState,
    coupon: Coupon | None,
) -> _Rendered:
    context = _context(link_id=link_id, settings=settings, store=store, cart=cart, coupon=coupon)
    subject = _subject(
        _render(tier.subject_template, context, autoescape=False),
        fallback=f"Your cart at {store.name}",
    )
    wrapper = {
        "subject": subject,
        "store_name": store.name,
        "items": context["items"],
        "with_images": any(item["image_url"] for item in context["items"]),
        "cart_value": context["cart_value"],
        "code": context["code"],
        "restore_url": context["restore_url"],
        "cta_label": tier.cta_label or "Back to my cart",
        "unsubscribe_url": links.unsubscribe_url(link_id),
        "stop_url": links.stop_url(link_id),
        "open_pixel_url": links.open_pixel_url(link_id) if settings.track_opens else "",
    }
    text = render_to_string(
        "campaigns/email.txt",
        {**wrapper, "body": _render(tier.body_template, context, autoescape=False).strip()},
    )
    html = render_to_string(
        "campaigns/email.html",
        {
            **wrapper,
            "body": _body_html(_render(tier.body_template, context, autoescape=True).strip()),
        },
    )
    return _Rendered(subject=subject, text=text, html=html)


def message_id(*, step_id: int, store_id: int) -> str:
    """The step's Message-ID: the same on every attempt, so a resend after a crash is
    recognisable (by us in Step.message_id, and by receiving servers)."""
    host = urlsplit(django_settings.CAMPAIGNS_PUBLIC_URL).hostname or "localhost"
    return f"<step-{step_id}.{store_id}@{host}>"


def step_email(
    *,
    step: Step,
    tier: Tier,
    settings: CampaignSettings,
    store: Store,
    cart: CartState,
    coupon: Coupon | None,
    now: datetime,
) -> EmailMultiAlternatives:
    """The message for one email or discount step, ready to send: text and HTML parts, the
    one-click unsubscribe headers (RFC 8058) and a Message-ID that is the same on every attempt.
    ``now`` is unused for now: nothing in the message depends on the time it is built."""
    rendered = _render_email(
        link_id=step.link_id, tier=tier, settings=settings, store=store, cart=cart, coupon=coupon
    )
    message = AnymailMessage(
        subject=rendered.subject,
        body=rendered.text,
        from_email=settings.email_from,
        to=[cart.email] if cart.email else [],
        reply_to=[settings.reply_to] if settings.reply_to else None,
        headers={
            "Message-ID": message_id(step_id=step.pk, store_id=store.pk),
            "List-Unsubscribe": f"<{links.unsubscribe_url(step.link_id)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "X-Campaign-Step": str(step.pk),
        },
        # A provider's API (anymail) reports it back with bounces and complaints (bounces.py);
        # not a header: the link id is for the provider's eyes, not the recipient's.
        metadata={METADATA_KEY: str(step.link_id)},
    )
    message.attach_alternative(rendered.html, "text/html")
    return message


# Preview and validation ---------------------------------------------------------------------------


def _sample_cart(store: Store) -> CartState:
    return CartState(
        store=store,
        token="sample-cart",  # noqa: S106 - a cart token, not a password
        currency="EUR",
        items=[
            {
                "sku": "MUG-01",
                "name": "Stoneware mug",
                "quantity": 2,
                "unit_price": 1299,
                "category": "kitchen",
                "url": "",
                "image_url": "",
            },
            {
                "sku": "POUR-02",
                "name": "Pour-over coffee kit",
                "quantity": 1,
                "unit_price": 3450,
                "category": "coffee",
                "url": "",
                "image_url": "",
            },
        ],
        value=2 * 1299 + 3450,
        item_count=3,
        email="jane.doe@example.com",
        consent={"email": True},
    )


def _sample_coupon(tier: Tier, *, expires_at: datetime) -> Coupon:
    if tier.offer_kind == Tier.OfferKind.FIXED_DISCOUNT:
        kind, amount = Coupon.Kind.FIXED, tier.discount_max or 500
    elif tier.offer_kind == Tier.OfferKind.FREE_SHIPPING:
        kind, amount = Coupon.Kind.FREE_SHIPPING, 0
    else:
        kind, amount = Coupon.Kind.PERCENT, tier.discount_max or tier.percent or 10
    return Coupon(code=SAMPLE_CODE, kind=kind, amount=amount, currency="EUR", expires_at=expires_at)


def email_preview(*, tier: Tier, settings: CampaignSettings, store: Store) -> EmailPreview:
    """The tier's email for a sample cart of two items (and, for a discount tier, a sample code),
    rendered as step_email renders it; its links lead nowhere."""
    coupon = None
    if tier.channel == Tier.Channel.DISCOUNT:
        expires = timezone.now() + timedelta(hours=tier.code_expiry_hours or 48)
        coupon = _sample_coupon(tier, expires_at=expires)
    rendered = _render_email(
        link_id=PREVIEW_LINK_ID,
        tier=tier,
        settings=settings,
        store=store,
        cart=_sample_cart(store),
        coupon=coupon,
    )
    return EmailPreview(subject=rendered.subject, text=rendered.text, html=rendered.html)


def _sample_contexts() -> list[dict[str, Any]]:
    store = Store(name="Sample shop", domain="shop.example")
    settings = CampaignSettings(store=store, track_clicks=False)
    cart = _sample_cart(store)
    coupon = Coupon(
        code=SAMPLE_CODE,
        kind=Coupon.Kind.PERCENT,
        amount=10,
        currency="EUR",
        expires_at=timezone.now() + timedelta(hours=48),
    )
    return [
        _context(link_id=PREVIEW_LINK_ID, settings=settings, store=store, cart=cart, coupon=c)
        for c in (coupon, None)
    ]


def _problem(exc: Exception) -> str:
    if isinstance(exc, TemplateDoesNotExist):
        return f"{{% include %}} and {{% extends %}} are not available in emails (asked for {exc})."
    message = str(exc).strip()
    if "is not a registered tag library" in message:
        return "{% load %} is not available in emails: there are no tag libraries to load."
    return message


def template_errors(*, subject_template: str, body_template: str) -> dict[str, list[str]]:
    """Field errors for templates that do not compile, or do not render for a sample cart (with
    and without a code, escaped and not); empty when both are fine."""
    errors: dict[str, list[str]] = {}
    for field, source in (("subject_template", subject_template), ("body_template", body_template)):
        try:
            _compile(source)
        except TemplateSyntaxError as exc:
            errors[field] = [f"This template does not compile: {_problem(exc)}"]
            continue
        try:
            for context in _sample_contexts():
                for autoescape in (True, False):
                    _render(source, context, autoescape=autoescape)
        except Exception as exc:  # any failure is the template's: report it, do not crash the admin
            errors[field] = [f"This template fails for a sample cart: {_problem(exc)}"]
    return errors
