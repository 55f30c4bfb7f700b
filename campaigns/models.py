"""Recovery campaigns and their tiers, configured by merchants in the admin.

This first cut carries what the on-site exit-intent offer needs (recovery/offers.py); the email
and discount tiers, scheduling, caps and quiet hours build on the same two models.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from carts.models import Store


class Campaign(models.Model):
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=False)
    priority = models.IntegerField(
        default=0, help_text="When several campaigns are active, the highest priority acts."
    )
    holdout_share = models.DecimalField(
        max_digits=3,
        decimal_places=2,
        default=Decimal("0.10"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("0.50"))],
        help_text="Share of shoppers (0-0.50) who get nothing: the lift baseline.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["store", "active", "-priority"])]

    def __str__(self) -> str:
        return f"{self.name} ({'active' if self.active else 'paused'})"


class Tier(models.Model):
    class Channel(models.TextChoices):
        ONSITE = "onsite", "on-site nudge (websocket)"
        EMAIL = "email", "email"
        DISCOUNT = "discount", "discount"

    class OfferKind(models.TextChoices):
        MESSAGE = "message", "message only"
        FREE_SHIPPING = "free_shipping", "free shipping"
        PERCENT_DISCOUNT = "percent_discount", "percentage discount"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="tiers")
    position = models.PositiveSmallIntegerField(default=1)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.ONSITE)
    min_score = models.FloatField(
        default=0.5,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Act only on carts at least this likely to be abandoned (0-1).",
    )
    min_cart_value = models.BigIntegerField(
        default=0, validators=[MinValueValidator(0)], help_text="Minor units."
    )
    offer_kind = models.CharField(
        max_length=20, choices=OfferKind.choices, default=OfferKind.MESSAGE
    )
    percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(90)],
        help_text="Percentage discounts: the percentage.",
    )
    discount_cap = models.BigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Percentage discounts: the most it may take off, in minor units.",
    )
    headline = models.CharField(max_length=120, default="Before you go")
    body = models.TextField(max_length=500, default="Your cart is saved for you.")
    cta_label = models.CharField(max_length=40, default="Back to my cart")
    cta_url = models.URLField(blank=True, help_text="Where the button leads (e.g. the cart page).")
    cooldown_hours = models.PositiveIntegerField(
        default=24, help_text="At most one offer per cart in this many hours (0: no limit)."
    )
    offer_ttl_minutes = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1)], help_text="How long an offer stays valid."
    )

    class Meta:
        ordering = ["campaign", "position"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "position"], name="tier_unique_position"),
        ]

    def __str__(self) -> str:
        return f"{self.campaign.name} #{self.position} {self.channel}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.offer_kind == self.OfferKind.PERCENT_DISCOUNT and not self.percent:
            raise ValidationError({"percent": "A percentage discount needs its percentage."})
        if self.offer_kind != self.OfferKind.PERCENT_DISCOUNT and (
            self.percent or self.discount_cap
        ):
            raise ValidationError(
                {"percent": "Only percentage discounts take a percentage and a cap."}
            )
