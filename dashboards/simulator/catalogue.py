"""The products simulated shoppers buy: the REES46 multi-category store's catalogue
(bench/data/rees46), each product with its category, brand and price, drawn by how often it was
viewed there. Pure: a file in, a catalogue out."""

from __future__ import annotations

import bisect
import csv
import itertools
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REES46_CATALOGUE = (
    Path(__file__).resolve().parent.parent.parent
    / "bench"
    / "data"
    / "rees46"
    / "2019-Oct_head_first-half.csv"
)


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    category: str
    unit_price: int  # minor units


@dataclass(frozen=True, slots=True)
class Catalogue:
    products: tuple[Product, ...]
    cumulative: tuple[float, ...]  # popularity, for weighted draws

    def draw(self, rng: random.Random) -> Product:
        at = rng.random() * self.cumulative[-1]
        return self.products[bisect.bisect_right(self.cumulative, at)]


def catalogue_of(products: Sequence[tuple[Product, float]]) -> Catalogue:
    """A catalogue from (product, weight) pairs, in the order given."""
    if not products:
        raise ValueError("A catalogue needs at least one product.")
    return Catalogue(
        products=tuple(p for p, _ in products),
        cumulative=tuple(itertools.accumulate(float(w) for _, w in products)),
    )


# Rows of the REES46 catalogue (views there as weights), for when the file is not at hand.
FALLBACK = catalogue_of(
    [
        (Product("1005115", "Apple smartphone", "electronics", 97557), 92),
        (Product("6200315", "Elenberg air heater", "appliances", 3344), 15),
        (Product("1307073", "Acer notebook", "computers", 66900), 13),
        (Product("6000094", "Starline alarm", "auto", 12124), 10),
        (Product("12900125", "Hp cartrige", "stationery", 1130), 8),
        (Product("28401176", "Karya bag", "accessories", 10039), 7),
        (Product("28719071", "Baden keds", "apparel", 10271), 6),
        (Product("16700605", "Zeta chair", "furniture", 1619), 6),
    ]
)


def catalogue_load(path: Path = REES46_CATALOGUE) -> Catalogue:
    """The products of a REES46 export (``event_time, event_type, product_id, category_id,
    category_code, brand, price, ...``) with a category, a brand and a price, weighted by their
    views; the small built-in catalogue when the file is not there."""
    try:
        file = path.open(newline="")
    except FileNotFoundError:
        return FALLBACK
    views: Counter[str] = Counter()
    products: dict[str, Product] = {}
    with file:
        for row in csv.DictReader(file):
            code, brand = row.get("category_code") or "", row.get("brand") or ""
            try:
                price = round(float(row.get("price") or 0) * 100)
            except ValueError:
                continue
            if not code or not brand or price <= 0:
                continue
            sku = row["product_id"]
            if sku not in products:
                leaf = code.rsplit(".", 1)[-1].replace("_", " ")
                products[sku] = Product(sku, f"{brand.title()} {leaf}", code.split(".")[0], price)
            views[sku] += 1
    if not products:
        return FALLBACK
    return catalogue_of([(p, views[sku]) for sku, p in products.items()])
