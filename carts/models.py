"""Stores, their keys, the append-only cart event log and the cart-state projection."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower, Now

from carts import money
from carts.sources import Kind


class Store(models.Model):
    """A merchant's shop. Keys live in StoreKey, hashed; the webhook secret is derived (keys.py)."""

    name = models.CharField(max_length=200)
    domain = models.CharField(max_length=253, blank=True)
    webhook_secret_nonce = models.CharField(max_length=64, editable=False)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="API requests per minute; empty uses the default."
    )
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        help_text="Storefront origins (scheme://host[:port]) for the snippet.",
    )
    pii_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(36_500)],
        help_text=(
            "Erase shoppers idle for longer than this many days (their email and phone, in the "
            "log and everywhere else); empty keeps them until erased on request."
        ),
    )
    locale = models.CharField(
        max_length=35,
        blank=True,
        default="",
        db_default="",
        validators=[money.locale_validate],
        help_text=(
            "How money is written for this store, e.g. en-GB, de-DE, fr-FR (CLDR): 1.238,01 € "
            "in de-DE. Empty: English, €1,238.01."
        ),
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"

    def clean(self) -> None:
        self.locale = money.locale_tag(self.locale)


class StoreMember(models.Model):
    """A user who works for a store: merchants configure campaigns, marketers read dashboards.

    Staff users see and change only the data of the stores they are members of (superusers see
    every store)."""

    class Role(models.TextChoices):
        MERCHANT = "merchant", "merchant (campaigns)"
        MARKETER = "marketer", "marketer (dashboards)"

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        "auth.User", on_delete=models.CASCADE, related_name="store_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MERCHANT)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "store"], name="storemember_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.store} ({self.role})"


class StoreKey(models.Model):
    class Kind(models.TextChoices):
        SECRET = "secret", "secret (sk_, server to server)"
        PUBLISHABLE = "publishable", "publishable (pk_, browser)"

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="keys")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    prefix = models.CharField(max_length=16, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["store", "kind"])]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.kind})"


class CartEvent(models.Model):
    """One immutable fact about a cart. The database refuses UPDATE, DELETE and TRUNCATE.

    The table is partitioned by month of ``recorded_at`` (carts/partitions.py); its primary key in
    the database is (store_id, store_position, recorded_at). ``position`` is a global identifier,
    in no guaranteed commit order across stores; ``store_position`` is the store's own order, in
    which followers read (docs/adr/0003)."""

    position = models.BigAutoField(primary_key=True)
    store_position = models.BigIntegerField(
        help_text="1, 2, 3... per store, in commit order (docs/adr/0003)."
    )
    event_id = models.UUIDField()
    # No foreign-key constraint in the database (attaching a month's partition would then lock
    # the stores); deleting a store with events is still refused by the ORM (PROTECT).
    store = models.ForeignKey(
        Store, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    cart = models.CharField(max_length=128)
    version = models.PositiveIntegerField()
    type = models.CharField(max_length=64)
    schema_version = models.PositiveSmallIntegerField()
    data = models.JSONField()
    shopper = models.JSONField(null=True, blank=True)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(db_default=Now())
    body_hash = models.CharField(
        max_length=64, help_text="sha256 of the event body, for idempotency."
    )
    # Provenance (carts/sources.py): who appended the event, set by the append service.
    source = models.CharField(
        max_length=16,
        choices=[(k.value, k.value) for k in Kind],
        db_default=Kind.UNKNOWN.value,
        help_text="Who appended it: server, browser, platform, system (unknown: before 0008).",
    )
    source_ref = models.CharField(
        max_length=128,
        blank=True,
        db_default="",
        help_text="Which one: the key prefix, browser session, webhook delivery or component.",
    )

    class Meta:
        # A partitioned table holds no unique index without its partition key: an event id is
        # unique per store in carts_eventkey (EventKey, which also finds an event by its id), a
        # cart's versions by the cart's row lock (carts/append.py).
        indexes = [
            models.Index(fields=["store", "cart", "version"], name="cartevent_store_cart_version"),
            models.Index(fields=["position"], name="cartevent_position"),
        ]

    def __str__(self) -> str:
        return f"#{self.position} {self.type} {self.cart}@{self.version}"


class EventKey(models.Model):
    """Each event id once per store, with what a duplicate delivery is answered (version,
    positions, body hash, source): the log's idempotency, one index probe whatever the number of
    its partitions. Written by the append in the same statement as the event."""

    pk = models.CompositePrimaryKey("store_id", "event_id")
    store = models.ForeignKey(
        Store, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    event_id = models.UUIDField()
    cart = models.CharField(max_length=128)
    version = models.IntegerField()
    position = models.BigIntegerField()
    store_position = models.BigIntegerField()
    body_hash = models.CharField(max_length=64)
    source = models.CharField(max_length=16)

    def __str__(self) -> str:
        return f"{self.event_id} -> #{self.position}"


class LogHead(models.Model):
    """The last store position of each store's log. The append takes this row's lock, held until
    it commits, so a store's events become visible in store-position order (docs/adr/0003)."""

    store = models.OneToOneField(
        Store, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    position = models.BigIntegerField()

    def __str__(self) -> str:
        return f"store {self.store_id} @ {self.position}"


class CartState(models.Model):
    """The cart-state projection: a pure fold of the cart's events, written with each append."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        CHECKOUT = "checkout"
        CONVERTED = "converted"

    # No index of its own: the (store, status, last_activity_at) index starts with it.
    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="+", db_index=False)
    token = models.CharField(max_length=128)
    version = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    currency = models.CharField(max_length=3, blank=True)
    items = models.JSONField(default=list)
    value = models.BigIntegerField(default=0, help_text="Minor units.")
    item_count = models.PositiveIntegerField(default=0)
    shopper_id = models.CharField(max_length=128, blank=True)
    email = models.CharField(max_length=254, blank=True)
    phone = models.CharField(max_length=32, blank=True)
    consent = models.JSONField(default=dict)
    # The source kind that gave the contact details and consent (a browser never replaces a
    # trusted source's).
    contact_source = models.CharField(max_length=16, blank=True, db_default="")
    timezone = models.CharField(max_length=64, blank=True)
    locale = models.CharField(max_length=35, blank=True)
    order_id = models.CharField(max_length=128, blank=True)
    order_total = models.BigIntegerField(null=True, blank=True)
    refunded = models.BigIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    checkout_started_at = models.DateTimeField(null=True, blank=True)
    converted_at = models.DateTimeField(null=True, blank=True)
    # The server's time of the latest shopper activity: the recorded_at of the append that
    # brought it (last_activity_at is the shopper's clock). Campaigns measure idleness by it.
    seen_at = models.DateTimeField(null=True, blank=True)
    # The live abandonment score (probability the cart does not become an order), written with
    # each append by the registered scorer (recovery), and the feature accumulator behind it.
    features = models.JSONField(default=dict)
    score = models.FloatField(null=True, blank=True)
    model_version = models.CharField(max_length=64, blank=True)
    reasons = models.JSONField(default=list)
    scored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # token first, for the same reason (_LOCK_CARTS).
            models.UniqueConstraint(fields=["token", "store"], name="cartstate_unique_token"),
        ]
        indexes = [
            models.Index(fields=["store", "status", "last_activity_at"]),
            # Campaign enrolment's scan: open carts with items, by server-time idleness
            # (campaigns/enrolment.py).
            models.Index(
                fields=["store", "seen_at"],
                condition=Q(status__in=["active", "checkout"], item_count__gt=0),
                name="cartstate_idle",
            ),
            # A returning shopper's other carts (recovery's shopper-history features).
            models.Index(
                fields=["store", "shopper_id"],
                condition=~Q(shopper_id=""),
                name="cartstate_shopper_id",
            ),
            models.Index(
                F("store"), Lower("email"), condition=~Q(email=""), name="cartstate_email"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.token} ({self.status})"


class ProjectorCheckpoint(models.Model):
    """How far a projector has read one store's log (its store position); written in the same
    transaction as the projector's rows."""

    name = models.CharField(max_length=64)
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    position = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["store", "name"], name="projectorcheckpoint_unique_store"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}[{self.store_id}]@{self.position}"


class ProjectorRunner(models.Model):
    """A projector runner that is alive until ``expires_at`` (renewed every turn), and the
    projectors it runs: each takes a fair share of the partitions of each projector."""

    owner = models.CharField(max_length=128, primary_key=True)
    names = models.JSONField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.owner


class ProjectorLease(models.Model):
    """Which runner owns a partition of a projector's stores (store id modulo
    PROJECTOR_PARTITIONS) until ``expires_at``; renewed while it runs, taken over once expired
    (carts/projectors.py)."""

    name = models.CharField(max_length=64)
    part = models.IntegerField()
    owner = models.CharField(max_length=128)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "part"], name="projectorlease_unique_part"),
        ]

    def __str__(self) -> str:
        return f"{self.name}/{self.part}: {self.owner}"


class DailyEventCount(models.Model):
    """Read model of the ``daily_event_counts`` projector: events per store, UTC day and type."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    type = models.CharField(max_length=64)
    count = models.PositiveIntegerField(default=0)
    carts = models.PositiveIntegerField(default=0, help_text="Carts whose first event this was.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "day", "type"], name="dailycount_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.type}: {self.count}"


class DeadLetter(models.Model):
    """An event of the log that a reader (a projector, a rebuild) could not apply.

    The reader records it here and moves on; ``/healthz`` and the admin show the open ones. A
    rebuild of the projector tries every event again and resolves those that now apply."""

    projector = models.CharField(max_length=64)
    position = models.BigIntegerField(help_text="The event's position in the log.")
    store_id = models.BigIntegerField(null=True, blank=True)
    cart = models.CharField(max_length=128, blank=True)
    event_type = models.CharField(max_length=64, blank=True)
    error = models.TextField()
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["projector", "position"], name="deadletter_unique_position"
            ),
        ]
        indexes = [
            models.Index(
                fields=["projector"],
                condition=Q(resolved_at__isnull=True),
                name="deadletter_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.projector} #{self.position}: {self.error[:60]}"


class ShopperKey(models.Model):
    """A shopper's data key: their personal data in the log is encrypted with it (carts/privacy.py).

    One live key per store and shopper (``subject``: ``email:<sha256 of the address>``). Erasing
    the shopper destroys the key (``key`` NULL, ``subject`` blank, ``erased_at`` set): what the log
    holds of them can no longer be read, and no event row changes. A shopper seen again after
    that gets a new key. Keys live here only, never in the log."""

    id = models.BigAutoField(primary_key=True)
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    subject = models.CharField(max_length=160, blank=True)
    key = models.BinaryField(null=True, editable=False)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    last_seen_at = models.DateTimeField(db_default=Now())
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["store", "subject"],
                condition=Q(erased_at__isnull=True),
                name="shopperkey_live_subject",
            ),
        ]
        # No index on last_seen_at: the append moves it, and an indexed column would make every
        # such update write all the row's indexes (no HOT update). The hourly retention sweep
        # reads a store's live keys through the unique index instead.

    def __str__(self) -> str:
        return f"key #{self.pk}{' (erased)' if self.erased_at else ''}"
