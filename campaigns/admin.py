"""Merchant admin: campaigns with their tiers inline, the store's campaign settings, an email
preview, and read-only views of what running campaigns leaves behind.

Permissions follow store membership, not Django's model permissions: a staff user who is a
``StoreMember`` with role merchant sees and changes the campaign data of those stores and no
other; a superuser sees every store. Docs: docs/campaigns-admin.md.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from campaigns import services
from campaigns.forms import (
    EMAIL_CHANNELS,
    CampaignForm,
    CampaignSettingsForm,
    TierForm,
    TierFormSet,
)
from campaigns.models import (
    Campaign,
    CampaignSettings,
    Coupon,
    Enrollment,
    Step,
    Suppression,
    Tier,
)
from carts.models import Store, StoreMember
from carts.selectors import member_store_ids

_STORES_ATTR = "_campaigns_merchant_store_ids"


def merchant_store_ids(request: HttpRequest) -> frozenset[int] | None:
    """The stores whose campaign data the request's user may manage: None for a superuser (every
    store), else those where the staff user is a merchant member (cached on the request)."""
    user = request.user
    if user.is_active and user.is_superuser:
        return None
    cached: frozenset[int] | None = getattr(request, _STORES_ATTR, None)
    if cached is None:
        cached = frozenset()
        if user.is_active and user.is_staff:
            cached = member_store_ids(user_id=user.pk, role=StoreMember.Role.MERCHANT)
        setattr(request, _STORES_ATTR, cached)
    return cached


def _allowed(request: HttpRequest, store_id: int | None = None) -> bool:
    ids = merchant_store_ids(request)
    if ids is None:
        return True
    return bool(ids) and (store_id is None or store_id in ids)


class StoreScopedAdmin(admin.ModelAdmin):
    """Rows of the user's stores only; every permission is store membership (see the module)."""

    store_lookup = "store"

    def store_id_of(self, obj: Any) -> int:
        return obj.store_id

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        ids = merchant_store_ids(request)
        if ids is None:
            return queryset
        return queryset.filter(**{f"{self.store_lookup}__in": ids})

    def _may(self, request: HttpRequest, obj: Any = None) -> bool:
        return _allowed(request, None if obj is None else self.store_id_of(obj))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._may(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._may(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        ids = merchant_store_ids(request)
        if db_field.name == "store" and ids is not None:
            kwargs["queryset"] = Store.objects.filter(pk__in=ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        ids = merchant_store_ids(request)
        if ids is not None and len(ids) == 1:
            initial.setdefault("store", str(next(iter(ids))))
        return initial


class ReadOnlyStoreScopedAdmin(StoreScopedAdmin):
    """What running campaigns records: browsable, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TierInline(admin.StackedInline):
    model = Tier
    form = TierForm
    formset = TierFormSet
    ordering = ["position"]
    readonly_fields = ["email_preview_link"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = [
        (
            "When and for whom (every channel)",
            {
                "fields": [
                    ("position", "channel"),
                    "delay_minutes",
                    ("min_score", "min_cart_value"),
                    "email_preview_link",
                ],
                "description": "Tiers run in order of position; each one's delay (minutes after "
                "the cart is abandoned) must be longer than the previous tier's.",
            },
        ),
        (
            "Offer (on-site and discount tiers)",
            {
                "fields": ["offer_kind", "discount_cap"],
                "description": "On-site: what the nudge offers. Discount: percentage, fixed "
                "amount off or free shipping. The cap bounds a percentage (most it takes off) "
                "and a fixed amount (largest allowed), in minor units. Email tiers ignore these.",
            },
        ),
        (
            "On-site nudge (on-site tiers only)",
            {
                "fields": [
                    "percent",
                    "headline",
                    "body",
                    ("cta_label", "cta_url"),
                    ("cooldown_hours", "offer_ttl_minutes"),
                ],
                "description": "Shown over the websocket while the shopper is still on the "
                "site. The percentage applies to an on-site percentage offer.",
            },
        ),
        (
            "Email (email and discount tiers)",
            {
                "fields": ["subject_template", "body_template"],
                "description": "Django template syntax, with the tags if, for (over items, at "
                "most two deep), with, firstof, filter, spaceless, comment, verbatim and "
                "templatetag, and the common text filters (not safe); a long or slow render is "
                "refused. "
                "Available: {{ shopper_name }}, {{ store_name }}, {{ items }} (each with name, "
                "sku, category, quantity, unit_price, line_total), {{ cart_value }}, "
                "{{ restore_url }}, and on discount tiers {{ code }}, {{ discount }}, "
                "{{ code_expires }}. Both must render with a sample cart to be saved; the "
                "message is wrapped with the cart's items, a restore button and an unsubscribe "
                "footer.",
            },
        ),
        (
            "Discount code (discount tiers only)",
            {
                "fields": [
                    ("discount_min", "discount_max"),
                    "code_expiry_hours",
                    ("recent_code_days", "recent_code_policy"),
                    "margin_floor_percent",
                ],
                "description": "Each cart gets one unique code; its amount is chosen between the "
                "minimum and the maximum from the cart's abandonment score and price sensitivity. "
                "Percent points for a percentage (at most 90), minor units for a fixed amount.",
            },
        ),
    ]

    def get_extra(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> int:
        return 1 if obj is None else 0

    def _may(self, request: HttpRequest, obj: Any = None) -> bool:
        # ``obj`` is the campaign the tiers belong to (None on the add page).
        return _allowed(request, None if obj is None else obj.store_id)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any) -> bool:  # type: ignore[override]
        return self._may(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, obj)

    @admin.display(description="Email preview")
    def email_preview_link(self, tier: Tier) -> str:
        if tier.channel not in EMAIL_CHANNELS:
            return "On-site tiers send no email."
        if tier.pk is None:
            return "Save the tier to preview its email."
        url = reverse("admin:campaigns_campaign_preview", args=[tier.campaign_id, tier.pk])
        return format_html(
            '<a href="{}" target="_blank">Preview the saved email with a sample cart</a>', url
        )


@admin.register(Campaign)
class CampaignAdmin(StoreScopedAdmin):
    form = CampaignForm
    inlines = [TierInline]
    list_display = ["name", "store", "active", "priority", "sequence", "holdout", "tier_count",
                    "activated_at", "created_at"]  # fmt: skip
    list_filter = ["active", ("store", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name"]
    ordering = ["store", "-priority", "name"]
    readonly_fields = ["activated_at", "created_at"]
    actions = ["activate", "pause", "duplicate"]
    fieldsets = [
        (None, {"fields": ["name", "store"]}),
        (
            "Abandonment definition",
            {
                "fields": [
                    ("inactivity_minutes", "max_age_days"),
                    ("min_score", "min_cart_value"),
                    ("only_skus", "only_categories"),
                ],
                "description": "When a cart counts as abandoned and is enrolled in this campaign.",
            },
        ),
        (
            "Audience and holdout",
            {
                "fields": ["holdout_share"],
                "description": "A share of shoppers (0 to 0.50) gets nothing, so that recovered "
                "revenue can be compared with what would have happened anyway.",
            },
        ),
        (
            "Frequency caps and quiet hours",
            {
                "fields": [("shopper_cap_hours", "cart_cap"), ("quiet_start", "quiet_end")],
                "description": "Quiet hours are in the shopper's local time (the store's time "
                "zone when the shopper's is unknown); emails due then wait until they end. Set "
                "both ends or neither.",
            },
        ),
        ("Attribution", {"fields": ["attribution_hours"]}),
        ("Priority and status", {"fields": ["priority", "active", "activated_at", "created_at"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .select_related("store")
            .prefetch_related("tiers")
            .annotate(tier_count=Count("tiers"))
        )

    def get_urls(self) -> list[URLPattern]:
        preview = path(
            "<path:object_id>/preview/<int:tier_id>/",
            self.admin_site.admin_view(self.email_preview_view),
            name="campaigns_campaign_preview",
        )
        return [preview, *super().get_urls()]

    @admin.display(description="Tiers", ordering="tier_count")
    def tier_count(self, campaign: Campaign) -> int:
        return getattr(campaign, "tier_count", 0)

    @admin.display(description="Sequence")
    def sequence(self, campaign: Campaign) -> str:
        return " → ".join(
            f"{tier.get_channel_display().split(' (')[0]} +{tier.delay_minutes} min"
            for tier in campaign.tiers.all()
        )

    @admin.display(description="Holdout", ordering="holdout_share")
    def holdout(self, campaign: Campaign) -> str:
        return f"{campaign.holdout_share * 100:.0f}%"

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        if obj.active and obj.activated_at is None:
            obj.activated_at = timezone.now()
        super().save_model(request, obj, form, change)

    @admin.action(description="Activate the selected campaigns")
    def activate(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        now = timezone.now()
        activated = 0
        for campaign in queryset:
            if services.campaign_activate(campaign_id=campaign.pk, now=now):
                activated += 1
            else:
                self.message_user(
                    request,
                    f"“{campaign.name}” has no tier: add one before activating it.",
                    messages.ERROR,
                )
        if activated:
            self.message_user(request, f"Activated {activated} campaign(s).", messages.SUCCESS)

    @admin.action(description="Pause the selected campaigns")
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        paused = services.campaigns_pause(campaign_ids=[c.pk for c in queryset])
        self.message_user(request, f"Paused {paused} campaign(s).", messages.SUCCESS)

    @admin.action(description="Duplicate the selected campaigns (copies are paused)")
    def duplicate(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            copy = services.campaign_duplicate(campaign=campaign)
            self.message_user(request, f"Created “{copy.name}” (paused).", messages.SUCCESS)

    def email_preview_view(self, request: HttpRequest, object_id: str, tier_id: int) -> Any:
        campaign = self.get_object(request, object_id)
        if campaign is None or not self.has_view_permission(request, campaign):
            raise Http404("No such campaign.")
        tier = get_object_or_404(
            Tier, pk=tier_id, campaign=campaign, channel__in=sorted(EMAIL_CHANNELS)
        )
        from campaigns.emails import (  # imported when used
            TemplateOverBudget,
            email_preview,
            template_errors,
        )

        # A tier saved before its templates were checked (or edited outside the admin) is shown
        # with its errors rather than failing the page.
        problems = template_errors(
            subject_template=tier.subject_template, body_template=tier.body_template
        )
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Email preview: tier {tier.position} of {campaign.name}",
            "campaign": campaign,
            "tier": tier,
            "problems": problems,
            "preview": None,
        }
        if not problems:
            settings = CampaignSettings.objects.filter(store=campaign.store).first()
            try:
                context["preview"] = email_preview(
                    tier=tier,
                    settings=settings or CampaignSettings(store=campaign.store),
                    store=campaign.store,
                )
            except TemplateOverBudget as exc:
                # The check's sample store is not this one: its name, say, can be much longer.
                field = f"{exc.field}_template"
                context["problems"] = {field: [f"This template is refused: {exc.reason}."]}
        return TemplateResponse(request, "admin/campaigns/campaign/email_preview.html", context)


@admin.register(CampaignSettings)
class CampaignSettingsAdmin(StoreScopedAdmin):
    form = CampaignSettingsForm
    list_display = ["store", "email_from", "timezone", "email_legal_basis", "track_opens",
                    "track_clicks"]  # fmt: skip
    fieldsets = [
        (None, {"fields": ["store"]}),
        ("Sender", {"fields": ["email_from", "reply_to"]}),
        (
            "Links and tracking",
            {"fields": ["cart_url", ("track_opens", "track_clicks")]},
        ),
        ("Consent", {"fields": ["email_legal_basis"]}),
        (
            "Time zone and margin",
            {
                "fields": ["timezone", "gross_margin_percent"],
                "description": "The time zone is used for quiet hours when the shopper's is "
                "unknown; the gross margin bounds the tiers' margin floor.",
            },
        ),
        (
            "On-site discount budget",
            {
                "fields": ["onsite_codes_per_hour", "onsite_discount_per_day"],
                "description": "New codes for exit-intent offers, in any 60 minutes and by value "
                "in any 24 hours. Past either, offers show a plain reminder without a code "
                "(recorded as budget_codes or budget_value in the offer decision).",
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("store")


@admin.register(Enrollment)
class EnrollmentAdmin(ReadOnlyStoreScopedAdmin):
    list_display = ["cart", "campaign", "store", "holdout", "score", "cart_value", "currency",
                    "abandoned_at"]  # fmt: skip
    list_filter = [
        "holdout",
        ("campaign", admin.RelatedOnlyFieldListFilter),
        ("store", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["campaign", "store"]
    search_fields = ["cart", "shopper"]
    ordering = ["-abandoned_at"]
    show_full_result_count = False


@admin.register(Step)
class StepAdmin(ReadOnlyStoreScopedAdmin):
    list_display = ["cart", "tier", "channel", "status", "reason", "due_at", "finished_at",
                    "attempts"]  # fmt: skip
    list_filter = ["status", "channel", ("store", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["tier__campaign"]
    search_fields = ["cart", "shopper"]
    ordering = ["-due_at"]
    show_full_result_count = False


@admin.register(Coupon)
class CouponAdmin(ReadOnlyStoreScopedAdmin):
    list_display = ["code", "channel", "kind", "amount", "cap", "currency", "redeemed", "cart",
                    "issued_at", "expires_at"]  # fmt: skip
    list_filter = ["channel", "kind", ("store", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["=code", "cart"]
    ordering = ["-issued_at"]
    show_full_result_count = False
    fields = ["code", "store", "cart", "shopper", "channel", "kind", "amount", "cap", "currency",
              "min_cart_value", "value", "reasons_list", "issued_at", "expires_at", "redeemed_at",
              "order_id", "discount_applied", "step"]  # fmt: skip
    readonly_fields = ["reasons_list"]

    @admin.display(description="Redeemed", boolean=True, ordering="redeemed_at")
    def redeemed(self, coupon: Coupon) -> bool:
        return coupon.redeemed_at is not None

    @admin.display(description="Reasons (how the amount was chosen)")
    def reasons_list(self, coupon: Coupon) -> str:
        if not coupon.reasons:
            return "-"
        return format_html(
            "<ol>{}</ol>",
            format_html_join(
                "", "<li><code>{}</code></li>", ((json.dumps(r),) for r in coupon.reasons)
            ),
        )


@admin.register(Suppression)
class SuppressionAdmin(ReadOnlyStoreScopedAdmin):
    list_display = ["shopper", "kind", "store", "cart", "created_at"]
    list_filter = ["kind", ("store", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["shopper", "cart"]
    ordering = ["-created_at"]
