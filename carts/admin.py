"""Operators' admin: stores (keys shown once, at creation), their members, and a read-only browser
of the log.

These pages span every store, so they are for superusers only, whatever Django model permissions
a staff user holds (a merchant's view permission on cart events would show every store's carts
and emails); merchants manage their campaigns in the store-scoped campaigns admin
(campaigns/admin.py, docs/campaigns-admin.md).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils import timezone

from carts import origins as origins_module
from carts import services
from carts.models import CartEvent, CartState, DeadLetter, Store, StoreKey, StoreMember


class StoreKeyInline(admin.TabularInline):
    model = StoreKey
    extra = 0
    can_delete = False
    fields = ("kind", "prefix", "created_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class StoreMemberInline(admin.TabularInline):
    """Who works for the store. A staff user with role merchant manages the store's campaigns in
    the admin (docs/campaigns-admin.md)."""

    model = StoreMember
    extra = 0
    fields = ("user", "role")


class OriginsField(forms.Field):
    """A list of origins, edited one per line; each checked and normalised."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 60})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return value
        lines = [line.strip() for line in str(value or "").splitlines() if line.strip()]
        origins: list[str] = []
        errors: list[str] = []
        for line in lines:
            try:
                origin = origins_module.origin_normalise(line)
            except ValueError as exc:
                errors.append(str(exc))
                continue
            if origin not in origins:
                origins.append(origin)
        if errors:
            raise forms.ValidationError(errors)
        return origins


# The longest retention the admin takes (100 years): the sweep's cutoff stays far from the ends
# of the calendar (a larger value would overflow its date arithmetic).
MAX_RETENTION_DAYS = 36_500


class StoreForm(forms.ModelForm):
    allowed_origins = OriginsField(
        required=False,
        help_text="One per line, e.g. https://shop.example or http://127.0.0.1:8000. The browser "
        "snippet works only on these.",
    )
    pii_retention_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_RETENTION_DAYS,
        label="PII retention (days)",
        help_text="Erase shoppers idle for longer than this many days (their email and phone, in "
        "the log and everywhere else; docs/security.md). Empty: kept until erased on request.",
    )

    class Meta:
        model = Store
        fields = [
            "name",
            "domain",
            "allowed_origins",
            "rate_limit_per_minute",
            "pii_retention_days",
        ]


def _superuser(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_superuser)


class SuperuserOnlyAdmin(admin.ModelAdmin):
    """Every store's rows: superusers only, whatever model permissions a staff user holds."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _superuser(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _superuser(request) and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _superuser(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _superuser(request) and super().has_delete_permission(request, obj)


@admin.register(Store)
class StoreAdmin(SuperuserOnlyAdmin):
    form = StoreForm
    list_display = ["id", "name", "domain", "pii_retention_days", "created_at"]
    search_fields = ["name", "domain"]
    fields = [
        "name",
        "domain",
        "locale",
        "allowed_origins",
        "rate_limit_per_minute",
        "pii_retention_days",
    ]
    inlines = [StoreKeyInline, StoreMemberInline]
    actions = ["rotate_keys"]

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        # Members are added once the store exists: the add page stays the keys-once form.
        return [StoreKeyInline] if obj is None else [StoreKeyInline, StoreMemberInline]

    def save_model(self, request: HttpRequest, obj: Store, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        creds = services.store_create(name=obj.name, domain=obj.domain)
        Store.objects.filter(pk=creds.store_id).update(
            rate_limit_per_minute=obj.rate_limit_per_minute,
            allowed_origins=obj.allowed_origins,
            pii_retention_days=obj.pii_retention_days,
            locale=obj.locale,
        )
        obj.pk = creds.store_id
        obj.refresh_from_db()
        self._show_keys_once(request, creds)

    def _show_keys_once(self, request: HttpRequest, creds: services.StoreCredentials) -> None:
        messages.warning(
            request,
            "Copy these keys now; they are never shown again. "
            f"Secret key: {creds.secret_key} · Publishable key: {creds.publishable_key} · "
            f"Webhook secret: {creds.webhook_secret}",
        )

    @admin.action(description="Rotate keys (old keys stop working at once)")
    def rotate_keys(self, request: HttpRequest, queryset: Any) -> None:
        for store in queryset:
            creds = services.store_keys_rotate(store=store, now=timezone.now())
            self._show_keys_once(request, creds)


@admin.register(StoreMember)
class StoreMemberAdmin(SuperuserOnlyAdmin):
    list_display = ["user", "store", "role"]
    list_filter = ["role", "store"]
    list_select_related = ["user", "store"]
    search_fields = ["user__username", "user__email", "store__name"]


class ReadOnlyAdmin(SuperuserOnlyAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CartEvent)
class CartEventAdmin(ReadOnlyAdmin):
    list_display = ["position", "store", "cart", "version", "type", "source", "source_ref",
                    "occurred_at", "recorded_at"]  # fmt: skip
    list_filter = ["type", "source", "store"]
    search_fields = ["cart", "=event_id"]
    ordering = ["-position"]
    show_full_result_count = False


@admin.register(CartState)
class CartStateAdmin(ReadOnlyAdmin):
    list_display = ["token", "store", "status", "value", "currency", "item_count", "version",
                    "contact_source", "last_activity_at"]  # fmt: skip
    list_filter = ["status", "store"]
    search_fields = ["token", "email"]
    ordering = ["-last_activity_at"]


class DeadLetterOpenFilter(admin.SimpleListFilter):
    title = "open"
    parameter_name = "open"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "open"), ("no", "resolved")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() == "yes":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    """Events a reader of the log could not apply (docs/operations.md, "Dead letters"). Read
    only: fix the code, then ``rebuild_projections <projector>`` resolves those that now apply."""

    list_display = ["projector", "position", "store_id", "cart", "event_type", "error",
                    "created_at", "resolved_at"]  # fmt: skip
    list_filter = ["projector", DeadLetterOpenFilter]
    search_fields = ["cart", "position__exact", "error"]  # exact: compared as text, never a 500
    ordering = ["projector", "position"]
