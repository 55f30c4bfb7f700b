"""Reads of the recovery app."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.db import connection

from recovery.models import ScoringModel

# One branch per partial index, (store, shopper_id) and (store, lower(email)): an OR of the two
# would scan the store's carts, and so would a branch given an empty array (untyped, it is
# planned as a filter), so only the branches with values are sent. Each repeats its index's
# condition so that the index is used. UNION (not UNION ALL): a cart matching both comes once.
_COLUMNS = "shopper_id, lower(email), token, status = 'converted', item_count > 0"
_BY_IDS = f"""
    SELECT {_COLUMNS} FROM carts_cartstate
    WHERE store_id = %s AND shopper_id <> '' AND shopper_id = ANY(%s::text[])
"""
_BY_EMAILS = f"""
    SELECT {_COLUMNS} FROM carts_cartstate
    WHERE store_id = %s AND email <> '' AND lower(email) = ANY(%s::text[])
"""


@dataclass(frozen=True, slots=True)
class ShopperCart:
    shopper_id: str
    email: str  # lower-cased
    token: str
    converted: bool
    has_items: bool


def shopper_carts(
    *, store_id: int, shopper_ids: Collection[str], emails: Collection[str]
) -> list[ShopperCart]:
    """The store's carts of these shoppers (by id) or these emails (case-insensitive), in one
    indexed query: the material of returning shoppers' past orders and abandonments."""
    branches: list[str] = []
    params: list[Any] = []
    if shopper_ids:
        branches.append(_BY_IDS)
        params += [store_id, list(shopper_ids)]
    if emails:
        branches.append(_BY_EMAILS)
        params += [store_id, [e.lower() for e in emails]]
    if not branches:
        return []
    with connection.cursor() as cursor:
        cursor.execute(" UNION ".join(branches), params)
        return [ShopperCart(*row) for row in cursor.fetchall()]


_TYPICAL_BASKET = """
    SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY order_total)
    FROM carts_cartstate
    WHERE store_id = %s AND status = 'converted' AND order_total IS NOT NULL
"""


def store_typical_basket(*, store_id: int) -> int | None:
    """The store's median order total (minor units), or None before its first order."""
    with connection.cursor() as cursor:
        cursor.execute(_TYPICAL_BASKET, [store_id])
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


_ACTIVE = """
    SELECT id, version FROM recovery_scoringmodel WHERE store_id = %s AND active
"""


def active_model_ref(*, store_id: int) -> tuple[int, str] | None:
    """(id, version) of the store's active model, or None (the stock model applies)."""
    with connection.cursor() as cursor:
        cursor.execute(_ACTIVE, [store_id])
        row = cursor.fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def scoring_model_get(*, model_id: int) -> ScoringModel:
    return ScoringModel.objects.get(pk=model_id)


def scoring_models_list(*, store_id: int) -> list[ScoringModel]:
    return list(ScoringModel.objects.filter(store_id=store_id).order_by("-created_at"))
