"""The live page, /dashboard/<store>/live/: active carts and a feed of events, kept up to date
by dashboards/static/dashboards/live.js over the dashboard websocket (dashboards/consumers.py)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from carts import money
from carts.models import Store
from dashboards import ABANDONMENT_WINDOW, access, views


@login_required(login_url=views.LOGIN_URL)
def live(request: HttpRequest, store_id: int) -> HttpResponse:
    """The page shell; the carts and the feed come over the websocket (a snapshot, then events)."""
    if not access.can_view(user=request.user, store_id=store_id):
        raise Http404("No such store.")
    store = get_object_or_404(Store, pk=store_id)
    nav = [
        {"url": reverse(f"dashboards:{name}", args=[store.pk]), "label": label, "current": False}
        for name, label in views.PAGES
    ]
    nav.append({"url": request.path, "label": "Live", "current": True})
    return render(
        request,
        "dashboards/live/live.html",
        {
            "store": store,
            "nav": nav,
            "window_seconds": int(ABANDONMENT_WINDOW.total_seconds()),
            "window_minutes": int(ABANDONMENT_WINDOW.total_seconds() // 60),
            # Money as the pages write it: the store's locale as a BCP 47 tag (live.js).
            "locale": money.locale_tag(store.locale),
        },
    )
