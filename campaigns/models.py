"""Recovery campaigns, their tiers, and what running them leaves behind.

Merchants configure a ``Campaign`` (when a cart counts as abandoned, holdout, caps, quiet hours,
attribution) with ordered ``Tier`` rows (on-site nudge, email, discount) in the admin. When a cart
is abandoned it gets one ``Enrollment`` and one ``Step`` per tier, due at a time in PostgreSQL;
the scheduler enqueues due steps and Celery workers run them (campaigns/steps.py). Discount tiers
issue a ``Coupon``; unsubscribes and "don't remind me" are ``Suppression`` rows. Each outcome is
also a ``campaign.*`` event in the log.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from carts.models import Store


def _default_quiet_start() -> dt.time:
    return dt.time(21, 0)


def _default_quiet_end() -> dt.time:
    return dt.time(8, 0)


# The longest duration a campaign may name (a year, in each field's unit): every time computed
# from one (abandonment, due times, caps, windows) stays far from the ends of the calendar.
YEAR_DAYS = 366
YEAR_HOURS = YEAR_DAYS * 24
YEAR_MINUTES = YEAR_HOURS * 60


class CampaignSettings(models.Model):
    """A store's messaging settings, shared by its campaigns: sender, links, consent basis."""

    class LegalBasis(models.TextChoices):
        CONSENT = "consent", "consent: email only shoppers who opted in"
        LEGITIMATE_INTEREST = (
            "legitimate_interest",
            "legitimate interest: email any shopper who gave an address, unless they opted out",
        )

    store = models.OneToOneField(Store, on_delete=models.CASCADE, related_name="campaign_settings")
    email_from = models.CharField(
        max_length=254, default="Shop <shop@example.com>", help_text="Sender: Name <address>."
    )
    reply_to = models.EmailField(blank=True)
    timezone = models.CharField(
        max_length=64, default="UTC", help_text="For quiet hours when the shopper's is unknown."
    )
    cart_url = models.CharField(
        max_length=500,
        blank=True,
        help_text=(
            "Where restore links lead. Placeholders: {items} (sku:qty,...), {code} (discount "
            "code or empty), {cart} (cart token). Empty: https://<domain>/cart."
        ),
    )
    email_legal_basis = models.CharField(
        max_length=24, choices=LegalBasis.choices, default=LegalBasis.CONSENT
    )
    track_opens = models.BooleanField(default=True)
    track_clicks = models.BooleanField(default=True)
    gross_margin_percent = models.PositiveSmallIntegerField(
        default=40,
        validators=[MaxValueValidator(100)],
        help_text="Typical gross margin, for the tiers' margin floor.",
    )
    # The on-site budget (security review 2, finding 5): past either, exit-intent offers show no
    # code (recorded as budget_codes / budget_value). Codes a cart already has do not count again.
    onsite_codes_per_hour = models.PositiveIntegerField(
        default=60,
        validators=[MaxValueValidator(100_000)],
        help_text="At most this many new on-site discount codes in any 60 minutes (0: none).",
    )
    onsite_discount_per_day = models.BigIntegerField(
        default=100_000,
        validators=[MinValueValidator(0), MaxValueValidator(10**12)],
        help_text=(
            "At most this much discount, in minor units, in new on-site codes in any 24 hours "
            "(each code counts what it takes off the cart it was made for; free shipping counts "
            "0)."
        ),
    )

    class Meta:
        verbose_name_plural = "campaign settings"

    def __str__(self) -> str:
        return f"Campaign settings of {self.store}"


class Campaign(models.Model):
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=False)
    priority = models.IntegerField(
        default=0,
        help_text="When several active campaigns of a store could take the same cart, the "
        "highest priority acts; at equal priority, the older one. A campaign with a shorter "
        "inactivity can take carts first; the on-site nudge comes from the highest-priority "
        "active campaign with an on-site tier.",
    )
    holdout_share = models.DecimalField(
        max_digits=3,
        decimal_places=2,
        default=Decimal("0.10"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("0.50"))],
        help_text="Share of shoppers (0-0.50) who get nothing: the lift baseline.",
    )
    # The abandonment definition.
    inactivity_minutes = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(YEAR_MINUTES)],
        help_text="A cart is abandoned after this many minutes without shopper activity.",
    )
    max_age_days = models.PositiveIntegerField(
        default=7,
        validators=[MinValueValidator(1), MaxValueValidator(YEAR_DAYS)],
        help_text="Carts whose last activity is older than this when they qualify are recorded as "
        "skipped (too old), never contacted.",
    )
    min_score = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Enrol only carts at least this likely to be abandoned (0-1).",
    )
    min_cart_value = models.BigIntegerField(
        default=0, validators=[MinValueValidator(0)], help_text="Minor units."
    )
    only_skus = models.JSONField(
        default=list, blank=True, help_text="Enrol only carts holding one of these SKUs."
    )
    only_categories = models.JSONField(
        default=list, blank=True, help_text="Enrol only carts holding an item in these categories."
    )
    # Frequency caps and quiet hours.
    shopper_cap_hours = models.PositiveIntegerField(
        default=24,
        validators=[MaxValueValidator(YEAR_HOURS)],
        help_text="At most one email per shopper in this many hours, across campaigns (0: none).",
    )
    cart_cap = models.PositiveSmallIntegerField(
        default=3, help_text="At most this many messages per cart (0: no limit)."
    )
    quiet_start = models.TimeField(
        null=True,
        blank=True,
        default=_default_quiet_start,
        help_text="No emails from this local time (the shopper's zone, else the store's)...",
    )
    quiet_end = models.TimeField(
        null=True, blank=True, default=_default_quiet_end, help_text="...until this local time."
    )
    attribution_hours = models.PositiveIntegerField(
        default=72,
        validators=[MinValueValidator(1), MaxValueValidator(YEAR_HOURS)],
        help_text="An order this soon after a touch counts as recovered.",
    )
    activated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Enrolment's high-water mark, on the server's clock: carts whose activity was recorded
    # (CartState.seen_at) before this were considered (docs/campaigns.md, "Time").
    enrolled_through = models.DateTimeField(null=True, blank=True, editable=False)
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
        FIXED_DISCOUNT = "fixed_discount", "fixed amount off"

    class RecentCodePolicy(models.TextChoices):
        NONE = "none", "no discount"
        SMALLER = "smaller", "the minimum discount"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="tiers")
    position = models.PositiveSmallIntegerField(default=1)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.ONSITE)
    delay_minutes = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(YEAR_MINUTES)],
        help_text="Minutes after the cart is abandoned (each tier later than the last).",
    )
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
        default=24,
        validators=[MaxValueValidator(YEAR_HOURS)],
        help_text=(
            "At most one offer per cart in this many hours (0: no limit). An offer with a code "
            "waits at least an hour, and also per shopper and per client address."
        ),
    )
    offer_ttl_minutes = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(YEAR_MINUTES)],
        help_text="How long an offer stays valid.",
    )
    # Email and discount tiers: the message (Django template syntax; see docs/campaigns.md).
    subject_template = models.CharField(
        max_length=200, default="You left something in your cart, {{ shopper_name|default:'' }}"
    )
    body_template = models.TextField(
        max_length=5000,
        default=(
            "Your cart is waiting for you:\n\n{% for item in items %}- {{ item.quantity }} x "
            "{{ item.name }}\n{% endfor %}\n{% if code %}Use {{ code }} for {{ discount }} off "
            "until {{ code_expires }}.\n{% endif %}"
        ),
    )
    # Discount tiers: the range the dynamic amount is chosen from (campaigns/discounts.py).
    discount_min = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Smallest discount: percent, or minor units for a fixed amount (0: none).",
    )
    discount_max = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Largest discount: percent, or minor units for a fixed amount.",
    )
    code_expiry_hours = models.PositiveIntegerField(
        default=48, validators=[MinValueValidator(1)], help_text="How long a code stays valid."
    )
    recent_code_days = models.PositiveIntegerField(
        default=30,
        help_text="A shopper who got a code this recently and abandoned again gets...",
    )
    recent_code_policy = models.CharField(
        max_length=16, choices=RecentCodePolicy.choices, default=RecentCodePolicy.SMALLER
    )
    margin_floor_percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(100)],
        help_text="Never discount below this margin (of the store's gross margin setting).",
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

        if self.channel != self.Channel.ONSITE:
            return  # email and discount tiers: validated by the admin's forms (campaigns/forms.py)
        if self.offer_kind == self.OfferKind.PERCENT_DISCOUNT and not self.percent:
            raise ValidationError({"percent": "A percentage discount needs its percentage."})
        if self.offer_kind != self.OfferKind.PERCENT_DISCOUNT and (
            self.percent or self.discount_cap
        ):
            raise ValidationError(
                {"percent": "Only percentage discounts take a percentage and a cap."}
            )


class Enrollment(models.Model):
    """A cart abandoned under a campaign: at most one per cart, whichever campaign took it."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    cart = models.CharField(max_length=128)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="enrollments")
    shopper = models.CharField(max_length=128, blank=True, help_text="features.shopper_key.")
    holdout = models.BooleanField(default=False)
    score = models.FloatField(null=True, blank=True)
    cart_value = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    abandoned_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "cart"], name="enrollment_unique_cart"),
        ]
        indexes = [
            models.Index(fields=["campaign", "abandoned_at"]),
            models.Index(fields=["store", "abandoned_at"]),  # attribution cohorts per store
        ]

    def __str__(self) -> str:
        return f"{self.cart} in {self.campaign_id}{' (holdout)' if self.holdout else ''}"


class Step(models.Model):
    """One tier for one cart, due at a time; runs at most once (unique cart and tier)."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for due_at
        ENQUEUED = "enqueued"  # handed to a worker
        SENDING = "sending"  # leased by a worker (lease_owner) until leased_until; maybe in flight
        SENT = "sent"
        SKIPPED = "skipped"
        SUPPRESSED = "suppressed"  # holdout: recorded, nothing sent
        CANCELLED = "cancelled"  # the cart's order came first
        FAILED = "failed"

    OPEN = (Status.PENDING, Status.ENQUEUED)

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    cart = models.CharField(max_length=128)
    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="steps")
    tier = models.ForeignKey(Tier, on_delete=models.CASCADE, related_name="steps")
    channel = models.CharField(max_length=16, choices=Tier.Channel.choices)
    shopper = models.CharField(max_length=128, blank=True)
    due_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    message_id = models.CharField(max_length=255, blank=True)
    # What the links in the step's email carry (campaigns/links.py): random, so a link names no
    # sequential id that could be counted through.
    link_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # The lease of a step being sent (docs/campaigns.md, "Leases"): which worker holds it and until
    # when; past leased_until another worker may take it over.
    lease_owner = models.CharField(max_length=64, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "cart", "tier"], name="step_unique_cart_tier"),
        ]
        indexes = [
            models.Index(fields=["due_at"], condition=Q(status="pending"), name="step_due"),
            models.Index(
                fields=["enqueued_at"], condition=Q(status="enqueued"), name="step_enqueued"
            ),
            models.Index(
                fields=["leased_until"], condition=Q(status="sending"), name="step_leased"
            ),
            models.Index(
                fields=["store", "shopper", "finished_at"],
                condition=Q(status="sent"),
                name="step_sent_by_shopper",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.cart} tier {self.tier_id}: {self.status}"


class Coupon(models.Model):
    """A unique, single-use, expiring discount code; one per cart."""

    class Kind(models.TextChoices):
        PERCENT = "percent"  # amount: percentage points
        FIXED = "fixed"  # amount: minor units of ``currency``
        FREE_SHIPPING = "free_shipping"

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    cart = models.CharField(max_length=128)
    shopper = models.CharField(max_length=128, blank=True, help_text="features.shopper_key.")
    code = models.CharField(max_length=32, unique=True)
    step = models.ForeignKey(Step, on_delete=models.SET_NULL, null=True, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.PositiveIntegerField(default=0)
    cap = models.BigIntegerField(null=True, blank=True, help_text="Percent: most it takes off.")
    currency = models.CharField(max_length=3, blank=True)
    min_cart_value = models.BigIntegerField(default=0)
    reasons = models.JSONField(default=list, help_text="How the amount was chosen.")
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    redeemed_at = models.DateTimeField(null=True, blank=True)
    order_id = models.CharField(max_length=128, blank=True)
    discount_applied = models.BigIntegerField(null=True, blank=True, help_text="Minor units.")
    # Where the code was made: a discount step (email) or an on-site exit-intent offer, whose
    # codes count against the store's on-site budget with ``value``.
    channel = models.CharField(
        max_length=16, choices=Tier.Channel.choices, default=Tier.Channel.DISCOUNT
    )
    value = models.BigIntegerField(
        default=0, help_text="What it takes off the cart it was made for, in minor units."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "cart"], name="coupon_one_per_cart"),
        ]
        indexes = [  # anti-gaming: the shopper's recent codes
            models.Index(
                fields=["store", "shopper", "issued_at"],
                condition=~Q(shopper=""),
                name="coupon_by_shopper",
            ),
            # the on-site budget: a store's codes of the last hour and day
            models.Index(
                fields=["store", "issued_at"],
                condition=Q(channel="onsite"),
                name="coupon_onsite_budget",
            ),
        ]

    def __str__(self) -> str:
        return self.code


class Suppression(models.Model):
    """A shopper who unsubscribed (no emails) or asked not to be reminded (nothing at all)."""

    class Kind(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed"
        DONT_REMIND = "dont_remind"
        BOUNCED = "bounced"  # a hard bounce: the address does not take mail (no emails)
        COMPLAINED = "complained"  # a spam complaint (no emails)

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    shopper = models.CharField(max_length=128)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    cart = models.CharField(max_length=128, blank=True, help_text="Where it was asked from.")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "shopper", "kind"], name="suppression_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.shopper}: {self.kind}"
