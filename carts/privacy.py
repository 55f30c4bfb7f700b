"""Shoppers' rights over their data: erasure, export and retention (docs/security.md).

Erasure never updates or deletes an event. The shopper's data keys are destroyed (carts/pii.py),
so what the log holds of them no longer opens, and a ``shopper.erased`` event is appended to each
of their carts, so the cart state and every read model rebuilt from the log show no contact from
there on. Aggregates (carts, values, orders, campaign outcomes) are untouched: only the personal
fields go.

A shopper is named by their email address, or by the shop's own shopper id (``shopper.id`` in
events), which stands for every address its carts were given. The shop's shopper id is the shop's
pseudonym and stays, as do the sha256 shopper keys campaigns count caps and suppressions by
(carts/identity.py).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import Q, Value
from django.db.models.functions import Coalesce, Lower
from django.utils import timezone

from carts import event_types, identity, pii, services
from carts.models import CartEvent, CartState, Store
from carts.sources import Source

log = logging.getLogger(__name__)

SOURCE = Source.system("privacy")
REQUEST = "request"
RETENTION = "retention"
ERASE_PASSES = 3
MAX_RETENTION_DAYS = 36_500


@dataclass(frozen=True, slots=True)
class Shopper:
    """Who an erasure or export is about: an email address, a shop's shopper id, or both."""

    email: str = ""
    shopper_id: str = ""

    def __post_init__(self) -> None:
        # Not lower-cased here: PostgreSQL lower-cases both sides where carts are matched (its
        # lower() and Python's differ beyond ASCII), Python where keys are (pii.subject_of).
        object.__setattr__(self, "email", self.email.strip())
        object.__setattr__(self, "shopper_id", self.shopper_id.strip())
        if not self.email and not self.shopper_id:
            raise ValueError("name the shopper by email or shopper id")


@dataclass(frozen=True, slots=True)
class Erasure:
    carts: list[str] = field(default_factory=list)  # the carts given a shopper.erased event
    keys: int = 0  # data keys destroyed

    def as_dict(self) -> dict[str, Any]:
        return {"erased": True, "carts": len(self.carts), "keys": self.keys}


def _emails(store_id: int, shopper: Shopper) -> set[str]:
    """The shopper's addresses: the one given, and those of the shop's shopper id's carts."""
    emails = {shopper.email} if shopper.email else set()
    if shopper.shopper_id:
        emails |= {
            e
            for e in CartState.objects.filter(store_id=store_id, shopper_id=shopper.shopper_id)
            .exclude(email="")
            .values_list("email", flat=True)
        }
    return emails


def _carts(
    store_id: int, shopper: Shopper, emails: set[str], idle_before: datetime | None = None
) -> list[CartState]:
    """The carts showing one of the addresses (compared lower-cased by PostgreSQL on both
    sides), and those of the shop's shopper id; with ``idle_before``, only carts idle since."""
    match = Q(pk__in=[])
    for email in sorted(emails):
        match |= Q(email_lower=Lower(Value(email)))
    if shopper.shopper_id:
        match |= Q(shopper_id=shopper.shopper_id)
    carts = (
        CartState.objects.filter(store_id=store_id, version__gt=0)
        .annotate(email_lower=Lower("email"))
        .filter(match)
    )
    if idle_before is not None:
        carts = carts.annotate(
            idle_since=Coalesce("seen_at", "last_activity_at", "started_at")
        ).filter(idle_since__lt=idle_before)
    return list(carts.order_by("token"))


def _key_ids_used(store_id: int, tokens: Sequence[str]) -> list[int]:
    """The keys the carts' events were sealed with (an address given only in an envelope, or
    replaced since, is no cart's email any more)."""
    events = CartEvent.objects.filter(store_id=store_id, cart__in=tokens).only(
        "store_id", "event_id", "type", "data", "shopper"
    )
    return sorted(pii.sealed_key_ids(events.iterator(chunk_size=2000)))


# Keys are locked in id order (two erasures, or an erasure and the retention sweep, cannot
# deadlock), and the conditions are checked again once locked: a key an append used meanwhile is
# no longer idle.
_DESTROY_KEYS = """
    WITH doomed AS (
        SELECT id FROM carts_shopperkey
        WHERE store_id = %(store)s AND erased_at IS NULL
          AND (subject = ANY(%(subjects)s) OR id = ANY(%(ids)s))
          AND last_seen_at < COALESCE(%(idle_before)s::timestamptz, 'infinity')
        ORDER BY id
        FOR UPDATE
    )
    UPDATE carts_shopperkey AS k SET key = NULL, subject = '', erased_at = %(now)s
    FROM doomed WHERE k.id = doomed.id
    RETURNING k.id
"""


def _keys_destroy(
    store_id: int,
    *,
    now: datetime,
    subjects: Sequence[str] = (),
    ids: Sequence[int] = (),
    idle_before: datetime | None = None,
) -> int:
    if not subjects and not ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            _DESTROY_KEYS,
            {
                "store": store_id,
                "subjects": list(subjects),
                "ids": list(ids),
                "idle_before": idle_before,
                "now": now,
            },
        )
        return len(cursor.fetchall())


def _carts_lock(store_id: int, tokens: Sequence[str]) -> None:
    """Lock the carts' states in token order, as an append does."""
    if tokens:
        list(
            CartState.objects.select_for_update()
            .filter(store_id=store_id, token__in=tokens)
            .order_by("token")
            .values_list("pk", flat=True)
        )


def shopper_erase(
    *,
    store_id: int,
    shopper: Shopper,
    reason: str = REQUEST,
    now: datetime | None = None,
    idle_before: datetime | None = None,
) -> Erasure:
    """Erase what the store holds of the shopper: their keys are destroyed and each of their
    carts that still shows a contact gets a ``shopper.erased`` event, in one transaction.

    By address: that address's key. By the shop's shopper id: the keys of every address its
    carts' events were given. ``idle_before`` (the retention sweep): only carts and keys idle
    since then. Idempotent: erasing again finds nothing left to erase."""
    now = now or timezone.now()
    erased: list[str] = []
    keys = 0
    # The carts are found before the transaction, unlocked: a cart given the address meanwhile
    # is found by the next pass (one more, usually finding nothing).
    for _ in range(ERASE_PASSES):
        emails = _emails(store_id, shopper)
        found = _carts(store_id, shopper, emails, idle_before)
        carts = [c.token for c in found if c.email or c.phone]
        subjects = sorted({pii.subject_of(e) for e in emails})
        ids = (
            _key_ids_used(store_id, [c.token for c in found if c.shopper_id])
            if shopper.shopper_id
            else []
        )
        with transaction.atomic():
            # The locks in the order every append takes them: the carts, then the shoppers'
            # keys, then (appending) the store's log head. Destroying the keys after the append
            # would hold the head while waiting for a key an append of another of the shopper's
            # carts holds while it waits for the head: a deadlock.
            _carts_lock(store_id, carts)
            destroyed = _keys_destroy(
                store_id, now=now, subjects=subjects, ids=ids, idle_before=idle_before
            )
            if carts:
                services.events_append(
                    store_id=store_id,
                    events=[
                        services.NewEvent(
                            event_id=uuid.uuid4(),
                            cart=token,
                            type=event_types.SHOPPER_ERASED,
                            schema_version=1,
                            occurred_at=now,
                            data={"reason": reason},
                        )
                        for token in carts
                    ],
                    source=SOURCE,
                    now=now,
                )
        erased += carts
        keys += destroyed
        if not carts and not destroyed:
            break
    log.info(
        "store %s: shopper erased (%s): %d carts, %d keys", store_id, reason, len(erased), keys
    )
    return Erasure(carts=erased, keys=keys)


# Export ------------------------------------------------------------------------------------------

# Sections other apps add to an export: (store id, the shopper's carts, their shopper keys) ->
# JSON-serialisable data. campaigns adds its steps, codes and suppressions.
ExportSection = Callable[[int, Sequence[str], Sequence[str]], Any]
_export_sections: dict[str, ExportSection] = {}


def export_section_register(name: str, section: ExportSection) -> None:
    """Add a section to every shopper export (an app's data about the shopper's carts)."""
    _export_sections[name] = section


_CART_FIELDS = (
    "token",
    "status",
    "currency",
    "items",
    "value",
    "shopper_id",
    "email",
    "phone",
    "consent",
    "timezone",
    "locale",
    "order_id",
    "order_total",
    "refunded",
    "started_at",
    "last_activity_at",
    "converted_at",
)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def shopper_export(*, store_id: int, shopper: Shopper, now: datetime | None = None) -> dict:
    """Everything the store holds about the shopper (an access request), JSON-serialisable:
    their carts with their events (personal fields in clear, None where erased), and what other
    apps registered (export_section_register)."""
    emails = _emails(store_id, shopper)
    carts = _carts(store_id, shopper, emails)
    tokens = [c.token for c in carts]
    events = list(
        CartEvent.objects.filter(store_id=store_id, cart__in=tokens).order_by("cart", "version")
    )
    pii.events_reveal(events)
    by_cart: dict[str, list[dict[str, Any]]] = {t: [] for t in tokens}
    for event in events:
        by_cart[event.cart].append(
            {
                "id": str(event.event_id),
                "type": event.type,
                "version": event.version,
                "occurred_at": _iso(event.occurred_at),
                "recorded_at": _iso(event.recorded_at),
                "data": event_types.upcast(event.type, event.schema_version, event.data),
                "shopper": event.shopper,
                "source": event.source,
            }
        )
    shopper_keys = sorted(
        {
            key
            for c in carts
            if (key := identity.cart_shopper_key(shopper_id=c.shopper_id, email=c.email))
        }
        | {f"email:{identity.email_digest(e)}" for e in emails}
        | ({f"id:{shopper.shopper_id}"} if shopper.shopper_id else set())
    )
    export: dict[str, Any] = {
        "store": store_id,
        "shopper": {"email": shopper.email.lower() or None, "id": shopper.shopper_id or None},
        "generated_at": _iso(now or timezone.now()),
        "carts": [
            {
                **{name: _iso(getattr(c, name)) for name in _CART_FIELDS},
                "events": by_cart[c.token],
            }
            for c in carts
        ],
    }
    for name, section in _export_sections.items():
        export[name] = section(store_id, tokens, shopper_keys)
    return export


# Retention ---------------------------------------------------------------------------------------

# Shoppers whose every cart has been idle (by the server's clock) since the cutoff.
_IDLE_EMAILS = """
    SELECT lower(email) FROM carts_cartstate
    WHERE store_id = %s AND email <> ''
    GROUP BY lower(email)
    HAVING max(COALESCE(seen_at, last_activity_at, started_at)) < %s
    LIMIT %s
"""
_LIVE_EMAILS = (
    "SELECT DISTINCT lower(email) FROM carts_cartstate WHERE store_id = %s AND email <> ''"
)
_IDLE_KEYS = """
    SELECT subject FROM carts_shopperkey
    WHERE store_id = %s AND erased_at IS NULL AND last_seen_at < %s
"""


def store_retention_apply(*, store: Store, now: datetime, batch: int = 500) -> int:
    """Erase the store's shoppers idle for longer than its ``pii_retention_days``: those whose
    carts have all been idle since, and keys no cart's contact names any more. Returns shoppers
    erased (by address) plus orphan keys destroyed."""
    if store.pii_retention_days is None:
        return 0
    cutoff = now - timedelta(days=min(max(store.pii_retention_days, 1), MAX_RETENTION_DAYS))
    erased = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(_IDLE_EMAILS, [store.pk, cutoff, batch])
            emails = [row[0] for row in cursor.fetchall()]
        progress = 0
        for email in emails:
            done = shopper_erase(
                store_id=store.pk,
                shopper=Shopper(email=email),
                reason=RETENTION,
                now=now,
                idle_before=cutoff,
            )
            progress += len(done.carts)
        erased += len(emails)
        if len(emails) < batch or not progress:
            break
    # Keys idle as long whose address no cart shows any more (it was replaced by another).
    with connection.cursor() as cursor:
        cursor.execute(_LIVE_EMAILS, [store.pk])
        live = {pii.subject_of(row[0]) for row in cursor.fetchall()}
        cursor.execute(_IDLE_KEYS, [store.pk, cutoff])
        orphans = sorted(row[0] for row in cursor.fetchall() if row[0] not in live)
    erased += _keys_destroy(store.pk, now=now, subjects=orphans, idle_before=cutoff)
    return erased


def retention_sweep(*, now: datetime | None = None) -> int:
    """Apply every store's retention setting (the periodic task). Returns shoppers erased."""
    now = now or timezone.now()
    total = 0
    for store in Store.objects.filter(pii_retention_days__isnull=False).order_by("pk"):
        try:
            total += store_retention_apply(store=store, now=now)
        except DatabaseError:
            raise  # the database, not the store: the next sweep tries again
        except Exception:  # one store's failure does not stop the others'
            log.exception("store %s: retention sweep failed", store.pk)
    return total
