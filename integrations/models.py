"""Connected shop platforms (Shopify, WooCommerce, Saleor), their inbound deliveries, the codes
made on them, and the store's outbound webhook endpoints with their deliveries."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from campaigns.models import Coupon
from carts.models import Store


class Platform(models.TextChoices):
    SHOPIFY = "shopify", "Shopify"
    WOOCOMMERCE = "woocommerce", "WooCommerce"
    SALEOR = "saleor", "Saleor"


class Connection(models.Model):
    """A store's link to its shop platform: where its webhooks come from (verified with
    ``webhook_secret``) and where its discount codes are made (``api_url`` with
    ``credentials``). Secrets are sealed at rest (integrations/crypto.py)."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+")
    platform = models.CharField(max_length=16, choices=Platform.choices)
    # Shopify: the shop's myshopify domain (X-Shopify-Shop-Domain finds the connection by it).
    shop_domain = models.CharField(max_length=253, blank=True)
    # WooCommerce: the site's base URL; Saleor: its GraphQL API URL; Shopify: empty (the Admin API
    # is at https://<shop_domain>/admin/api/<version>/graphql.json) or an override for tests.
    api_url = models.URLField("API URL", max_length=500, blank=True)
    # Sealed JSON of the platform's API credentials (Shopify: access_token; WooCommerce:
    # consumer_key, consumer_secret; Saleor: token).
    credentials = models.TextField(blank=True, editable=False)
    # Sealed: what signs the platform's webhooks (Shopify: the app's client secret; WooCommerce:
    # the webhook's secret; Saleor: unused, it signs with its JWKS, at ``jwks_url``).
    webhook_secret = models.TextField(blank=True, editable=False)
    jwks_url = models.URLField("JWKS URL", max_length=500, blank=True)
    # The storefront's base URL, for restore links the platform does not give (WooCommerce).
    storefront_url = models.URLField("Storefront URL", max_length=500, blank=True)
    # Whether codes issued for this store are made on the platform before they are sent.
    codes_on_platform = models.BooleanField(default=True)
    active = models.BooleanField(default=True)
    last_delivery_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["store", "platform"], name="connection_one_per_platform"
            ),
            models.UniqueConstraint(
                fields=["platform", "shop_domain"],
                condition=~Q(shop_domain=""),
                name="connection_unique_shop_domain",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_platform_display()} for store #{self.store_id}"


class InboundDelivery(models.Model):
    """One webhook delivery a platform made: deduplicated on the platform's delivery id, kept
    with what became of it."""

    class Outcome(models.TextChoices):
        RECORDED = "recorded"  # its events are in the log
        STALE = "stale"  # older than what was recorded: kept here, the cart not moved back
        IGNORED = "ignored"  # a topic or state we do not map (reason says which)
        REJECTED = "rejected"  # read, but the cart cannot take it (reason says why)

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    delivery_id = models.CharField(max_length=128)
    topic = models.CharField(max_length=64)
    received_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.CharField(max_length=500, blank=True)
    cart = models.CharField(max_length=128, blank=True)
    events = models.PositiveIntegerField(default=0)
    body_sha256 = models.CharField(max_length=64)

    class Meta:
        verbose_name_plural = "inbound deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["store", "platform", "delivery_id"], name="inbound_unique_delivery"
            ),
        ]
        indexes = [models.Index(fields=["store", "received_at"], name="inbound_by_time")]

    def __str__(self) -> str:
        return f"{self.platform} {self.topic} {self.delivery_id}: {self.outcome}"


class PlatformRef(models.Model):
    """Which of our carts a platform's cart, checkout or order is: the first delivery that names
    a reference binds it, and every later one (in any order) finds the same cart."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    # "cart:<token>", "checkout:<token>", "checkout-id:<id>", "order:<id>"
    ref = models.CharField(max_length=160)
    cart = models.CharField(max_length=128)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "platform", "ref"], name="platformref_unique"),
        ]
        indexes = [models.Index(fields=["store", "cart"], name="platformref_by_cart")]

    def __str__(self) -> str:
        return f"{self.platform} {self.ref} -> {self.cart}"


class PlatformCart(models.Model):
    """What the platform last told us of one of our carts: its lines as of ``updated_at`` (the
    platform's clock), so a later snapshot becomes item events by difference and an older one
    moves nothing; and where the shopper resumes it on the platform."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    cart = models.CharField(max_length=128)
    updated_at = models.DateTimeField(null=True, blank=True)
    lines = models.JSONField(default=list)  # [{"sku", "name", "quantity", "unit_price"}]
    currency = models.CharField(max_length=3, blank=True)
    restore_url = models.URLField(max_length=2048, blank=True)
    deleted = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "cart"], name="platformcart_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.platform} cart {self.cart}"


class PlatformCode(models.Model):
    """A discount code made on the store's platform: the code is sent only once ``confirmed``."""

    class State(models.TextChoices):
        PENDING = "pending"  # not confirmed yet (retried with backoff)
        CONFIRMED = "confirmed"
        FAILED = "failed"  # the platform refused it for good (error says why)

    coupon = models.OneToOneField(Coupon, on_delete=models.CASCADE, related_name="platform_code")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="codes")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    remote_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.UUIDField(default=uuid.uuid4, editable=False)

    def __str__(self) -> str:
        return f"{self.coupon_id} on {self.connection}: {self.state}"


class Endpoint(models.Model):
    """A store's outbound webhook endpoint: the events it takes, signed Standard Webhooks style
    with a secret derived from the project's SECRET_KEY and ``secret_nonce`` (never stored)."""

    EVENT_TYPES = (
        "cart.abandoned",
        "cart.recovered",
        "campaign.step_sent",
        "offer.accepted",
        "coupon.redeemed",
    )

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+")
    url = models.URLField(max_length=2048)
    event_types = models.JSONField(default=list, help_text="Empty: every event type.")
    description = models.CharField(max_length=200, blank=True)
    secret_nonce = models.CharField(max_length=64, editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    def __str__(self) -> str:
        return self.url


class OutboundDelivery(models.Model):
    """One event for one endpoint, made from the log (so a crash loses none) and retried with
    backoff until delivered or given up."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"  # leased by a worker until leased_until
        DELIVERED = "delivered"
        FAILED = "failed"  # given up after the last attempt

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    webhook_id = models.CharField(max_length=64, unique=True)  # msg_<...>, stable across retries
    event_type = models.CharField(max_length=64)
    position = models.BigIntegerField(help_text="The log position it was made from.")
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    leased_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "outbound deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "position", "event_type"], name="outbound_once_per_event"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="pending"), name="outbound_due"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.endpoint_id}: {self.status}"


class OutboundAttempt(models.Model):
    delivery = models.ForeignKey(OutboundDelivery, on_delete=models.CASCADE, related_name="tries")
    at = models.DateTimeField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"attempt at {self.at}: {self.status_code or self.error}"
