"""The merchant's platform connections in the admin: where the platform is, what to register on
it (the webhook URL and topics), and its secrets, write-only: typed into password inputs, sealed
through ``connection_secrets_set``, never rendered back (blank keeps the current one). Inbound
deliveries and the codes made on platforms are read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import escape

from campaigns.admin import ReadOnlyStoreScopedAdmin, StoreScopedAdmin
from integrations import selectors, services
from integrations.admin.forms import URL_OVERRIDES, https_urls
from integrations.models import Connection, InboundDelivery, Platform, PlatformCode

# The topics each platform must send (docs/integrations.md).
TOPICS = {
    Platform.SHOPIFY: "checkouts/create, checkouts/update, checkouts/delete, carts/create, "
    "carts/update, orders/create, orders/paid, refunds/create",
    Platform.WOOCOMMERCE: "Order created, Order updated, Order deleted, Order restored (API "
    "version WP REST API Integration v3)",
    Platform.SALEOR: "CHECKOUT_CREATED, CHECKOUT_UPDATED, ORDER_CREATED, ORDER_FULLY_PAID, "
    "ORDER_REFUNDED",
}
# The credentials each platform's API takes, by form field.
CREDENTIALS = {
    Platform.SHOPIFY: ("access_token",),
    Platform.WOOCOMMERCE: ("consumer_key", "consumer_secret"),
    Platform.SALEOR: ("token", "channel_id"),
}


def _secret(label: str, help_text: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        strip=True,
        max_length=1000,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=help_text + " Blank keeps the current one; it is never shown again.",
    )


class ConnectionForm(forms.ModelForm):
    set_webhook_secret = _secret(
        "Webhook secret",
        "Shopify: the app's client secret; WooCommerce: the webhook's secret; Saleor: unused.",
    )
    access_token = _secret(
        "Shopify Admin API access token",
        "Scopes: read_orders (webhooks), write_discounts and read_discounts (codes).",
    )
    consumer_key = _secret("WooCommerce consumer key", "A REST API key with Read/Write.")
    consumer_secret = _secret("WooCommerce consumer secret", "")
    token = _secret(
        "Saleor app token",
        "Permissions: MANAGE_CHECKOUTS and MANAGE_ORDERS (webhooks), MANAGE_DISCOUNTS (codes).",
    )
    channel_id = forms.CharField(
        label="Saleor channel ID",
        required=False,
        strip=True,
        max_length=200,
        help_text=(
            "The global ID of the channel whose vouchers you sell in (its currency must be the "
            "store's). Stored with the credentials; blank keeps the current one."
        ),
    )

    class Meta:
        formfield_callback = https_urls
        model = Connection
        fields = (
            "store",
            "platform",
            "shop_domain",
            "api_url",
            "storefront_url",
            "jwks_url",
            "codes_on_platform",
            "active",
        )

    def clean_shop_domain(self) -> str:
        domain = str(self.cleaned_data.get("shop_domain") or "").strip().lower()
        from integrations.codes import _HOSTNAME

        if domain and not _HOSTNAME.fullmatch(domain):
            raise forms.ValidationError("A host name, e.g. my-shop.myshopify.com.")
        return domain

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("platform") == Platform.SHOPIFY and not data.get("shop_domain"):
            self.add_error("shop_domain", "Shopify needs the shop's myshopify.com domain.")
        if data.get("platform") in (Platform.WOOCOMMERCE, Platform.SALEOR) and not data.get(
            "api_url"
        ):
            self.add_error("api_url", "WooCommerce: the site's URL; Saleor: its GraphQL API URL.")
        platform = data.get("platform")
        if data.get("codes_on_platform") and platform:
            # Without credentials every code would be refused, and every discount email with it.
            given = [n for n in CREDENTIALS.get(Platform(platform), ()) if data.get(n)]
            stored = bool(self.instance.pk and self.instance.credentials)
            if not given and not stored:
                self.add_error(
                    "codes_on_platform",
                    "Codes are made on the platform with its API credentials: enter them below, "
                    "or untick this to redeem codes through our API.",
                )
        return data


@admin.register(Connection)
class ConnectionAdmin(StoreScopedAdmin):
    formfield_overrides = URL_OVERRIDES  # the admin makes its form's fields anew
    form = ConnectionForm
    list_display = ("store", "platform", "shop_domain", "codes_on_platform", "active", "last_seen")
    list_filter = ("platform", "active")
    readonly_fields = ("last_delivery_at", "created_at", "secrets_set")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # The secrets are sealed to the store and platform: changing either would lose them.
        fixed = ("store", "platform") if obj is not None and obj.pk else ()
        return (*fixed, *super().get_readonly_fields(request, obj))

    @admin.display(description="Last delivery")
    def last_seen(self, obj: Connection) -> str:
        return obj.last_delivery_at.isoformat() if obj.last_delivery_at else "never"

    @admin.display(description="Secrets stored")
    def secrets_set(self, obj: Connection) -> str:
        """Which secrets are stored (names only)."""
        names = []
        if obj.webhook_secret:
            names.append("webhook secret")
        if obj.pk and obj.credentials:
            try:
                names += sorted(selectors.connection_credentials(obj))
            except ValueError:
                names.append("credentials (unreadable: SECRET_KEY changed?)")
        return ", ".join(names) or "none"

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):  # type: ignore[no-untyped-def, override]
        form = super().get_form(request, obj, change=change, **kwargs)
        form.base_fields["set_webhook_secret"].help_text = escape(
            form.base_fields["set_webhook_secret"].help_text
        ) + self._register_help(request, obj)
        return form

    def _register_help(self, request: HttpRequest, obj: Connection | None) -> str:
        """Where the merchant registers our webhook on their platform, and which topics."""
        if obj is None or obj.pk is None:
            return "<br>Save the connection to see the webhook URL to register."
        if obj.platform == Platform.SHOPIFY:
            path = reverse("webhooks-shopify")
        else:
            path = reverse(f"webhooks-{obj.platform}", args=[obj.store_id])
        url = request.build_absolute_uri(path)
        topics = TOPICS.get(Platform(obj.platform), "")
        return (
            f"<br>Register this webhook URL on {escape(obj.get_platform_display())}: "
            f"<code>{escape(url)}</code><br>Topics: {escape(topics)}"
        )

    def save_model(self, request: HttpRequest, obj: Connection, form: Any, change: bool) -> None:
        data = form.cleaned_data
        given = {
            name: data[name] for name in CREDENTIALS.get(Platform(obj.platform), ()) if data[name]
        }
        credentials = None
        if given:
            current: dict[str, Any] = {}
            if change and obj.credentials:
                try:
                    current = selectors.connection_credentials(obj)
                except ValueError:
                    current = {}
            credentials = {**current, **given}
        services.connection_secrets_set(
            connection=obj,
            webhook_secret=data["set_webhook_secret"] or None,
            credentials=credentials,
        )


@admin.register(InboundDelivery)
class InboundDeliveryAdmin(ReadOnlyStoreScopedAdmin):
    list_display = ("received_at", "store", "platform", "topic", "outcome", "events", "cart")
    list_filter = ("platform", "outcome")
    search_fields = ("delivery_id", "cart")
    ordering = ("-received_at",)


@admin.register(PlatformCode)
class PlatformCodeAdmin(ReadOnlyStoreScopedAdmin):
    store_lookup = "coupon__store"
    list_display = ("coupon", "connection", "state", "attempts", "last_error", "confirmed_at")
    list_filter = ("state",)
    readonly_fields = ("idempotency_key",)

    def store_id_of(self, obj: Any) -> int:
        return int(obj.coupon.store_id)
