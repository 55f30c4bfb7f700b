"""The ``dashboard`` projector: folds the event log into CartFact and DailyCount.

``apply(events)`` is set-based: one query loads the batch's carts, one pass in Python folds every
event into them, then two statements write the carts and the counters back. Counters come in two
kinds: event counters (a step sent, an offer shown: +1 on the event's local day) and cart
counters, which are a pure function of a cart's row (``contributions``): a batch adds the
difference between a cart's contributions after and before it, so a refund arriving weeks later
moves the recovered revenue of the order's day, and counters always equal what the rows say.

Local days and hours are the store's (``CampaignSettings.timezone``, UTC without one), computed
when a time is set and stored with it. A campaign's attribution window and tier delays are read
per batch; changing them (or a store's zone) applies to carts the projector touches afterwards:
rebuild to apply them to the past.

An event whose times or amounts the rows cannot hold raises ``Unrepresentable`` from the fold
(the projector runner dead-letters it: carts/projectors.py). Counter amounts are numeric, so no
sum over carts can overflow.
"""

from __future__ import annotations

import gc
import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from django.db import connection

from carts import event_types
from carts.models import CartEvent
from dashboards.projection.counters import Counters, contributions
from dashboards.projection.fold import amounts_check, derive, fold, offer_campaigns
from dashboards.projection.row import COLUMNS, JSON_COLUMNS, Fact, Unrepresentable, zone_of

__all__ = [
    "COLUMNS",
    "NAME",
    "Fact",
    "Unrepresentable",
    "apply",
    "contributions",
    "reset",
    "store_zones",
]

NAME = "dashboard"


def store_zones(store_ids: Iterable[int]) -> dict[int, ZoneInfo]:
    """Each store's zone (one query)."""
    ids = sorted(set(store_ids))
    zones = dict.fromkeys(ids, ZoneInfo("UTC"))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT store_id, timezone FROM campaigns_campaignsettings WHERE store_id = ANY(%s)",
            [ids],
        )
        for store_id, name in cursor.fetchall():
            zones[store_id] = zone_of(name)
    return zones


# -- storage -----------------------------------------------------------------------------------

_LOAD = f"SELECT {', '.join(COLUMNS)} FROM dashboards_cartfact WHERE cart = ANY(%b::text[])"

# Writes go through COPY (binary) into session-local staging tables, then one upsert each: COPY
# formats rows in C, where binding 60 arrays ran psycopg's array dumper in Python (a fifth of
# apply()). The staging tables are emptied before each use: a rebuild is one transaction.
_PG_TYPES = {"int": "int4", "jsonb": "text"}
_FACT_TYPES = [_PG_TYPES.get(t, t) for t in COLUMNS.values()]
_COUNTER_COLUMNS = {
    "store_id": "int4",
    "metric": "text",
    "hourly": "bool",
    "day": "date",
    "hour": "int2",
    "campaign_id": "int4",
    "tier_id": "int4",
    "channel": "text",
    "key": "text",
    "currency": "text",
    "count": "int8",
    "amount": "numeric",
    "squares": "numeric",
}
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS dashboards_facts_in ("
    + ", ".join(f"{n} {t}" for n, t in zip(COLUMNS, _FACT_TYPES, strict=True))
    + "); CREATE TEMP TABLE IF NOT EXISTS dashboards_counts_in ("
    + ", ".join(f"{n} {t}" for n, t in _COUNTER_COLUMNS.items())
    + "); TRUNCATE dashboards_facts_in, dashboards_counts_in"
)
_UPSERT_FACTS = (
    f"INSERT INTO dashboards_cartfact ({', '.join(COLUMNS)}) "
    f"SELECT {', '.join(f'{n}::jsonb' if n in JSON_COLUMNS else n for n in COLUMNS)} "
    "FROM dashboards_facts_in "
    "ON CONFLICT (cart, store_id) DO UPDATE SET "
    + ", ".join(f"{n} = EXCLUDED.{n}" for n in COLUMNS if n not in ("store_id", "cart"))
)
_UPSERT_COUNTS = f"""
    INSERT INTO dashboards_dailycount AS d ({", ".join(_COUNTER_COLUMNS)})
    SELECT {", ".join(_COUNTER_COLUMNS)} FROM dashboards_counts_in
    ON CONFLICT (store_id, hourly, metric, day, hour, campaign_id, tier_id, channel, key, currency)
    DO UPDATE SET count = d.count + EXCLUDED.count, amount = d.amount + EXCLUDED.amount,
                  squares = d.squares + EXCLUDED.squares
"""


def _campaign_windows(campaign_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    ids = sorted(set(campaign_ids))
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.id, c.attribution_hours, COALESCE(MAX(t.delay_minutes), 0)
              FROM campaigns_campaign c LEFT JOIN campaigns_tier t ON t.campaign_id = c.id
             WHERE c.id = ANY(%s) GROUP BY c.id
            """,
            [ids],
        )
        return {k: (hours, delay) for k, hours, delay in cursor.fetchall()}


def _load(keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Fact]:
    wanted = set(keys)
    facts: dict[tuple[int, str], Fact] = {}
    connection.ensure_connection()
    # Binary results: times and JSON load in C (Django's cursor parses text with expressions).
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_LOAD, [sorted({cart for _, cart in wanted})], binary=True)
        for row in cursor.fetchall():
            key = (row[0], row[1])
            if key in wanted:  # the same token in another store is another cart
                facts[key] = Fact.from_row(row)
    return facts


_ROW = operator.attrgetter(*COLUMNS)
_JSON_AT = [i for i, name in enumerate(COLUMNS) if name in JSON_COLUMNS]
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per value


def _json(value: Any) -> str | None:
    if value is None:
        return None
    if not value:  # most carts have no touches, offers or clicks
        return "[]" if isinstance(value, list) else "{}"
    return _ENCODE(value)


def _fact_rows(facts: Sequence[Fact]) -> Iterable[list[Any]]:
    for fact in facts:
        row = list(_ROW(fact))
        for i in _JSON_AT:
            row[i] = _json(row[i])
        yield row


def _write(facts: Sequence[Fact], counters: Counters) -> None:
    counts = [(*k, *v) for k, v in counters.rows.items() if v[0] or v[1] or v[2]]
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_STAGING)
        if facts:
            with cursor.copy("COPY dashboards_facts_in FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_FACT_TYPES)
                for row in _fact_rows(facts):
                    copy.write_row(row)
            cursor.execute(_UPSERT_FACTS)
        if counts:
            with cursor.copy("COPY dashboards_counts_in FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(list(_COUNTER_COLUMNS.values()))
                for counter in counts:
                    copy.write_row(counter)
            cursor.execute(_UPSERT_COUNTS)


def apply(events: Sequence[CartEvent]) -> None:
    """Fold a batch of events (in position order) into CartFact and DailyCount."""
    if not events:
        return
    # The fold allocates many small lists and dicts and makes no reference cycles: the cyclic
    # collector, triggered by allocations, would only rescan the batch's events again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _apply(events)
    finally:
        if collecting:
            gc.enable()


def _apply(events: Sequence[CartEvent]) -> None:
    keys = {(e.store_id, e.cart) for e in events}
    zones = store_zones(store for store, _ in keys)
    facts = _load(keys)
    counters = Counters()
    for key, fact in facts.items():
        counters.merge(key[0], contributions(fact), -1)
    registry = event_types.REGISTRY
    for event in events:
        key = (event.store_id, event.cart)
        fact = facts.get(key) or facts.setdefault(key, Fact(event.store_id, event.cart))
        data = event.data if isinstance(event.data, Mapping) else {}
        known = registry.get(event.type)
        if known is not None and event.schema_version < known.version:
            data = event_types.upcast(event.type, event.schema_version, dict(data))
        fold(fact, event, data, zones[event.store_id], counters)
        amounts_check(fact)
    windows = _campaign_windows(
        {f.campaign_id for f in facts.values() if f.campaign_id}.union(
            *(offer_campaigns(f) for f in facts.values() if f.offers)
        )
    )
    for key, fact in facts.items():
        derive(fact, windows, zones[key[0]])
        counters.merge(key[0], contributions(fact), +1)
    _write(list(facts.values()), counters)


def reset() -> None:
    """Empty both read models (readers keep the old rows until the rebuild commits)."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dashboards_dailycount")
        cursor.execute("DELETE FROM dashboards_cartfact")
