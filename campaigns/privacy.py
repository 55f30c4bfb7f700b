"""The campaigns' section of a shopper's export (carts/privacy.py, docs/security.md "Erasure and
export"): what running campaigns left behind about the shopper's carts and shopper keys.

Registered from CampaignsConfig.ready() with ``carts.privacy.export_section_register``. Erasure
needs nothing of this app: its rows hold no address (a shopper is a sha256 shopper key or the
shop's own id), and the emails it sent are named by the log's events, whose personal fields the
erased keys no longer open.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db.models import Q

from campaigns.models import Coupon, Enrollment, Step, Suppression

NAME = "campaigns"


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _rows(queryset: Any, fields: dict[str, str]) -> list[dict[str, Any]]:
    """The rows' ``fields`` (output name -> lookup), datetimes as ISO 8601 strings."""
    return [
        {name: _iso(row[lookup]) for name, lookup in fields.items()}
        for row in queryset.values(*fields.values())
    ]


def export_section(
    store_id: int, carts: Sequence[str], shopper_keys: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The shopper's enrollments, steps, coupons and suppressions in the store: those of their
    carts, and those recorded under their shopper keys."""
    mine = Q(cart__in=list(carts)) | Q(shopper__in=list(shopper_keys))
    return {
        "enrollments": _rows(
            Enrollment.objects.filter(mine, store_id=store_id).order_by("abandoned_at", "pk"),
            {
                "cart": "cart",
                "campaign": "campaign__name",
                "holdout": "holdout",
                "abandoned_at": "abandoned_at",
            },
        ),
        "steps": _rows(
            Step.objects.filter(mine, store_id=store_id).order_by("due_at", "pk"),
            {
                "cart": "cart",
                "channel": "tier__channel",
                "status": "status",
                "reason": "reason",
                "due_at": "due_at",
                "finished_at": "finished_at",
            },
        ),
        "coupons": _rows(
            Coupon.objects.filter(mine, store_id=store_id).order_by("issued_at", "pk"),
            {
                "cart": "cart",
                "code": "code",
                "kind": "kind",
                "amount": "amount",
                "currency": "currency",
                "issued_at": "issued_at",
                "expires_at": "expires_at",
                "redeemed_at": "redeemed_at",
                "order_id": "order_id",
            },
        ),
        "suppressions": _rows(
            Suppression.objects.filter(
                Q(shopper__in=list(shopper_keys)) | Q(cart__in=list(carts)), store_id=store_id
            ).order_by("created_at", "pk"),
            {"kind": "kind", "created_at": "created_at"},
        ),
    }
