"""The demo storefront (/demo/): a tiny shop running the storefront snippet against this server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TypedDict

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

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
