"""Discount codes made on the store's platform before they are mailed or shown, and restore links
that go to the platform's own cart: campaigns' hooks ``code_publish``, ``code_ready`` and
``restore_target`` (campaigns/extensions.py), registered by ``register()``.

A code's life on the platform is its PlatformCode row: ``pending`` until the platform confirmed
it (``confirmed``), or refused it for good / after INTEGRATIONS_CODE_ATTEMPTS tries (``failed``).
Every attempt is one call of ``platforms.api.code_create`` with the row's idempotency key, made
outside any transaction; the row is read and written in short transactions before and after.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timedelta
from urllib.parse import quote, urlsplit

from celery import shared_task
from django.conf import settings
from django.db import transaction

from campaigns import clock, delivery
from campaigns.extensions import HOOKS, CodeState
from campaigns.models import Coupon
from integrations import selectors
from integrations.models import Connection, Platform, PlatformCart, PlatformCode
from integrations.platforms import api

log = logging.getLogger(__name__)

PENDING = "platform_pending"
REFUSED = "platform_refused"
# A task retrying a code for an on-site offer waits at most this long (PITFALLS: countdowns stay
# short; the row's attempts bound the retries).
_TASK_BACKOFF_MAX = 300.0
STEP_BACKOFF_MAX = 1800.0


def register() -> None:
    HOOKS.code_publish = code_publish
    HOOKS.code_ready = code_ready
    HOOKS.restore_target = restore_target


# Stores known to have no connection making their codes, until when (time.monotonic()): the
# on-site offer decides under its cart's lock, and most stores have no platform, so their
# offers pay no query for it (INTEGRATIONS_CONNECTION_REFRESH_SECONDS; a store just connected
# makes its codes on the platform that much later).
_UNCONNECTED: dict[int, float] = {}


def _connection_for_codes(store_id: int) -> Connection | None:
    """The store's active connection that makes its codes on the platform (a store has at most
    one such in practice; the oldest wins if several)."""
    if _UNCONNECTED.get(store_id, 0.0) > time.monotonic():
        return None
    found = (
        Connection.objects.filter(store_id=store_id, active=True, codes_on_platform=True)
        .order_by("pk")
        .first()
    )
    if found is None:
        if len(_UNCONNECTED) > 10_000:  # bounded: a process serves many stores
            _UNCONNECTED.clear()
        ttl = float(settings.INTEGRATIONS_CONNECTION_REFRESH_SECONDS)
        if ttl > 0:
            _UNCONNECTED[store_id] = time.monotonic() + ttl
    return found


def _state(code: PlatformCode) -> CodeState | None:
    """What a settled row says (None: still to be made)."""
    if code.state == PlatformCode.State.CONFIRMED:
        return CodeState(True)
    if code.state == PlatformCode.State.FAILED:
        return CodeState(False, REFUSED, transient=False, error=code.last_error)
    return None


def _code_row(coupon: Coupon, connection: Connection) -> PlatformCode:
    code, _ = PlatformCode.objects.get_or_create(coupon=coupon, defaults={"connection": connection})
    return code


def _request(coupon: Coupon, code: PlatformCode) -> api.CodeRequest:
    kind, amount = _platform_terms(coupon)
    return api.CodeRequest(
        code=coupon.code,
        kind=kind,
        amount=amount,
        currency=coupon.currency,
        min_cart_value=coupon.min_cart_value,
        starts_at=coupon.issued_at,
        expires_at=coupon.expires_at,
        idempotency_key=str(code.idempotency_key),
        title=f"Cart recovery {coupon.code}",
    )


def _platform_terms(coupon: Coupon) -> tuple[str, int]:
    """(kind, amount) as the platform takes them. None of the three platforms' code discounts has a
    "most it takes off", so a percentage whose cap binds on the cart it was made for is made as
    that cap, a fixed amount (what the shopper was promised for that cart, "up to" the cap);
    one whose cap does not bind is made as the percentage (docs/integrations.md)."""
    if coupon.kind == Coupon.Kind.PERCENT and coupon.cap is not None and coupon.value >= coupon.cap:
        return str(Coupon.Kind.FIXED), int(coupon.cap)
    return str(coupon.kind), int(coupon.amount)


def _target(connection: Connection) -> api.Target:
    return api.Target(
        platform=connection.platform,
        api_url=connection.api_url,
        shop_domain=connection.shop_domain,
        credentials=selectors.connection_credentials(connection),
    )


def code_publish(coupon: Coupon, now: datetime) -> CodeState:
    """Make ``coupon`` on its store's platform (one attempt, outside any transaction) and say
    whether it may be sent: usable once the platform confirmed it, or when the store has no
    platform making its codes. Safe to call again and concurrently: every attempt carries the
    code's idempotency key, and a settled row is never changed."""
    if delivery.in_transaction():
        raise RuntimeError("code_publish talks to the platform: never inside a transaction")
    connection = _connection_for_codes(coupon.store_id)
    if connection is None:
        return CodeState(True)
    with transaction.atomic():
        code = _code_row(coupon, connection)
    settled = _state(code)
    if settled is not None:
        return settled
    if code.next_attempt_at is not None and code.next_attempt_at > now:
        # The platform asked us to wait (Retry-After): not asked again before then.
        return CodeState(
            False, PENDING, transient=True, error=code.last_error, retry_at=code.next_attempt_at
        )
    connection = code.connection
    try:
        target = _target(connection)
        remote = api.code_create(
            target=target,
            request=_request(coupon, code),
            timeout=float(settings.INTEGRATIONS_HTTP_TIMEOUT),
        )
    except api.Transient as exc:
        wait = exc.retry_after
        return _attempt_failed(code, str(exc), now, retry_after=wait)
    except api.Permanent as exc:
        return _refused(code, str(exc))
    except ValueError as exc:  # credentials no key opens (SECRET_KEY changed): for good
        return _refused(code, f"credentials unreadable: {exc}")
    with transaction.atomic():
        fresh = PlatformCode.objects.select_for_update().get(pk=code.pk)
        if fresh.state == PlatformCode.State.PENDING:
            fresh.state = PlatformCode.State.CONFIRMED
            fresh.remote_id = remote.remote_id[:255]
            fresh.confirmed_at = now
            fresh.attempts += 1
            fresh.last_error = ""
            fresh.next_attempt_at = None
            fresh.save()
    log.info("code %s confirmed on %s (%s)", coupon.code, connection.platform, remote.remote_id)
    return _state(fresh) or CodeState(False, PENDING)


def _clean(error: str) -> str:
    # The clients' messages name the platform's answer, never the credentials; bounded.
    return error.replace("\n", " ")[:500]


def _attempt_failed(
    code: PlatformCode, error: str, now: datetime, *, retry_after: float | None
) -> CodeState:
    """A transient failure: counted; after the last attempt the code is given up (failed)."""
    with transaction.atomic():
        fresh = PlatformCode.objects.select_for_update().get(pk=code.pk)
        if fresh.state != PlatformCode.State.PENDING:  # settled meanwhile by another attempt
            return _state(fresh) or CodeState(False, PENDING)
        fresh.attempts += 1
        fresh.last_error = _clean(error)
        wait = min(max(retry_after or 0.0, 0.0), _TASK_BACKOFF_MAX)
        fresh.next_attempt_at = now + timedelta(seconds=wait) if wait else None
        if fresh.attempts >= settings.INTEGRATIONS_CODE_ATTEMPTS:
            fresh.state = PlatformCode.State.FAILED
            fresh.last_error = _clean(f"gave up after {fresh.attempts} attempts: {error}")
        fresh.save()
    log.warning("code %s not made yet (attempt %d): %s", code.coupon_id, fresh.attempts, error)
    if fresh.state == PlatformCode.State.FAILED:
        return CodeState(False, REFUSED, transient=False, error=fresh.last_error)
    # A step waiting on this code tries again after a backoff by the code's own attempts (30 s,
    # 1, 2, 4 min, ... at most STEP_BACKOFF_MAX), or the platform's Retry-After when longer.
    backoff = min(30.0 * 2 ** (fresh.attempts - 1), STEP_BACKOFF_MAX)
    retry_at = now + timedelta(seconds=max(backoff, wait))
    return CodeState(False, PENDING, transient=True, error=fresh.last_error, retry_at=retry_at)


def _refused(code: PlatformCode, error: str) -> CodeState:
    with transaction.atomic():
        fresh = PlatformCode.objects.select_for_update().get(pk=code.pk)
        if fresh.state != PlatformCode.State.PENDING:
            return _state(fresh) or CodeState(False, PENDING)
        fresh.attempts += 1
        fresh.state = PlatformCode.State.FAILED
        fresh.last_error = _clean(error)
        fresh.next_attempt_at = None
        fresh.save()
    log.warning("code %s refused by the platform: %s", code.coupon_id, error)
    return CodeState(False, REFUSED, transient=False, error=fresh.last_error)


def code_ready(coupon: Coupon) -> CodeState:
    """Whether ``coupon`` may be shown on-site now, without the network (it runs in the offer's
    transaction): usable when the store has no platform making its codes or the platform
    confirmed it; else its row is made and a task to make it is queued after commit."""
    connection = _connection_for_codes(coupon.store_id)
    if connection is None:
        return CodeState(True)
    code = _code_row(coupon, connection)
    settled = _state(code)
    if settled is not None:
        return settled
    code_id = code.pk
    transaction.on_commit(lambda: code_make.delay(code_id))
    return CodeState(False, PENDING, transient=True)


@shared_task(name="integrations.code_make", bind=True, max_retries=None, acks_late=True)
def code_make(self, code_id: int) -> str:  # type: ignore[no-untyped-def]
    """Make a PlatformCode's coupon on its platform (an on-site offer's): retried with bounded
    backoff while the platform fails transiently, until the row settles. Idempotent."""
    code = PlatformCode.objects.filter(pk=code_id).select_related("coupon").first()
    if code is None:
        return "gone"
    if code.state != PlatformCode.State.PENDING:
        return str(code.state)
    state = code_publish(code.coupon, clock.now())
    if state.usable:
        return "confirmed"
    if not state.transient:
        return "failed"
    fresh = PlatformCode.objects.get(pk=code_id)
    wait = 5.0 * 2 ** max(fresh.attempts - 1, 0)
    if fresh.next_attempt_at is not None:
        wait = max(wait, (fresh.next_attempt_at - clock.now()).total_seconds())
    raise self.retry(countdown=min(wait, _TASK_BACKOFF_MAX))


# Restore links ---------------------------------------------------------------------------------


_HOSTNAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _safe(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and parts.username is None
        and parts.password is None
        and "\\" not in url
        and not any(ord(c) < 33 for c in url)
    )


def _allowed_hosts(connection: Connection) -> set[str]:
    """Hosts a restore link may lead to: the shop's own (its domain, storefront, site)."""
    hosts = {connection.shop_domain.lower()} if connection.shop_domain else set()
    hosts |= {_host(connection.storefront_url), _host(connection.api_url)} - {""}
    return hosts


def _confirmed_code(store_id: int, code: str | None) -> str | None:
    """``code`` if it may be applied on the platform: made there and confirmed."""
    if not code:
        return None
    confirmed = PlatformCode.objects.filter(
        coupon__store_id=store_id, coupon__code=code, state=PlatformCode.State.CONFIRMED
    ).exists()
    return code if confirmed else None


def restore_target(store_id: int, cart: str, code: str | None) -> str | None:
    """Where a restore link takes the shopper: the platform's own cart or checkout for ``cart``
    (as a signed webhook recorded it), with ``code`` applied where the platform allows it
    (Shopify's shareable discount link); None (our own restore page) when there is none, or it
    leads off the shop's hosts."""
    row = (
        PlatformCart.objects.filter(store_id=store_id, cart=cart, deleted=False)
        .values("platform", "restore_url")
        .first()
    )
    if row is None or not row["restore_url"] or not _safe(row["restore_url"]):
        return None
    connection = (
        Connection.objects.filter(store_id=store_id, platform=row["platform"], active=True)
        .order_by("pk")
        .first()
    )
    if connection is None:
        return None
    url: str = row["restore_url"]
    parts = urlsplit(url)
    if connection.platform == Platform.SHOPIFY:
        if not _HOSTNAME.fullmatch(connection.shop_domain):
            return None
        # Always on the shop's own domain (it forwards to the shop's primary domain): the
        # recorded URL's path and query only, so no link leaves the shop.
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        applied = _confirmed_code(store_id, code) if connection.codes_on_platform else None
        if applied is None:
            return f"https://{connection.shop_domain}{path}"
        # Shopify's shareable discount link applies the code, then goes to ``redirect``: a path
        # on the same shop (the checkout's recover link).
        return (
            f"https://{connection.shop_domain}/discount/{quote(applied, safe='')}"
            f"?redirect={quote(path, safe='')}"
        )
    # WooCommerce and Saleor have no standard URL parameter that applies a code (a plugin or the
    # storefront's own code may add one): the link goes to the cart as is, the email shows it.
    return url if _host(url) in _allowed_hosts(connection) else None
