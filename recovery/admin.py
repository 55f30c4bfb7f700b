"""Merchant admin: trained scoring models, their metrics, and activation."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from carts.admin import SuperuserOnlyAdmin
from recovery import services
from recovery.models import ScoringModel


@admin.register(ScoringModel)
class ScoringModelAdmin(SuperuserOnlyAdmin):  # every store's models: superusers only
    list_display = ["version", "store", "active", "test_roc_auc", "test_carts", "created_at"]
    list_filter = ["active", "store"]
    readonly_fields = [
        "version", "store", "active", "features_version", "typical_basket", "horizon_seconds",
        "window_start", "window_end", "split_at", "created_at", "activated_at", "metrics_table",
    ]  # fmt: skip
    exclude = ["artifact", "metrics"]
    actions = ["activate", "back_to_stock"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # models come from train_scorer

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a trained artifact is never edited; actions still work

    @admin.display(description="Test ROC AUC")
    def test_roc_auc(self, obj: ScoringModel) -> Any:
        return obj.metrics.get("test", {}).get("roc_auc")

    @admin.display(description="Test carts")
    def test_carts(self, obj: ScoringModel) -> Any:
        return obj.metrics.get("test", {}).get("carts")

    @admin.display(description="Metrics")
    def metrics_table(self, obj: ScoringModel) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.metrics, indent=2))

    @admin.action(description="Activate (running processes switch within seconds)")
    def activate(self, request: HttpRequest, queryset: QuerySet[ScoringModel]) -> None:
        if (
            queryset.count() != 1
            and queryset.values("store").distinct().count() != queryset.count()
        ):
            self.message_user(
                request, "Choose at most one model per store to activate.", messages.ERROR
            )
            return
        for model in queryset:
            services.scorer_activate(model=model, now=timezone.now())
            self.message_user(request, f"Activated {model.version}.", messages.SUCCESS)

    @admin.action(description="Deactivate: the store goes back to the stock model")
    def back_to_stock(self, request: HttpRequest, queryset: QuerySet[ScoringModel]) -> None:
        for store_id in set(queryset.values_list("store_id", flat=True)):
            services.scorer_deactivate(store_id=store_id)
        self.message_user(request, "Those stores now score with the stock model.", messages.SUCCESS)
