"""The dashboard pages under /dashboard/<store>/ and their CSV exports.

Each view checks access (a store the user may not see is a 404, as one that does not exist),
parses the filters (``apis.filters_parse``: the API's, with field errors shown on the page and a
400), calls the selectors and renders; the tables and charts come from dashboards/pages.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from campaigns.models import Tier
from carts.models import Store
from dashboards import access, apis, definitions, logins, pages, selectors
from dashboards.tables import Table

LOGIN_URL = "dashboards:login"
PAGES = (
    ("overview", "Overview"),
    ("timeseries", "Over time"),
    ("funnel", "Funnel"),
    ("offers", "Offers"),
    ("scores", "Scores"),
    ("products", "Products"),
)


class LoginView(logins.LimitedLoginMixin, auth_views.LoginView):
    """Failed logins limited per username and address (dashboards/logins.py)."""

    authentication_form = logins.LimitedLoginForm
    template_name = "dashboards/login.html"
    next_page = "dashboards:index"
    redirect_authenticated_user = True


logout = auth_views.LogoutView.as_view(next_page=LOGIN_URL)


@login_required(login_url=LOGIN_URL)
def index(request: HttpRequest) -> HttpResponse:
    """The user's stores; straight to the overview when there is one."""
    stores = access.viewable_stores(user=request.user)
    if len(stores) == 1:
        return redirect("dashboards:overview", store_id=stores[0].pk)
    return render(request, "dashboards/stores.html", {"stores": stores})


def _store(request: HttpRequest, store_id: int) -> Store:
    if not access.can_view(user=request.user, store_id=store_id):
        raise Http404("No such store.")
    return get_object_or_404(Store, pk=store_id)


def _filters(
    request: HttpRequest, store: Store, now: datetime, zone: ZoneInfo
) -> tuple[selectors.Filters | None, dict[str, Any], list[tuple[int, str]]]:
    """(filters or None, field errors, the store's campaigns)."""
    campaigns = apis.store_campaigns(store.pk)
    try:
        filters = apis.filters_parse(
            request.GET, store_id=store.pk, now=now, zone=zone, campaigns=campaigns
        )
    except ValidationError as exc:
        return None, dict(exc.detail) if isinstance(exc.detail, dict) else {}, campaigns
    return filters, {}, campaigns


def _context(
    request: HttpRequest,
    store: Store,
    page: str,
    filters: selectors.Filters | None,
    errors: dict[str, Any],
    campaigns: list[tuple[int, str]],
    zone: ZoneInfo,
) -> dict[str, Any]:
    query = request.GET.urlencode()
    suffix = f"?{query}" if query else ""
    nav = [
        {
            "url": reverse(f"dashboards:{name}", args=[store.pk]) + suffix,
            "label": label,
            "current": name == page,
        }
        for name, label in PAGES
    ]
    # The live page (dashboards' websocket view) lives at /dashboard/<store>/live/.
    nav.append({"url": f"/dashboard/{store.pk}/live/", "label": "Live", "current": False})
    shown = {
        "start": filters.start.isoformat() if filters else request.GET.get("start", ""),
        "end": (filters.end - apis.ONE_DAY).isoformat() if filters else request.GET.get("end", ""),
        "campaign": str(filters.campaign_id or "") if filters else request.GET.get("campaign", ""),
        "channel": (filters.channel or "") if filters else request.GET.get("channel", ""),
    }
    return {
        "period": _period(filters.start, filters.end) if filters else "",
        "previous_period": _period(filters.previous().start, filters.start) if filters else "",
        "store": store,
        "page": page,
        "title": dict(PAGES)[page],
        "nav": nav,
        "filters": filters,
        "shown": shown,
        "errors": {k: [str(m) for m in v] for k, v in errors.items()},
        "campaigns": campaigns,
        "channels": Tier.Channel.choices,
        "timezone": zone.key,
        "query": suffix,
    }


def _period(start: date, end: date) -> str:
    """``[start, end)`` for reading: ``"8 Nov 2026 to 14 Nov 2026 (7 days)"``."""
    last = end - apis.ONE_DAY
    days = (end - start).days
    return f"{_day(start)} to {_day(last)} ({days} day{'s' if days != 1 else ''})"


def _day(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def _table_context(store: Store, table: Table, query: str) -> dict[str, Any]:
    return {
        "name": table.name,
        "caption": table.caption,
        "columns": [c.label for c in table.columns],
        "rows": table.display(store.locale),  # money in the store's locale
        "csv": reverse("dashboards:export", args=[store.pk, table.name]) + query,
        "empty": table.empty,
        "help": table.help,
    }


# (filters, now, the store's locale for money) -> the page's parts.
Builder = Callable[[selectors.Filters, datetime, str], dict[str, Any]]


@login_required(login_url=LOGIN_URL)
def help_page(request: HttpRequest) -> HttpResponse:
    """The figures' definitions: docs/dashboards.md, rendered (each figure's row an anchor)."""
    return render(
        request, "dashboards/help.html", {"doc": definitions.rendered(), "title": "Definitions"}
    )


def _page(name: str, template: str, build: Builder) -> Callable[..., HttpResponse]:
    @login_required(login_url=LOGIN_URL)
    def view(request: HttpRequest, store_id: int) -> HttpResponse:
        store = _store(request, store_id)
        now = timezone.now()
        zone = selectors.store_zone(store.pk)
        filters, errors, campaigns = _filters(request, store, now, zone)
        context = _context(request, store, name, filters, errors, campaigns, zone)
        if filters is None:
            return render(request, template, context, status=400)
        parts = build(filters, now, store.locale)
        context["tables"] = [
            _table_context(store, t, context["query"]) for t in parts.pop("tables", [])
        ]
        context.update(parts)
        return render(request, template, context)

    view.__name__ = name
    return view


# -- what each page shows -----------------------------------------------------------------------


def _overview(filters: selectors.Filters, now: datetime, locale: str) -> dict[str, Any]:
    result = selectors.overview(filters, now=now)
    series = selectors.timeseries(filters, now=now)
    currency = selectors.store_currency(filters.store_id)
    return {
        "overview": result,
        "figures": pages.figure_lines(result, currency=currency, locale=locale),
        "onsite": pages.onsite_lines(result, currency=currency, locale=locale),
        "lift": pages.lift_lines(result, locale=locale),
        "charts": pages.series_charts(series, only_carts=True, locale=locale),
        "tables": [pages.series_table(series)],
    }


def _timeseries(filters: selectors.Filters, now: datetime, locale: str) -> dict[str, Any]:
    series = selectors.timeseries(filters, now=now)
    return {
        "series": series,
        "charts": pages.series_charts(series, locale=locale),
        "tables": [pages.series_table(series)],
    }


def _funnel(filters: selectors.Filters, now: datetime, locale: str) -> dict[str, Any]:
    rows = selectors.funnel(filters)
    return {
        "charts": pages.funnel_charts(rows),
        "tables": [pages.funnel_table(rows)],
        "empty": pages.EMPTY_FUNNEL if not rows else "",
    }


def _offers(filters: selectors.Filters, now: datetime, locale: str) -> dict[str, Any]:
    result = selectors.offers(filters)
    return {
        "charts": pages.offers_charts(result),
        "tables": [pages.offers_table(result), pages.no_offer_table(result)],
        "empty": pages.EMPTY_OFFERS if not result.kinds else "",
    }


def _scores(filters: selectors.Filters, now: datetime, locale: str) -> dict[str, Any]:
    bands = selectors.scores(filters, now=now)
    settled, pending = sum(b.carts for b in bands), sum(b.pending for b in bands)
    note = (
        f"{settled:,} settled carts (scored at least 24 hours ago: their outcome is known) and "
        f"{pending:,} pending (scored less than 24 hours ago: not counted yet)."
    )
    if not settled:
        note += (
            " No settled carts yet: observed abandonment appears 24 hours after the first "
            "carts are scored (at enrolment or at an exit intent)."
        )
    return {
        "charts": pages.scores_charts(bands),
        "tables": [pages.scores_table(bands)],
        "empty": note,
    }


def _products(filters: selectors.Filters, now: datetime, locale: str) -> dict[str, Any]:
    products = selectors.top_products(filters, now=now, by="sku")
    categories = selectors.top_products(filters, now=now, by="category")
    return {
        "charts": [
            pages.lost_chart(products, by="sku", locale=locale),
            pages.lost_chart(categories, by="category", locale=locale),
        ],
        "tables": [
            pages.lost_table(products, by="sku"),
            pages.lost_table(categories, by="category"),
        ],
    }


overview = _page("overview", "dashboards/overview.html", _overview)
timeseries = _page("timeseries", "dashboards/charts.html", _timeseries)
funnel = _page("funnel", "dashboards/charts.html", _funnel)
offers = _page("offers", "dashboards/charts.html", _offers)
scores = _page("scores", "dashboards/charts.html", _scores)
products = _page("products", "dashboards/charts.html", _products)


# -- CSV ----------------------------------------------------------------------------------------

EXPORTS: dict[str, Callable[[selectors.Filters, datetime], Table]] = {
    "overview": lambda f, now: pages.overview_table(selectors.overview(f, now=now)),
    "lift": lambda f, now: pages.lift_table(selectors.overview(f, now=now)),
    "timeseries": lambda f, now: pages.series_table(selectors.timeseries(f, now=now)),
    "funnel": lambda f, now: pages.funnel_table(selectors.funnel(f)),
    "offers": lambda f, now: pages.offers_table(selectors.offers(f)),
    "no_offer": lambda f, now: pages.no_offer_table(selectors.offers(f)),
    "scores": lambda f, now: pages.scores_table(selectors.scores(f, now=now)),
    "products": lambda f, now: pages.lost_table(
        selectors.top_products(f, now=now, by="sku"), by="sku"
    ),
    "categories": lambda f, now: pages.lost_table(
        selectors.top_products(f, now=now, by="category"), by="category"
    ),
}


@login_required(login_url=LOGIN_URL)
def export(request: HttpRequest, store_id: int, table: str) -> HttpResponse:
    """A page's table as CSV, with the page's filters."""
    store = _store(request, store_id)
    make = EXPORTS.get(table)
    if make is None:
        raise Http404("No such table.")
    now = timezone.now()
    filters, errors, _ = _filters(request, store, now, selectors.store_zone(store.pk))
    if filters is None:
        lines = [
            f"{field}: {' '.join(str(m) for m in messages)}" for field, messages in errors.items()
        ]
        return HttpResponse("\n".join(lines), status=400, content_type="text/plain; charset=utf-8")
    end = filters.end - apis.ONE_DAY
    name = f"store{store.pk}-{table}-{filters.start.isoformat()}-{end.isoformat()}.csv"
    response = HttpResponse(make(filters, now).csv(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
