"""Scoring models: versioned council artifacts with their metrics."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from carts.models import Store


class ScoringModel(models.Model):
    """A trained council, stored with its metrics and training window.

    At most one model is active per store; a store without one is scored by the stock model that
    ships with the project (recovery/stock_model.json).
    """

    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="+")
    version = models.CharField(max_length=64, unique=True)
    active = models.BooleanField(default=False)
    artifact = models.JSONField(help_text="The council's parameters (recovery.council.Council).")
    features_version = models.PositiveIntegerField()
    typical_basket = models.BigIntegerField(
        null=True, blank=True, help_text="Median order total in the training window, minor units."
    )
    horizon_seconds = models.PositiveIntegerField()
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    split_at = models.DateTimeField(
        null=True, blank=True, help_text="Carts first seen before this trained; the rest tested."
    )
    metrics = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["store"], condition=Q(active=True), name="scoringmodel_one_active_per_store"
            ),
        ]
        indexes = [models.Index(fields=["store", "-created_at"])]

    def __str__(self) -> str:
        return self.version + (" (active)" if self.active else "")
