"""Email providers' tracking webhooks (anymail's views), mounted under ``/webhooks/email/``.

anymail parses each provider's posts (``<provider>/tracking/``, e.g. ``postmark/tracking/``),
checks their basic auth against ``ANYMAIL["WEBHOOK_SECRET"]`` (and a provider's signature where
it signs: Mailgun, SendGrid, ...; a wrong one is a 400) and sends its ``tracking`` signal;
``tracking_received`` hands bounces and complaints to campaigns/bounces.py. With no webhook
secret configured the URLs answer 404: anymail would accept anyone's posts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from anymail import urls as anymail_urls
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern

from campaigns import bounces, clock

log = logging.getLogger(__name__)

app_name = "email_webhooks"


def _guarded(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.ANYMAIL.get("WEBHOOK_SECRET"):
            raise Http404("email webhooks are off (no ANYMAIL_WEBHOOK_SECRET)")
        return view(request, *args, **kwargs)

    guarded.csrf_exempt = True  # type: ignore[attr-defined]
    return guarded


# The tracking views only: we take no inbound mail.
urlpatterns = [
    URLPattern(p.pattern, _guarded(p.callback), p.default_args, p.name)
    for p in anymail_urls.urlpatterns
    if isinstance(p, URLPattern) and p.name and "inbound" not in p.name
]


def tracking_received(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
    """anymail's ``tracking`` signal: one normalised event of a provider's post. Never raises:
    one event that cannot be recorded must not fail the whole post (a provider batches many,
    and would retry or drop them all); it is logged, and recording is idempotent."""
    try:
        _record(event, str(esp_name))
    except Exception:
        log.exception("recording %s's %s report failed", esp_name, getattr(event, "event_type", ""))


def _record(event: Any, esp_name: str) -> None:
    report = bounces.ProviderReport(
        esp=str(esp_name),
        event_type=str(event.event_type or ""),
        event_id=str(event.event_id or ""),
        message_id=str(event.message_id or ""),
        metadata=event.metadata if isinstance(event.metadata, dict) else {},
        description=str(event.description or ""),
        mta_response=str(event.mta_response or ""),
        raw=event.esp_event,
    )
    bounces.provider_report_record(report=report, now=clock.now())  # campaign time
