"""The landing page of a running instance."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from carts import services
from carts.models import CartEvent, CartState, Store


def index(request: HttpRequest) -> HttpResponse:
    demo = Store.objects.filter(name=services.DEMO_STORE_NAME).order_by("pk").first()
    context: dict[str, object] = {"demo_store": demo}
    if demo is not None:
        context["demo_events"] = CartEvent.objects.filter(store=demo).count()
        context["demo_carts"] = CartState.objects.filter(store=demo, version__gt=0).count()
    return render(request, "index.html", context)
