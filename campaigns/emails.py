"""Campaign emails: the message for one email or discount step, its preview, and template checks.

Merchants write a tier's subject and body in Django template syntax. They are rendered by an
engine of their own (no template loaders, no tag libraries, and an allow-list of tags and filters
in place of Django's builtins: _TAGS, _FILTERS), within a budget of output and time (a worker
renders every store's emails), with autoescape on for the HTML part and off for the text part and
the subject, then put into the wrappers in templates/campaigns/ (items table, restore button,
unsubscribe and "don't remind me" footer).
Nothing here writes: the step runner sends the message and records the outcome.
"""

from __future__ import annotations

import difflib
import functools
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from anymail.message import AnymailMessage
from django.conf import settings as django_settings
from django.core.mail import EmailMultiAlternatives
from django.template import (
    Context,
    Engine,
    Library,
    Node,
    Template,
    TemplateDoesNotExist,
    TemplateSyntaxError,
    Variable,
    defaultfilters,
    defaulttags,
    loader_tags,
)
from django.template.base import FilterExpression, Parser, TextNode, Token, VariableNode
from django.template.defaulttags import FirstOfNode, ForNode, TemplateTagNode, VerbatimNode
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import linebreaks
from django.utils.safestring import SafeString, mark_safe

from campaigns import links, rules
from campaigns.models import YEAR_HOURS, CampaignSettings, Coupon, Step, Tier
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


def discount_format(coupon: Coupon | None, currency: str, locale: str = "") -> str:
    """``"10%"``, ``"€5.00"`` (money as carts.money.display writes it in the store's ``locale``)
    or ``"free shipping"``; empty without a coupon."""
    if coupon is None:
        return ""
    if coupon.kind == Coupon.Kind.PERCENT:
        return f"{coupon.amount}%"
    if coupon.kind == Coupon.Kind.FIXED:
        return money.display(coupon.amount, coupon.currency or currency, locale)
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


def items_context(
    lines: list[dict[str, Any]], currency: str, locale: str = ""
) -> list[dict[str, Any]]:
    """Cart lines for templates: ``unit_price`` and ``line_total`` are money as
    carts.money.display writes it in the store's ``locale``, the ``*_minor`` twins are integers
    in minor units."""
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
                "unit_price": money.display(unit, currency, locale),
                "line_total": money.display(unit * quantity, currency, locale),
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


# What a merchant's template may use, in one place. Tags and filters a cart email needs, and
# none that writes an unbounded amount in one step (lorem, ljust, stringformat, join: a size taken
# from an argument), unescapes shoppers' text (safe, safeseq, autoescape off: item names come from
# browsers) or reaches outside the message (url, now, csrf_token, load, include's templates).
_TAGS = (
    "if", "for", "with", "comment", "spaceless", "filter", "firstof", "verbatim", "templatetag",
)  # fmt: skip
_FILTERS = (
    "default", "default_if_none", "upper", "lower", "title", "capfirst", "length", "first",
    "last", "slice", "dictsort", "dictsortreversed", "pluralize", "yesno", "divisibleby",
    "truncatechars", "truncatewords", "wordwrap", "wordcount", "linebreaks", "linebreaksbr",
    "escape", "striptags", "cut", "urlencode",
)  # fmt: skip
# Kept as Django parses them: the engine has no templates, so they always fail for the sample
# cart, with their own message (_problem).
_NO_TEMPLATES = ("include", "extends")
# Filters a {% for %} may apply to ``items``, the one sequence it goes over.
_FOR_FILTERS = ("slice", "dictsort", "dictsortreversed")
_FOR_DEPTH = 2  # {% for %} inside {% for %}, no deeper
_BLOCK_DEPTH = 8  # any block tags, so parsing and rendering never near Python's recursion limit
_WHY = {
    "safe": "item names come from shoppers and stay escaped",
    "safeseq": "item names come from shoppers and stay escaped",
    "autoescape": "item names come from shoppers and stay escaped",
}

# The render budget of one template: a subject or body that writes more, or takes longer, fails.
SUBJECT_LIMIT = 1_000  # characters
BODY_LIMIT = 100_000  # characters
RENDER_SECONDS = 0.2


class TemplateRefused(TemplateSyntaxError):
    """A merchant's template uses a tag, filter or construct emails do not allow."""


class TemplateOverBudget(Exception):
    """A merchant's template wrote more, or took longer, than its budget while rendering."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"The {field} template is over budget: {reason}.")
        self.field = field
        self.reason = reason


@dataclass(slots=True)
class _Budget:
    field: str
    limit: int
    deadline: float
    written: int = 0

    def charge(self, written: int) -> None:
        self.written += written
        if self.written > self.limit:
            raise TemplateOverBudget(
                self.field,
                f"it writes more than {self.limit:,} characters (a {self.field}'s limit)",
            )
        if time.monotonic() > self.deadline:
            raise TemplateOverBudget(
                self.field, f"it takes more than {RENDER_SECONDS * 1000:.0f} ms to render"
            )

    def value(self, size: int) -> None:
        if size > self.limit:
            raise TemplateOverBudget(
                self.field, f"one of its values is longer than {self.limit:,} characters"
            )
        self.charge(0)


# The budget of the render under way in this thread (None outside _render: nothing is counted).
_budget: ContextVar[_Budget | None] = ContextVar("email_template_budget", default=None)


def _charge(written: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.charge(written)


class _Counted:
    """Mixed into the nodes that write (text, variables, and the tags that print): what they
    write is charged to the budget as it is written, so no loop or repetition outgrows it."""

    def render_annotated(self, context: Context) -> str:
        out = super().render_annotated(context)  # type: ignore[misc]
        _charge(len(out))
        return out


_COUNTED: dict[type[Node], type[Node]] = {
    cls: type(f"Counted{cls.__name__}", (_Counted, cls), {})
    for cls in (TextNode, VariableNode, VerbatimNode, TemplateTagNode, FirstOfNode)
}


class _Tick(Node):
    """First in every loop's body: an iteration that writes nothing still spends the clock."""

    child_nodelists = ()

    def render(self, context: Context) -> str:
        _charge(0)
        return ""


def _metered(func: Callable[..., Any]) -> Callable[..., Any]:
    # Every filter's result is checked: a value can grow only so far, at any step of a chain.
    @functools.wraps(func)  # keeps is_safe, needs_autoescape and the signature Django checks
    def metered(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        budget = _budget.get()
        if budget is not None:
            budget.value(len(result) if isinstance(result, (str, list, tuple)) else 0)
        return result

    return metered


def _add(value: Any, arg: Any) -> Any:
    # Numbers only: Django's also joins strings and lists, so nested {% with %} could double a
    # value at each level.
    try:
        return int(value) + int(arg)
    except (ValueError, TypeError):
        return ""


def _floatformat(text: Any, arg: Any = -1) -> str:
    # Django's, with at most 10 decimal places: "floatformat:999999999" writes that many digits.
    digits = str(arg).rstrip("gu")
    if digits.lstrip("-").isdigit() and abs(int(digits)) > 10:
        raise TemplateRefused("floatformat shows at most 10 decimal places in emails.")
    return defaultfilters.floatformat(text, arg)


def _refused(name: str) -> Callable[[Parser, Token], Node]:
    def refuse(parser: Parser, token: Token) -> Node:
        why = f": {_WHY[name]}" if _WHY.get(name) else ""
        raise TemplateRefused(
            f"The {{% {name} %}} tag on line {token.lineno} is not allowed in emails{why}."
        )

    return refuse


def _no_load(parser: Parser, token: Token) -> Node:
    raise TemplateSyntaxError(
        "{% load %} is not available in emails: there are no tag libraries to load."
    )


def _no_debug(parser: Parser, token: Token) -> Node:
    raise TemplateSyntaxError("The {% debug %} tag is not allowed in emails.")


def _nested(compile_tag: Callable[[Parser, Token], Node]) -> Callable[[Parser, Token], Node]:
    def compile_nested(parser: Parser, token: Token) -> Node:
        depth = getattr(parser, "_email_depth", 0) + 1
        if depth > _BLOCK_DEPTH:
            raise TemplateRefused(
                f"Tags nest at most {_BLOCK_DEPTH} deep in emails (line {token.lineno})."
            )
        parser._email_depth = depth  # type: ignore[attr-defined]
        try:
            node = compile_tag(parser, token)
        finally:
            parser._email_depth = depth - 1  # type: ignore[attr-defined]
        bound = [*getattr(node, "extra_context", {}), getattr(node, "asvar", None)]
        if "items" in bound:  # {% with %} or {% firstof ... as %}
            raise TemplateRefused("{{ items }} cannot be given another value in emails.")
        return node

    return compile_nested


def _for(parser: Parser, token: Token) -> Node:
    depth = getattr(parser, "_email_loops", 0) + 1
    if depth > _FOR_DEPTH:
        raise TemplateRefused(
            f"{{% for %}} loops nest at most {_FOR_DEPTH} deep in emails (line {token.lineno})."
        )
    parser._email_loops = depth  # type: ignore[attr-defined]
    try:
        node = defaulttags.do_for(parser, token)
    finally:
        parser._email_loops = depth - 1  # type: ignore[attr-defined]
    assert isinstance(node, ForNode)
    sequence = node.sequence
    allowed = {_LIBRARY.filters[name] for name in _FOR_FILTERS}
    if not (
        isinstance(sequence, FilterExpression)
        and isinstance(sequence.var, Variable)
        and sequence.var.var == "items"
        and all(func in allowed for func, _ in sequence.filters)
    ):
        raise TemplateRefused(
            f"{{% for %}} loops go over items only in emails (the one on line {token.lineno} "
            f"goes over {getattr(sequence, 'token', sequence)!r})."
        )
    if "items" in node.loopvars:
        raise TemplateRefused("{{ items }} cannot be given another value in emails.")
    node.nodelist_loop.insert(0, _Tick())  # type: ignore[arg-type]
    return node


def _library() -> Library:
    library = Library()
    builtin = {**defaulttags.register.tags, **loader_tags.register.tags}
    for name in {*builtin, "ssi"}:
        library.tags[name] = _refused(name)
    library.tags.update({name: _nested(builtin[name]) for name in _TAGS})
    library.tags.update({name: builtin[name] for name in _NO_TEMPLATES})
    library.tags.update({"for": _nested(_for), "load": _no_load, "debug": _no_debug})
    library.filters.update(
        {name: _metered(defaultfilters.register.filters[name]) for name in _FILTERS}
    )
    library.filter("add", _metered(_add))
    library.filter("floatformat", _metered(_floatformat), is_safe=True)
    return library


_LIBRARY = _library()
_INVALID_FILTER = re.compile(r"Invalid filter: '(\w+)'")


@functools.cache
def _engine() -> Engine:
    # No loaders (so no {% include %} or {% extends %} of project templates), no tag libraries,
    # and the allow-list in place of Django's builtin tags and filters.
    engine = Engine(libraries={}, loaders=[("django.template.loaders.locmem.Loader", {})])
    engine.template_builtins = [_LIBRARY]
    return engine


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> Template:
    try:
        template = _engine().from_string(source)
    except TemplateSyntaxError as exc:
        refused = _INVALID_FILTER.fullmatch(str(exc))
        if refused and refused[1] in defaultfilters.register.filters:
            why = f": {_WHY[refused[1]]}" if _WHY.get(refused[1]) else ""
            raise TemplateRefused(
                f"The |{refused[1]} filter is not allowed in emails{why}."
            ) from exc
        raise
    for node in template.nodelist.get_nodes_by_type(Node):
        counted = _COUNTED.get(type(node))
        if counted is not None:
            node.__class__ = counted
    return template


def _render(source: str, context: dict[str, Any], *, autoescape: bool, field: str) -> str:
    """The merchant's ``field`` template ("subject" or "body") rendered within its budget;
    TemplateOverBudget past it, TemplateRefused for what emails do not allow."""
    limit = SUBJECT_LIMIT if field == "subject" else BODY_LIMIT
    budget = _Budget(field=field, limit=limit, deadline=time.monotonic() + RENDER_SECONDS)
    token = _budget.set(budget)
    try:
        out = _compile(source).render(Context(context, autoescape=autoescape))
    finally:
        _budget.reset(token)
    budget.charge(max(len(out) - budget.written, 0))  # what {% filter %} added to its content
    return out


# Any run of whitespace but the no-break spaces CLDR writes in money ("12,99\xa0€" in de-DE,
# "12,99\u202f€" in fr-FR), which keep the amount on one line.
_SPACES = re.compile(r"[^\S\xa0\u202f]+")


def _subject(rendered: str, fallback: str) -> str:
    # One line (headers cannot hold newlines); an empty {{ shopper_name }} at the end of the
    # default subject would leave a dangling comma.
    line = _SPACES.sub(" ", rendered).rstrip(" ,;:-").strip()
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
        "items": items_context(cart.items, cart.currency, store.locale),
        "cart_value": money.display(cart.value, cart.currency, store.locale),
        "currency": cart.currency,
        "restore_url": restore,
        "code": code,
        "discount": discount_format(coupon, cart.currency, store.locale),
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
        _render(tier.subject_template, context, autoescape=False, field="subject"),
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
        {
            **wrapper,
            "body": _render(tier.body_template, context, autoescape=False, field="body").strip(),
        },
    )
    html = render_to_string(
        "campaigns/email.html",
        {
            **wrapper,
            "body": _body_html(
                _render(tier.body_template, context, autoescape=True, field="body").strip()
            ),
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
        expires = timezone.now() + timedelta(hours=min(tier.code_expiry_hours or 48, YEAR_HOURS))
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
    # There is nothing to {% load %}: Django's hint would only mislead.
    return str(exc).replace(" Did you forget to register or load this tag?", "").strip()


# The names a merchant's template may use: the context _context builds (docs/campaigns-admin.md,
# "Template variables"), plus what Django's Context always holds.
TEMPLATE_VARIABLES = (
    "cart_value", "code", "code_expires", "currency", "discount", "items", "restore_url",
    "shopper_name", "store_name",
)  # fmt: skip
# Set only on discount tiers (the step's code): an email tier's are always empty, so using them
# there is refused, except to test them ({% if code %}) and inside the branch such a test guards.
DISCOUNT_VARIABLES = frozenset({"code", "code_expires", "discount"})
_ALWAYS_KNOWN = frozenset({"True", "False", "None"})
_UNCLOSED = re.compile(r"\{\{|\{%|\{#")
_CLOSER = {"{{": "}}", "{%": "%}", "{#": "#}"}


@dataclass(frozen=True, slots=True)
class _Use:
    name: str
    line: int
    known: frozenset[str]


def _expression_names(expr: Any) -> list[str]:
    """The variables a compiled expression reads (first segment of each dotted name): a
    FilterExpression's variable and filter arguments, or an {% if %} condition's operands."""
    if isinstance(expr, FilterExpression):
        names = []
        variables = [expr.var, *(arg for lookup, arg in _filter_args(expr) if lookup)]
        for var in variables:
            if isinstance(var, Variable) and var.lookups:
                names.append(var.lookups[0])
        return names
    names = []
    value = getattr(expr, "value", None)
    if isinstance(value, FilterExpression):
        names += _expression_names(value)
    for side in ("first", "second"):
        operand = getattr(expr, side, None)
        if operand is not None:
            names += _expression_names(operand)
    return names


def _filter_args(expr: FilterExpression) -> list[tuple[bool, Any]]:
    return [arg for _func, args in expr.filters for arg in args]


def _line(node: Node) -> int:
    token = getattr(node, "token", None)
    return int(getattr(token, "lineno", 0) or 0)


def _requires(condition: Any, names: frozenset[str]) -> bool:
    """Whether an {% if %} condition can hold only when one of ``names`` is truthy: ``code``
    (no filters), or an ``and`` with such a side, or an ``or`` of two."""
    kind = getattr(condition, "id", None)
    if kind == "literal":
        value = getattr(condition, "value", None)
        if not isinstance(value, FilterExpression) or value.filters:
            return False
        lookups = value.var.lookups if isinstance(value.var, Variable) else None
        return bool(lookups) and lookups is not None and lookups[0] in names
    first, second = getattr(condition, "first", None), getattr(condition, "second", None)
    if kind == "and":
        return _requires(first, names) or _requires(second, names)
    if kind == "or":
        return _requires(first, names) and _requires(second, names)
    return False


def _uses(nodelist: Any, known: frozenset[str], guards: frozenset[str] = frozenset()) -> list[_Use]:
    """Every variable read in ``nodelist``, with the names known where it is read: {% for %}
    binds its loop variables and ``forloop`` inside the loop, {% with %} its names inside its
    block, and {% firstof ... as x %} x in the rest of the block it is in. ``guards`` are names
    that may be tested in an {% if %} and are known in the branch such a test guards."""
    uses: list[_Use] = []

    def read(names: list[str], node: Node, scope: frozenset[str]) -> None:
        uses.extend(_Use(name, _line(node), scope) for name in names)

    scope = known
    for node in nodelist:
        if isinstance(node, VariableNode):
            read(_expression_names(node.filter_expression), node, scope)
        elif isinstance(node, ForNode):
            read(_expression_names(node.sequence), node, scope)
            inner = scope | {*node.loopvars, "forloop"}
            uses += _uses(node.nodelist_loop, inner, guards)
            uses += _uses(node.nodelist_empty, scope, guards)
        elif isinstance(node, defaulttags.IfNode):
            for condition, body in node.conditions_nodelists:
                branch = scope
                if condition is not None:
                    read(_expression_names(condition), node, scope | guards)
                    if _requires(condition, guards):
                        branch = scope | guards
                uses += _uses(body, branch, guards)
        elif isinstance(node, defaulttags.WithNode):
            for value in node.extra_context.values():
                read(_expression_names(value), node, scope)
            uses += _uses(node.nodelist, scope | set(node.extra_context), guards)
        elif isinstance(node, FirstOfNode):
            for value in node.vars:
                read(_expression_names(value), node, scope)
            if node.asvar:
                scope = scope | {node.asvar}
        elif isinstance(node, defaulttags.FilterNode):
            # Its expression is "var|<the filters>" over the block's output: only the filters'
            # arguments are the merchant's.
            args = [arg for lookup, arg in _filter_args(node.filter_expr) if lookup]
            read([a.lookups[0] for a in args if isinstance(a, Variable) and a.lookups], node, scope)
            uses += _uses(node.nodelist, scope, guards)
        else:  # spaceless, and any block tag: its inner nodes, in the same scope
            for attr in getattr(node, "child_nodelists", ()):
                uses += _uses(getattr(node, attr, None) or [], scope, guards)
    return uses


def _unclosed(nodelist: Any) -> list[str]:
    """Text that opens a tag, variable or comment and never closes it on the same line: Django
    leaves it as literal text, so the shopper would see ``{{ shopper_name``."""
    problems = []
    for node in nodelist.get_nodes_by_type(TextNode):
        if isinstance(node, _Tick):
            continue
        for match in _UNCLOSED.finditer(node.s):
            line = _line(node) + node.s.count("\n", 0, match.start())
            opener = match.group()
            snippet = node.s[match.start() :].splitlines()[0][:30]
            problems.append(
                f"Unclosed {opener} on line {line} ({snippet!r}): close it with {_CLOSER[opener]} "
                "on the same line."
            )
    return problems


def _without_code(channel: str) -> bool:
    """A tier of this channel sends no code (email tiers): the discount's variables are empty."""
    return channel != Tier.Channel.DISCOUNT


def unknown_variables(source: str, *, channel: str) -> list[str]:
    """Messages for what a compiling template uses that emails do not provide: variables outside
    the documented context (TEMPLATE_VARIABLES, plus loop and {% with %} names where they are
    bound; only a dotted name's first segment is checked), with the closest known name; on a
    tier of another ``channel`` than discount, the discount's variables (DISCOUNT_VARIABLES)
    outside an {% if %} that tests them; and an unclosed ``{{``, ``{%`` or ``{#``. Empty when
    everything is known."""
    template = _compile(source)
    problems = _unclosed(template.nodelist)
    variables = frozenset(TEMPLATE_VARIABLES)
    guards: frozenset[str] = frozenset()
    if _without_code(channel):
        variables, guards = variables - DISCOUNT_VARIABLES, DISCOUNT_VARIABLES
    known = variables | _ALWAYS_KNOWN
    seen: set[str] = set()
    for use in _uses(template.nodelist, known, guards):
        if use.name in use.known or use.name in seen:
            continue
        seen.add(use.name)
        if use.name in guards:
            problems.append(
                f"'{use.name}' on line {use.line} is only on discount tiers: an email tier has "
                "no code, so it would be empty. Remove it, keep it inside "
                "{% if code %}...{% endif %}, or make this a discount tier."
            )
            continue
        candidates = sorted(use.known - _ALWAYS_KNOWN)
        close = difflib.get_close_matches(use.name, candidates, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        problems.append(
            f"Unknown variable '{use.name}' on line {use.line}.{hint} Known: "
            f"{', '.join(candidates)}."
        )
    return problems


def template_errors(
    *, subject_template: str, body_template: str, channel: str
) -> dict[str, list[str]]:
    """Field errors for templates of a tier of ``channel`` that do not compile (or use what its
    emails do not have: unknown_variables), or do not render within their budget for a sample
    cart (escaped and not; with and without a code on a discount tier, without on an email
    tier); empty when both are fine."""
    contexts = _sample_contexts()
    if _without_code(channel):
        contexts = contexts[1:]  # the one without a code
    errors: dict[str, list[str]] = {}
    for field, source in (("subject_template", subject_template), ("body_template", body_template)):
        try:
            _compile(source)
        except TemplateSyntaxError as exc:
            errors[field] = [f"This template does not compile: {_problem(exc)}"]
            continue
        unknown = unknown_variables(source, channel=channel)
        if unknown:
            errors[field] = unknown
            continue
        try:
            for context in contexts:
                for autoescape in (True, False):
                    _render(source, context, autoescape=autoescape, field=field.split("_")[0])
        except TemplateOverBudget as exc:
            errors[field] = [f"This template is refused: for a sample cart, {exc.reason}."]
        except Exception as exc:  # any failure is the template's: report it, do not crash the admin
            errors[field] = [f"This template fails for a sample cart: {_problem(exc)}"]
    return errors
