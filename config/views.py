"""The landing page of a running instance."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from carts import services
from carts.models import CartEvent, CartState, Store
from config import devrun, env

# The guide for merchants and marketers, and the developers' docs, by their path in the checkout.
GUIDES = (
    ("docs/first-hour.md", "First hour: what make run shows at minute 0, 2, 5, 30 and 60"),
    ("README.md", "README: running, testing, keys, configuration"),
    ("docs/api.md", "API: events, carts, coupons, the browser snippet"),
    ("docs/dashboards.md", "Dashboards: what every figure means"),
    ("docs/architecture.md", "Architecture"),
)


def index(request: HttpRequest) -> HttpResponse:
    demo = Store.objects.filter(name=services.DEMO_STORE_NAME).order_by("pk").first()
    credentials = env.VAR_DIR / devrun.CREDENTIALS_FILE
    context: dict[str, object] = {
        "demo_store": demo,
        "credentials_file": devrun.display_path(credentials),
        "credentials_kept": credentials.exists(),
        "guides": [(path, label) for path, label in GUIDES if (env.BASE_DIR / path).exists()],
    }
    if demo is not None:
        context["demo_events"] = CartEvent.objects.filter(store=demo).count()
        context["demo_carts"] = CartState.objects.filter(store=demo, version__gt=0).count()
    return render(request, "index.html", context)
