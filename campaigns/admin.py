"""Merchant admin: campaigns with their tiers inline."""

from __future__ import annotations

from django.contrib import admin

from campaigns.models import Campaign, Tier


class TierInline(admin.StackedInline):
    model = Tier
    extra = 0
    fields = [
        ("position", "channel"),
        ("min_score", "min_cart_value"),
        ("offer_kind", "percent", "discount_cap"),
        "headline",
        "body",
        ("cta_label", "cta_url"),
        ("cooldown_hours", "offer_ttl_minutes"),
    ]


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "store", "active", "priority", "holdout_share", "created_at"]
    list_filter = ["active", "store"]
    inlines = [TierInline]
