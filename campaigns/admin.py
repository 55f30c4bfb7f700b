"""Merchant admin: campaigns with their tiers inline, the store's campaign settings, an email
preview, and read-only views of what running campaigns leaves behind.

Permissions follow store membership, not Django's model permissions: a staff user who is a
``StoreMember`` with role merchant sees and changes the campaign data of those stores and no
other; a superuser sees every store. Docs: docs/campaigns-admin.md.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.mail import EmailMultiAlternatives
from django.db import models
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from campaigns import services
from campaigns.forms import (
    EMAIL_CHANNELS,
    CampaignForm,
    CampaignSettingsForm,
    TierForm,
    TierFormSet,
    store_currency,
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
from carts import money
from carts.models import Store, StoreMember
from carts.selectors import member_store_ids

log = logging.getLogger(__name__)

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


# The campaign at a glance: its sequence, competing campaigns, its dashboard ----------------------

# Which active campaign of a store acts on a cart (campaigns/enrolment.py and
# campaigns/selectors.onsite_offer_for_store): shown as the priority's help text.
DECISION_RULE = (
    "When several active campaigns of a store could take the same cart, the one with the "
    "highest priority acts; at equal priority, the older one (the lower number, #id). A cart "
    "joins one campaign only, the first whose definition it meets, so a campaign with a shorter "
    "inactivity can take carts before a higher-priority one's inactivity has passed. The on-site "
    "nudge always comes from the highest-priority active campaign with an on-site tier."
)


def duration_text(minutes: int) -> str:
    """``0`` -> ``"0 min"``, ``60`` -> ``"1 h"``, ``1440`` -> ``"1 d"``, ``90`` ->
    ``"1 h 30 min"``."""
    if minutes and minutes % 1440 == 0:
        return f"{minutes // 1440} d"
    if minutes and minutes % 60 == 0:
        return f"{minutes // 60} h"
    if minutes > 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min"


def _money(amount: int | None, currency: str, locale: str) -> str:
    """The one money format (carts.money.display) in the store's locale."""
    return money.display(int(amount or 0), currency, locale)


def _offer_text(tier: Tier, currency: str, locale: str) -> str:
    kind = tier.offer_kind
    cap = f" (cap {_money(tier.discount_cap, currency, locale)})" if tier.discount_cap else ""
    if tier.channel == Tier.Channel.DISCOUNT:
        low, high = tier.discount_min, tier.discount_max
        if kind == Tier.OfferKind.PERCENT_DISCOUNT:
            text = f"{low}-{high}%" if low != high else f"{high}%"
            return text + cap
        if kind == Tier.OfferKind.FIXED_DISCOUNT:
            return f"{_money(low, currency, locale)}-{_money(high, currency, locale)} off"
        return "free shipping" if kind == Tier.OfferKind.FREE_SHIPPING else ""
    if kind == Tier.OfferKind.PERCENT_DISCOUNT:
        return f"{tier.percent}% off{cap}"
    if kind == Tier.OfferKind.FIXED_DISCOUNT:
        return "fixed amount off"
    return "free shipping" if kind == Tier.OfferKind.FREE_SHIPPING else "message only"


_CHANNEL_WORDS: dict[str, str] = {
    Tier.Channel.ONSITE: "on-site nudge",
    Tier.Channel.EMAIL: "email",
    Tier.Channel.DISCOUNT: "discount",
}


def tier_headline(tier: Tier, currency: str = "", locale: str = "") -> str:
    """``"on-site nudge at 0 min"``, ``"email after 1 h"``, ``"discount 5-15% after 1 d"``; money
    in ``currency`` as the store's ``locale`` writes it."""
    words = _CHANNEL_WORDS.get(tier.channel, tier.channel)
    if tier.channel == Tier.Channel.DISCOUNT and (offer := _offer_text(tier, currency, locale)):
        words = f"{words} {offer}"
    when = "at 0 min" if not tier.delay_minutes else f"after {duration_text(tier.delay_minutes)}"
    return f"{words} {when}"


def tier_details(tier: Tier, currency: str = "", locale: str = "") -> list[str]:
    """The tier's key settings, in the merchant's words (money as in tier_headline)."""
    details = [f"carts scoring at least {tier.min_score * 100:g}%"]
    if tier.min_cart_value:
        details.append(f"worth at least {_money(tier.min_cart_value, currency, locale)}")
    if tier.channel == Tier.Channel.ONSITE:
        details.append(_offer_text(tier, currency, locale))
        details.append(f"“{tier.headline}”")
        details.append(
            "no cooldown" if not tier.cooldown_hours else f"once per {tier.cooldown_hours} h"
        )
        details.append(f"offer valid {duration_text(tier.offer_ttl_minutes)}")
    else:
        details.append(f"subject “{tier.subject_template}”")
    if tier.channel == Tier.Channel.DISCOUNT:
        details.append(f"code valid {tier.code_expiry_hours} h")
    return details


def sequence_text(tiers: list[Tier], currency: str = "", locale: str = "") -> str:
    return " → ".join(tier_headline(t, currency, locale) for t in tiers)


def _acts_first(a: Campaign, b: Campaign) -> bool:
    return (-a.priority, a.pk) < (-b.priority, b.pk)


def competing_campaigns(campaign: Campaign) -> list[Campaign]:
    """The other active campaigns of the campaign's store, in the order they act. Their audiences
    always overlap: SKU and category lists never keep them apart (one cart can hold both), and
    score and value thresholds only narrow from the same carts."""
    if not campaign.active or campaign.pk is None:
        return []
    return list(
        Campaign.objects.filter(store_id=campaign.store_id, active=True)
        .exclude(pk=campaign.pk)
        .prefetch_related("tiers")
        .order_by("-priority", "id")
    )


def _why(winner: Campaign, loser: Campaign) -> str:
    if winner.priority != loser.priority:
        return f"its priority is higher ({winner.priority} > {loser.priority})"
    return (
        f"at equal priority ({winner.priority}) it is the older campaign "
        f"(#{winner.pk} before #{loser.pk})"
    )


def competition_warnings(campaign: Campaign, others: list[Campaign] | None = None) -> list[str]:
    """One sentence per competing active campaign: which one acts, and why."""
    others = competing_campaigns(campaign) if others is None else others
    sentences = []
    for other in others:
        winner, loser = (campaign, other) if _acts_first(campaign, other) else (other, campaign)
        text = (
            f"“{campaign.name}” and “{other.name}” (#{other.pk}) are both active on "
            f"{campaign.store.name} and would take the same carts: “{winner.name}” acts, because "
            f"{_why(winner, loser)}."
        )
        if loser.inactivity_minutes < winner.inactivity_minutes:
            text += (
                f" “{loser.name}” still takes the carts it reaches first: its inactivity "
                f"({duration_text(loser.inactivity_minutes)}) is shorter than "
                f"“{winner.name}”'s ({duration_text(winner.inactivity_minutes)})."
            )
        onsite = [c for c in (winner, loser) if any(t.channel == "onsite" for t in c.tiers.all())]
        if len(onsite) == 2:
            text += f" Only “{winner.name}”'s on-site nudge is shown."
        sentences.append(text)
    return sentences


def dashboard_url(campaign: Campaign, page: str = "overview") -> str:
    return reverse(f"dashboards:{page}", args=[campaign.store_id]) + f"?campaign={campaign.pk}"


# Trying a tier's email as typed: preview and test send --------------------------------------------

TOOLS_FIELD = "email_tools"
_TOOLS_KEY = re.compile(r"^(tiers-\d{1,4})-" + TOOLS_FIELD + "$")


class EmailToolsWidget(forms.Widget):
    """Two submit buttons that post the whole change form, unsaved, to the preview and the
    test-send views in a new tab; their name carries the tier's prefix (which the admin's inline
    script renumbers in a tier added on the page). No script needed."""

    def render(self, name: str, value: Any, attrs: Any = None, renderer: Any = None) -> SafeString:
        return format_html(
            '<div class="tier-email-tools">'
            '<button type="submit" class="button" name="{name}" value="preview" '
            'formaction="{preview}" formtarget="_blank" formnovalidate>Preview as typed</button> '
            '<button type="submit" class="button" name="{name}" value="test" '
            'formaction="{test}" formtarget="_blank" formnovalidate>Send a test email to me'
            "</button>"
            '<p class="help">Both use what is typed in this tier now, without saving, and open in '
            "a new tab. The test goes to your own address, with “[Test]” before the subject, and "
            "records nothing in the campaign.</p></div>",
            name=name,
            preview=reverse("admin:campaigns_campaign_tier_preview"),
            test=reverse("admin:campaigns_campaign_tier_test_send"),
        )

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        return None  # the buttons are not a value of the tier


class AdminTierForm(TierForm):
    email_tools = forms.Field(required=False, widget=EmailToolsWidget, label="Try this email")


@dataclass(slots=True)
class DraftTier:
    """A tier as typed on the change form, for its email: the tier (valid fields as typed, the
    others at their defaults), its store, and what is wrong."""

    tier: Tier | None
    store: Store | None
    problems: dict[str, list[str]]  # the templates' errors: no email until they are fixed
    notes: list[str]  # other fields' errors: the email still renders, the form will not save


def _draft_tier(request: HttpRequest) -> DraftTier:
    keys = [m.group(1) for key in request.POST if (m := _TOOLS_KEY.match(key))]
    if len(keys) != 1:
        return DraftTier(None, None, {"tier": ["Say which tier to try (its button)."]}, [])
    prefix = keys[0]
    store_id = request.POST.get("store", "")
    store = None
    if store_id.isdigit() and _allowed(request, int(store_id)):
        store = Store.objects.filter(pk=int(store_id)).first()
    if store is None:
        return DraftTier(None, None, {"store": ["Choose a store of yours for the campaign."]}, [])
    form = TierForm(data=request.POST, prefix=prefix, currency=store_currency(store.pk))
    form.is_valid()
    channel = form.cleaned_data.get("channel")
    if channel not in EMAIL_CHANNELS:
        problem = "This tier sends no email: only email and discount tiers can be tried."
        return DraftTier(None, store, {"channel": [problem]}, [])
    problems = {
        name: [str(m) for m in form.errors[name]]
        for name in ("subject_template", "body_template")
        if name in form.errors
    }
    notes = [
        f"{form.fields[name].label if name in form.fields else name}: {message}"
        for name, messages_ in form.errors.items()
        if name not in problems
        for message in messages_
    ]
    tier = Tier()
    for name, value in form.cleaned_data.items():
        if name in form._meta.fields:  # type: ignore[operator]
            setattr(tier, name, value)
    return DraftTier(tier, store, problems, notes)


class TierInline(admin.StackedInline):
    """Each tier's field groups carry the channels they belong to (``tier-for-<channel>``
    classes); campaigns/tier_channels.js shows only the current channel's groups and, without
    script, every group shows, each titled with its channels."""

    model = Tier
    form = AdminTierForm
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
                ],
                "description": "Tiers run in order of position; each one's delay after the cart "
                "is abandoned (e.g. 30m, 2h, 1d) must be longer than the previous tier's.",
            },
        ),
        (
            "Offer (on-site and discount tiers)",
            {
                "fields": ["offer_kind", "discount_cap"],
                "classes": ["tier-for", "tier-for-onsite", "tier-for-discount"],
                "description": "On-site: what the nudge offers. Discount: percentage, fixed "
                "amount off or free shipping. The cap bounds a percentage (most it takes off) "
                "and a fixed amount (largest allowed), in the store's currency (e.g. 20.00). Email "
                "tiers ignore these.",
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
                "classes": ["tier-for", "tier-for-onsite"],
                "description": "Shown over the websocket while the shopper is still on the "
                "site. The percentage applies to an on-site percentage offer.",
            },
        ),
        (
            "Email (email and discount tiers)",
            {
                "fields": [
                    "subject_template",
                    "body_template",
                    TOOLS_FIELD,
                    "email_preview_link",
                ],
                "classes": ["tier-for", "tier-for-email", "tier-for-discount"],
                "description": "Django template syntax, with the tags if, for (over items, at "
                "most two deep), with, firstof, filter, spaceless, comment, verbatim and "
                "templatetag, and the common text filters (not safe); a long or slow render is "
                "refused. "
                "Available: {{ shopper_name }}, {{ store_name }}, {{ items }} (each with name, "
                "sku, category, quantity, unit_price, line_total), {{ cart_value }}, "
                "{{ currency }}, {{ restore_url }}, and on discount tiers {{ code }}, "
                "{{ discount }}, {{ code_expires }} (an email tier has no code: there they are "
                "refused, except inside {% if code %}...{% endif %}); any other name is refused "
                "with the closest known one. Both must render with a sample cart to be saved; the "
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
                "classes": ["tier-for", "tier-for-discount"],
                "description": "Each cart gets one unique code; its amount is chosen between the "
                "minimum and the maximum from the cart's abandonment score and price sensitivity. "
                "Whole percents for a percentage (at most 90), an amount in the store's currency "
                "(e.g. 5.00) for a fixed amount.",
            },
        ),
    ]

    class Media:
        js = ["campaigns/tier_channels.js"]
        css = {"all": ["campaigns/campaign_admin.css"]}

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
            return "Not saved yet: “Preview as typed” shows it."
        url = reverse("admin:campaigns_campaign_preview", args=[tier.campaign_id, tier.pk])
        return format_html(
            '<a href="{}" target="_blank">Preview the saved email with a sample cart</a>', url
        )


@admin.register(Campaign)
class CampaignAdmin(StoreScopedAdmin):
    form = CampaignForm
    inlines = [TierInline]
    list_display = ["name", "store", "active", "priority", "sequence", "competition", "holdout",
                    "tier_count", "dashboard_link", "activated_at", "created_at"]  # fmt: skip
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
                "description": "A share of shoppers (0 to 50%) gets nothing, so that recovered "
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
        (
            "Priority and status",
            {
                "fields": ["priority", "active", "activated_at", "created_at"],
                "description": DECISION_RULE,
            },
        ),
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
        # Before the admin's own patterns: "<path:object_id>/" would take these names.
        draft_preview = path(
            "tier-preview/",
            self.admin_site.admin_view(self.tier_preview_view),
            name="campaigns_campaign_tier_preview",
        )
        test_send = path(
            "tier-test-send/",
            self.admin_site.admin_view(self.tier_test_send_view),
            name="campaigns_campaign_tier_test_send",
        )
        return [draft_preview, test_send, preview, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        campaign = self.get_object(request, object_id)
        if campaign is not None and self.has_view_permission(request, campaign):
            currency, locale = store_currency(campaign.store_id), campaign.store.locale
            tiers = sorted(campaign.tiers.all(), key=lambda t: t.position)
            extra_context = {
                **(extra_context or {}),
                "campaign_overview": {
                    "tiers": [
                        {
                            "position": t.position,
                            "headline": tier_headline(t, currency, locale),
                            "details": tier_details(t, currency, locale),
                        }
                        for t in tiers
                    ],
                    "warnings": competition_warnings(campaign),
                    "dashboard_url": dashboard_url(campaign),
                    "funnel_url": dashboard_url(campaign, "funnel"),
                },
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        for warning in competition_warnings(form.instance):
            self.message_user(request, warning, messages.WARNING)

    @admin.display(description="Tiers", ordering="tier_count")
    def tier_count(self, campaign: Campaign) -> int:
        return getattr(campaign, "tier_count", 0)

    @admin.display(description="Sequence")
    def sequence(self, campaign: Campaign) -> str:
        return sequence_text(
            list(campaign.tiers.all()), store_currency(campaign.store_id), campaign.store.locale
        )

    @admin.display(description="Competing campaigns")
    def competition(self, campaign: Campaign) -> str:
        others = competing_campaigns(campaign)
        if not others:
            return "-"
        lines = [
            f"“{other.name}” acts first: {_why(other, campaign)}"
            if _acts_first(other, campaign)
            else f"acts before “{other.name}”: {_why(campaign, other)}"
            for other in others
        ]
        return format_html(
            '<span class="campaign-competition" title="{}">⚠ {}</span>',
            " ".join(competition_warnings(campaign, others)),
            "; ".join(lines),
        )

    @admin.display(description="Dashboard")
    def dashboard_link(self, campaign: Campaign) -> str:
        return format_html('<a href="{}">Dashboard</a>', dashboard_url(campaign))

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
        activated: list[Campaign] = []
        for campaign in queryset:
            if services.campaign_activate(campaign_id=campaign.pk, now=now):
                activated.append(campaign)
            else:
                self.message_user(
                    request,
                    f"“{campaign.name}” has no tier: add one before activating it.",
                    messages.ERROR,
                )
        if activated:
            self.message_user(request, f"Activated {len(activated)} campaign(s).", messages.SUCCESS)
        # As saving the change form does: which of the now active campaigns acts, and why. Two
        # activated together are one competition, told once.
        told: set[int] = set()
        for campaign in activated:
            campaign.refresh_from_db()
            others = [c for c in competing_campaigns(campaign) if c.pk not in told]
            for warning in competition_warnings(campaign, others):
                self.message_user(request, warning, messages.WARNING)
            told.add(campaign.pk)

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
            subject_template=tier.subject_template,
            body_template=tier.body_template,
            channel=tier.channel,
        )
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Email preview: tier {tier.position} of {campaign.name}",
            "campaign": campaign,
            "tier": tier,
            "delay": duration_text(tier.delay_minutes),  # as the sequence box says it
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

    def _draft_response(
        self, request: HttpRequest, draft: DraftTier, *, status: int, **extra: Any
    ) -> HttpResponse:
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Email preview: a tier as typed",
            "draft": True,
            "campaign": None,
            "tier": draft.tier,
            "problems": draft.problems,
            "notes": draft.notes,
            "preview": None,
            **extra,
        }
        return TemplateResponse(
            request, "admin/campaigns/campaign/email_preview.html", context, status=status
        )

    def _draft_preview(self, request: HttpRequest) -> tuple[DraftTier, Any]:
        """The tier as typed and its email (None while something is wrong), rendered as the
        saved tier's preview renders it."""
        from campaigns.emails import TemplateOverBudget, email_preview  # imported when used

        draft = _draft_tier(request)
        if draft.tier is None or draft.store is None or draft.problems:
            return draft, None
        store = draft.store
        settings = CampaignSettings.objects.filter(store=store).first()
        try:
            preview = email_preview(
                tier=draft.tier, settings=settings or CampaignSettings(store=store), store=store
            )
        except TemplateOverBudget as exc:
            draft.problems = {f"{exc.field}_template": [f"This template is refused: {exc.reason}."]}
            return draft, None
        except Exception as exc:  # the merchant's template, whatever it does: a message, not a 500
            log.info("a draft tier's email did not render", exc_info=True)
            draft.problems = {"template": [f"This email does not render: {exc}"]}
            return draft, None
        return draft, preview

    def tier_preview_view(self, request: HttpRequest) -> HttpResponse:
        """POST of the change form (its "Preview as typed" button): the email of the tier as
        typed, for a sample cart, saving nothing."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request):
            raise Http404("No such page.")
        draft, preview = self._draft_preview(request)
        return self._draft_response(
            request, draft, status=200 if preview is not None else 400, preview=preview
        )

    def tier_test_send_view(self, request: HttpRequest) -> HttpResponse:
        """POST of the change form (its "Send a test email to me" button): the tier's email as
        typed, for a sample cart, to the staff user's own address through the configured email
        backend, its subject marked "[Test]". Nothing is saved and no campaign event recorded."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request):
            raise Http404("No such page.")
        address = (getattr(request.user, "email", "") or "").strip()
        if not address:
            draft = DraftTier(None, None, {}, [])
            draft.problems = {
                "email": [
                    f"Your user account ({request.user.get_username()}) has no email address, "
                    "so there is nowhere to send a test: ask an administrator to add one, then "
                    "try again."
                ]
            }
            return self._draft_response(request, draft, status=400, title="No test email sent")
        draft, preview = self._draft_preview(request)
        if preview is None or draft.store is None:
            return self._draft_response(request, draft, status=400, title="No test email sent")
        settings = CampaignSettings.objects.filter(store=draft.store).first()
        settings = settings or CampaignSettings(store=draft.store)
        message = EmailMultiAlternatives(
            subject=f"[Test] {preview.subject}",
            body=preview.text,
            from_email=settings.email_from,
            to=[address],
            reply_to=[settings.reply_to] if settings.reply_to else None,
            headers={"X-Campaign-Test": "1"},
        )
        message.attach_alternative(preview.html, "text/html")
        try:
            message.send(fail_silently=False)
        except Exception as exc:  # the backend's answer, shown: the merchant can act on it
            log.warning("a test email to a staff user failed", exc_info=True)
            draft.problems = {"email": [f"The email backend did not take the test email: {exc}"]}
            return self._draft_response(
                request, draft, status=502, title="No test email sent", preview=preview
            )
        return self._draft_response(
            request,
            draft,
            status=200,
            title="Test email sent",
            preview=preview,
            sent_to=address,
        )


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
            "Money format",
            {
                "fields": ["store_locale"],
                "description": "How the store's money is written in its emails, this admin and "
                "the dashboards. It is the store's setting (Store.locale): every campaign uses it.",
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

    def save_model(
        self, request: HttpRequest, obj: CampaignSettings, form: Any, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        # The store's locale, validated by the form with the model's validators; written only
        # when changed here (an untouched field never overwrites what the store has).
        if "store_locale" in form.changed_data:
            Store.objects.filter(pk=obj.store_id).update(locale=form.cleaned_data["store_locale"])


def _score_text(score: float | None) -> str:
    """An abandonment score (0-1) as a percentage: ``0.734`` -> ``"73%"``."""
    return "-" if score is None else f"{score * 100:.0f}%"


@admin.register(Enrollment)
class EnrollmentAdmin(ReadOnlyStoreScopedAdmin):
    list_display = ["cart", "campaign", "store", "holdout", "score_shown", "cart_value_shown",
                    "abandoned_at"]  # fmt: skip
    fields = ["store", "cart", "campaign", "shopper", "holdout", "score_shown",
              "cart_value_shown", "abandoned_at"]  # fmt: skip
    readonly_fields = ["score_shown", "cart_value_shown"]
    list_filter = [
        "holdout",
        ("campaign", admin.RelatedOnlyFieldListFilter),
        ("store", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["campaign", "store"]
    search_fields = ["cart", "shopper"]
    ordering = ["-abandoned_at"]
    show_full_result_count = False

    @admin.display(description="Score", ordering="score")
    def score_shown(self, enrollment: Enrollment) -> str:
        return _score_text(enrollment.score)

    @admin.display(description="Cart value", ordering="cart_value")
    def cart_value_shown(self, enrollment: Enrollment) -> str:
        return _money(enrollment.cart_value, enrollment.currency, enrollment.store.locale)


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
    """Money in the coupon's currency as the store's locale writes it, percentages as "10%"."""

    list_display = ["code", "channel", "kind", "amount_shown", "cap_shown", "value_shown",
                    "redeemed", "discount_applied_shown", "cart", "issued_at",
                    "expires_at"]  # fmt: skip
    list_filter = ["channel", "kind", ("store", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["store"]
    search_fields = ["=code", "cart"]
    ordering = ["-issued_at"]
    show_full_result_count = False
    fields = ["code", "store", "cart", "shopper", "channel", "kind", "currency", "amount_shown",
              "cap_shown", "min_cart_value_shown", "value_shown", "reasons_list", "issued_at",
              "expires_at", "redeemed_at", "order_id", "discount_applied_shown",
              "step"]  # fmt: skip
    readonly_fields = ["amount_shown", "cap_shown", "min_cart_value_shown", "value_shown",
                       "discount_applied_shown", "reasons_list"]  # fmt: skip

    @staticmethod
    def _money_of(coupon: Coupon, amount: int | None) -> str:
        if amount is None:
            return "-"
        return _money(amount, coupon.currency, coupon.store.locale)

    @admin.display(description="Amount", ordering="amount")
    def amount_shown(self, coupon: Coupon) -> str:
        if coupon.kind == Coupon.Kind.PERCENT:
            return f"{coupon.amount}%"
        if coupon.kind == Coupon.Kind.FREE_SHIPPING:
            return "free shipping"
        return self._money_of(coupon, coupon.amount)

    @admin.display(description="Cap (most it takes off)", ordering="cap")
    def cap_shown(self, coupon: Coupon) -> str:
        return self._money_of(coupon, coupon.cap)

    @admin.display(description="Min cart value", ordering="min_cart_value")
    def min_cart_value_shown(self, coupon: Coupon) -> str:
        return self._money_of(coupon, coupon.min_cart_value)

    @admin.display(description="Value (off the cart it was made for)", ordering="value")
    def value_shown(self, coupon: Coupon) -> str:
        return self._money_of(coupon, coupon.value)

    @admin.display(description="Discount applied", ordering="discount_applied")
    def discount_applied_shown(self, coupon: Coupon) -> str:
        return self._money_of(coupon, coupon.discount_applied)

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
