"""The links in campaign emails (campaigns/links.py): restore, open pixel, unsubscribe, stop.

Unsubscribe and "don't remind me" act on POST only: mail scanners follow every link in a message
with GET. Both are CSRF-exempt: RFC 8058 one-click POSTs come from mail providers, without a
cookie, and the signed token in the URL is what authorises the request. Times come from the
campaigns' clock (campaigns/clock.py), as the scheduler's and the workers' do.

A link's signature is checked first (a link that is not ours costs no Redis or database round
trip), then the client's limit (carts/ratelimits.py): restore links and "don't remind me" count
against ``restore_ip``, the open pixel against ``open_link`` per address and link (mail image
proxies fetch every recipient's pixel from a few addresses), unsubscribe against
``unsubscribe_ip`` (confirming POSTs per address and link). Over it the answer
is a 429 with Retry-After and nothing is recorded, except that a restore link still takes the
shopper to their cart, without recording the click.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import datetime

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from campaigns import clock, links, selectors, tracking
from campaigns.extensions import HOOKS
from campaigns.models import Coupon, Step
from carts import ratelimits

# The smallest transparent GIF (1x1, 43 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
UNKNOWN_STEP = "This link does not belong to any email we sent."


def _private(response: HttpResponse) -> HttpResponse:
    # Proxies must not answer for us (a cached pixel is an unrecorded open), and the token must
    # not travel on to the store in a Referer header.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _bad_link(request: HttpRequest, message: str) -> HttpResponse:
    return _private(
        render(request, "campaigns/link_invalid.html", {"message": message}, status=404)
    )


def _step_id(link_id: uuid.UUID) -> int:
    """The step a link names (by its opaque link_id); Step.DoesNotExist if none."""
    return selectors.step_id_for_link(link_id=link_id)


def _too_many(verdict: ratelimits.Verdict) -> HttpResponse:
    return _private(ratelimits.too_many(verdict))


def _platform_target(step_id: int, now: datetime) -> str | None:
    """The store's platform's own cart for the step's cart, with its usable code applied where
    the platform allows (HOOKS.restore_target, integrations); None: the store's cart URL."""
    if HOOKS.restore_target is None:
        return None
    step = Step.objects.filter(pk=step_id).values("store_id", "cart").get()
    code = (
        Coupon.objects.filter(
            store_id=step["store_id"],
            cart=step["cart"],
            redeemed_at__isnull=True,
            expires_at__gt=now,
        )
        .values_list("code", flat=True)
        .first()
    )
    return HOOKS.restore_target(step["store_id"], step["cart"], code)


@require_GET
def restore(request: HttpRequest, token: str) -> HttpResponse:
    """Record the click and send the shopper to the store's cart. Over the client's limit the
    shopper is still sent there (finding the cart writes nothing, and many shoppers can share
    an address); only the click goes unrecorded."""
    try:
        link_id = links.link_from_token(token, links.Purpose.RESTORE)
        verdict = ratelimits.hit("restore_ip", ratelimits.client_ip(request))
        step_id = _step_id(link_id)
        now = clock.now()
        if verdict.allowed:
            url = tracking.link_click_record(step_id=step_id, now=now)
        else:
            url = tracking.restore_target(step_id=step_id, now=now)
        url = _platform_target(step_id, now) or url
    except links.BadLink as exc:
        return _bad_link(request, exc.message)
    except Step.DoesNotExist:
        return _bad_link(request, UNKNOWN_STEP)
    return _private(HttpResponseRedirect(url))


@require_GET
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    """Record the open; a 1x1 transparent GIF."""
    try:
        link_id = links.link_from_token(token, links.Purpose.OPEN)
        verdict = ratelimits.hit("open_link", ratelimits.client_ip(request), link_id.hex)
        if not verdict.allowed:
            return _too_many(verdict)
        tracking.email_open_record(step_id=_step_id(link_id), now=clock.now())
    except links.BadLink as exc:
        return _bad_link(request, exc.message)
    except Step.DoesNotExist:
        return _bad_link(request, UNKNOWN_STEP)
    return _private(HttpResponse(PIXEL_GIF, content_type="image/gif"))


def _confirm_then_act(
    request: HttpRequest,
    token: str,
    *,
    purpose: links.Purpose,
    act: Callable[..., bool],
    template: str,
    limit: str,
) -> HttpResponse:
    """GET: a page asking to confirm with a POST; POST: ``act`` and the page saying it is done.

    Pages count against ``limit`` per client address, a POST per address and link: RFC 8058
    one-click POSTs come from the mail providers' servers, whose few addresses carry every
    shopper's requests to every store, and each link acts once (a repeat stores nothing)."""
    try:
        link_id = links.link_from_token(token, purpose)
        ip = ratelimits.client_ip(request)
        if request.method == "POST":
            verdict = ratelimits.hit(limit, ip, link_id.hex)
        else:
            verdict = ratelimits.hit(limit, ip)
        if not verdict.allowed:
            return _too_many(verdict)
        step_id = _step_id(link_id)
        store_name = tracking.step_store_name(step_id=step_id)
        if request.method == "POST":
            act(step_id=step_id, now=clock.now())
    except links.BadLink as exc:
        return _bad_link(request, exc.message)
    except Step.DoesNotExist:
        return _bad_link(request, UNKNOWN_STEP)
    context = {"store_name": store_name, "done": request.method == "POST"}
    return _private(render(request, template, context))


@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """The List-Unsubscribe URL: GET confirms, POST (RFC 8058 one-click, or the form) acts."""
    return _confirm_then_act(
        request,
        token,
        purpose=links.Purpose.UNSUBSCRIBE,
        act=tracking.shopper_unsubscribe,
        template="campaigns/unsubscribe.html",
        limit="unsubscribe_ip",
    )


@csrf_exempt
@require_http_methods(["GET", "POST"])
def stop(request: HttpRequest, token: str) -> HttpResponse:
    """ "Don't remind me": GET confirms, POST acts."""
    return _confirm_then_act(
        request,
        token,
        purpose=links.Purpose.STOP,
        act=tracking.reminders_decline,
        template="campaigns/stop.html",
        limit="restore_ip",
    )
