"""Reads of the recovery app."""

from __future__ import annotations

from django.db import connection

from recovery.models import ScoringModel

_HISTORY = """
    SELECT count(*) FILTER (WHERE status = 'converted'),
           count(*) FILTER (WHERE status <> 'converted' AND item_count > 0)
    FROM carts_cartstate
    WHERE store_id = %s AND token <> %s AND {match}
"""
_BY_ID = _HISTORY.format(match="shopper_id = %s")
_BY_EMAIL = _HISTORY.format(match="lower(email) = lower(%s)")


def shopper_history(
    *, store_id: int, shopper_id: str, email: str, exclude_cart: str
) -> tuple[int, int]:
    """(past orders, past abandonments) of a shopper, known by id or else by email: their other
    carts that converted, and those holding items that have not."""
    sql, value = (_BY_ID, shopper_id) if shopper_id else (_BY_EMAIL, email)
    with connection.cursor() as cursor:
        cursor.execute(sql, [store_id, exclude_cart, value])
        orders, abandonments = cursor.fetchone()
    return int(orders), int(abandonments)


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
