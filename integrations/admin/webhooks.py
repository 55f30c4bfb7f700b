"""The merchant's outbound webhook endpoints in the admin: made and changed with their URL
checked as the API checks it, the signing secret shown on the endpoint's page (to members of its
store only: the admin is store-scoped), rotated by an action; deliveries read-only with their
attempts, failed ones sent again by an action."""

from __future__ import annotations

import secrets
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from campaigns.admin import ReadOnlyStoreScopedAdmin, StoreScopedAdmin, merchant_store_ids
from integrations import outbound
from integrations.admin.forms import URL_OVERRIDES, https_urls
from integrations.models import Endpoint, OutboundAttempt, OutboundDelivery


class EndpointForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in Endpoint.EVENT_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event type.",
    )

    class Meta:
        formfield_callback = https_urls
        model = Endpoint
        fields = ["store", "url", "event_types", "description", "active"]

    def clean_url(self) -> str:
        url = str(self.cleaned_data["url"])
        problem = outbound.url_problem(url)
        if problem is not None:
            raise forms.ValidationError(problem)
        return url

    def clean_event_types(self) -> list[str]:
        chosen = set(self.cleaned_data.get("event_types") or [])
        return [t for t in Endpoint.EVENT_TYPES if t in chosen]


@admin.register(Endpoint)
class EndpointAdmin(StoreScopedAdmin):
    formfield_overrides = URL_OVERRIDES  # the admin makes its form's fields anew
    form = EndpointForm
    list_display = ["url", "store", "event_types", "active", "created_at"]
    list_filter = ["active"]
    readonly_fields = ["signing_secret", "created_at"]
    actions = ["rotate_secret"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = ["store", "url", "event_types", "description", "active"]
        return fields + (["signing_secret", "created_at"] if obj is not None else [])

    @admin.display(description="Signing secret")
    def signing_secret(self, obj: Endpoint) -> str:
        """Verify webhook-signature with it (Standard Webhooks); derived, never stored."""
        return outbound.endpoint_secret(obj) if obj.pk else ""

    def save_model(self, request: HttpRequest, obj: Endpoint, form: Any, change: bool) -> None:
        if not obj.secret_nonce:
            obj.secret_nonce = secrets.token_hex(16)
        super().save_model(request, obj, form, change)

    @admin.action(description="Rotate the signing secret of the selected endpoints")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            outbound.endpoint_update(endpoint=endpoint, rotate_secret=True)
        self.message_user(
            request,
            f"New secrets for {queryset.count()} endpoint(s): open each to copy it; the old "
            "secret no longer verifies.",
            messages.SUCCESS,
        )


class AttemptInline(admin.TabularInline):
    model = OutboundAttempt
    fields = ["at", "status_code", "error", "duration_ms"]
    readonly_fields = ["at", "status_code", "error", "duration_ms"]
    extra = 0
    can_delete = False
    ordering = ["at"]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # its delivery's page is store-scoped (OutboundDeliveryAdmin)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(OutboundDelivery)
class OutboundDeliveryAdmin(ReadOnlyStoreScopedAdmin):
    list_display = [
        "webhook_id",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "event_type"]
    list_select_related = ["endpoint"]
    readonly_fields = [
        "endpoint",
        "store",
        "webhook_id",
        "event_type",
        "position",
        "payload",
        "status",
        "attempts",
        "next_attempt_at",
        "leased_until",
        "created_at",
        "finished_at",
    ]
    inlines = [AttemptInline]
    actions = ["retry_now"]

    @admin.action(description="Retry the selected failed deliveries now")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboundDelivery]) -> None:
        retried = outbound.deliveries_retry(
            store_ids=merchant_store_ids(request),
            ids=queryset.values_list("pk", flat=True),
            now=timezone.now(),
        )
        self.message_user(
            request,
            f"{retried} failed deliver{'y' if retried == 1 else 'ies'} will be sent again "
            "within seconds (others were not failed).",
            messages.SUCCESS,
        )
