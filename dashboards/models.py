"""The dashboards' read models, maintained by the ``dashboard`` projector (dashboards/projection/)
and rebuilt from the log with ``manage.py rebuild_projections dashboard``. docs/dashboards.md has
the definitions; nothing else writes these tables."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from carts.models import Store


class CartFact(models.Model):
    """One cart's journey as the dashboards need it: when it started, went quiet, ordered; its
    campaign, touches, discount and refunds; its score. Days and hours are the store's local ones,
    fixed when the projector sets the time, so counters derived from a row never move by
    themselves."""

    # No database constraint: a read model needs none, and its check cost a lookup per row.
    store = models.ForeignKey(
        Store, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    cart = models.CharField(max_length=128)
    currency = models.CharField(max_length=3, blank=True)
    # The first shopper event (not campaign.* or recovery.*) in log order.
    started_at = models.DateTimeField(null=True)
    started_day = models.DateField(null=True)
    started_hour = models.SmallIntegerField(null=True)
    last_activity_at = models.DateTimeField(null=True)
    # The cart's lines now: [[sku, name, quantity, unit_price, category], ...].
    lines = models.JSONField(default=list)
    item_count = models.IntegerField(default=0)
    value = models.BigIntegerField(default=0)
    peak_value = models.BigIntegerField(default=0)
    had_items = models.BooleanField(default=False)
    # The first abandonment: final once a later event (or an enrolment) proved the gap; before
    # that, the prospective one (last activity + ABANDONMENT_WINDOW), real once it is past.
    abandoned_at = models.DateTimeField(null=True)
    abandoned_day = models.DateField(null=True)
    abandoned_hour = models.SmallIntegerField(null=True)
    abandoned_final = models.BooleanField(default=False)
    abandoned_lines = models.JSONField(null=True)  # the lines then (final only)
    abandoned_value = models.BigIntegerField(null=True)  # their value (final only)
    # The first order, refunds and the redeemed campaign coupon.
    converted_at = models.DateTimeField(null=True)
    converted_day = models.DateField(null=True)
    converted_hour = models.SmallIntegerField(null=True)
    order_total = models.BigIntegerField(null=True)
    refunded = models.BigIntegerField(default=0)
    discount = models.BigIntegerField(default=0)
    discount_currency = models.CharField(max_length=3, blank=True)
    redeemed_at = models.DateTimeField(null=True)
    redeemed_day = models.DateField(null=True)
    redeemed_hour = models.SmallIntegerField(null=True)
    # The campaign that enrolled the cart (campaign.enrolled).
    campaign_id = models.IntegerField(null=True)
    holdout = models.BooleanField(null=True)
    enrolled_at = models.DateTimeField(null=True)
    enrolled_abandoned_at = models.DateTimeField(null=True)
    enrolled_day = models.DateField(null=True)  # local day of enrolled_abandoned_at (cohorts)
    # Sent steps: [[iso time, campaign, tier, position, channel, step], ...] in log order.
    touches = models.JSONField(default=list)
    last_touch_at = models.DateTimeField(null=True)
    last_touch_tier = models.IntegerField(null=True)
    last_touch_channel = models.CharField(max_length=16, blank=True)
    # Derived with the campaign's attribution window (docs/dashboards.md).
    recovered = models.BooleanField(default=False)
    credit_tier = models.IntegerField(null=True)
    credit_channel = models.CharField(max_length=16, blank=True)
    converted_in_window = models.BooleanField(default=False)  # lift (intention to treat)
    # The score the log records: at enrolment, else at the last exit-intent decision.
    score = models.FloatField(null=True)
    scored_at = models.DateTimeField(null=True)
    scored_day = models.DateField(null=True)
    scored_by_enrolment = models.BooleanField(default=False)
    exit_intents = models.IntegerField(default=0)
    offers_shown = models.IntegerField(default=0)
    offers_accepted = models.IntegerField(default=0)
    # offer id -> [kind, campaign, tier, code, discount amount, currency, accepted at (ISO) or None]
    offers = models.JSONField(default=dict)
    clicked = models.JSONField(default=list)  # step ids clicked at least once
    # Steps scheduled at enrolment and not finished yet (sent, skipped, suppressed, cancelled or
    # failed for good): step id -> [tier, channel, local day of the enrolment].
    steps_open = models.JSONField(default=dict)
    redeemed_code = models.CharField(max_length=64, blank=True, default="")
    # The order credited to an accepted on-site offer (derived with the offer's campaign's
    # attribution window): the offer's campaign and tier, and its discount cost.
    onsite_recovered = models.BooleanField(default=False)
    onsite_campaign = models.IntegerField(null=True)
    onsite_tier = models.IntegerField(null=True)
    onsite_discount = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # cart first: the projector loads a batch's carts by token (one probe each).
            models.UniqueConstraint(fields=["cart", "store"], name="dashboards_cartfact_unique"),
        ]
        indexes = [
            # Live carts, and the prospective abandonments not reached yet (last activity within
            # the window), which the selectors subtract at read time.
            models.Index(fields=["store", "last_activity_at"], name="dashboards_cartfact_live"),
            # Scored carts whose outcome is not known yet (the last 24 hours).
            models.Index(
                fields=["store", "scored_at"],
                condition=Q(scored_at__isnull=False),
                name="dashboards_cartfact_scored",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.cart} @ store {self.store_id}"


class DailyCount(models.Model):
    """Counters per store, local day (and local hour for the time-series metrics), campaign, tier,
    channel, metric, key and currency: count, amount (minor units) and, for the lift cohorts,
    the sum of squared amounts. 0 and '' stand for "none" in the dimensions."""

    # No database constraint: a read model needs none, and its check cost a lookup per row.
    store = models.ForeignKey(
        Store, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    metric = models.CharField(max_length=32)
    hourly = models.BooleanField(default=False)  # False: the whole day; True: one local hour
    day = models.DateField()
    hour = models.SmallIntegerField(default=-1)  # 0-23 for hourly rows, -1 for day rows
    campaign_id = models.IntegerField(default=0)
    tier_id = models.IntegerField(default=0)
    channel = models.CharField(max_length=16, default="", blank=True)
    key = models.CharField(max_length=300, default="", blank=True)
    currency = models.CharField(max_length=3, default="", blank=True)
    count = models.BigIntegerField(default=0)
    # numeric, not int8: a sum over any number of carts (each bounded by the projection's
    # MAX_AMOUNT) cannot overflow. Reads cast sums to int.
    amount = models.DecimalField(max_digits=40, decimal_places=0, default=0)
    squares = models.DecimalField(max_digits=40, decimal_places=0, default=0)

    class Meta:
        constraints = [
            # Also the read index: a store's metric over a day range, day rows apart from hours.
            models.UniqueConstraint(
                fields=[
                    "store",
                    "hourly",
                    "metric",
                    "day",
                    "hour",
                    "campaign_id",
                    "tier_id",
                    "channel",
                    "key",
                    "currency",
                ],
                name="dashboards_dailycount_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.metric} {self.key}: {self.count}"
