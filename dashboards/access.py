"""Which stores' dashboards a user may see.

A superuser sees every store. Anyone else sees the stores they are a member of as a marketer (the
dashboard role) or a merchant (who configures the campaigns and so may see what they do). Staff
status alone grants nothing. Pages, CSV exports and the API all ask here, and answer a store the
user may not see with 404, as for a store that does not exist.
"""

from __future__ import annotations

from typing import Any

from carts import selectors as carts_selectors
from carts.models import Store, StoreMember

VIEWER_ROLES = (StoreMember.Role.MARKETER, StoreMember.Role.MERCHANT)


def viewable_store_ids(*, user: Any) -> frozenset[int] | None:
    """The ids of the stores ``user`` may see; None means every store (a superuser)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return None
    ids: frozenset[int] = frozenset()
    for role in VIEWER_ROLES:
        ids |= carts_selectors.member_store_ids(user_id=user.pk, role=role)
    return ids


def can_view(*, user: Any, store_id: int) -> bool:
    """Whether ``user`` may see the dashboards of store ``store_id`` (which must exist)."""
    ids = viewable_store_ids(user=user)
    if ids is None:
        return Store.objects.filter(pk=store_id).exists()
    return store_id in ids


def viewable_stores(*, user: Any) -> list[Store]:
    """The stores ``user`` may see, by name."""
    ids = viewable_store_ids(user=user)
    stores = Store.objects.all() if ids is None else Store.objects.filter(pk__in=ids)
    return list(stores.order_by("name", "pk"))
