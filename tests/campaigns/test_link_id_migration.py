"""Migration 0005: every step that existed before it gets a random link_id of its own."""

from __future__ import annotations

import uuid

from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from campaigns.models import Step

BEFORE = ("campaigns", "0004_campaign_enrolled_through")
AFTER = ("campaigns", "0005_step_link_id")


def _migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def test_existing_steps_get_distinct_random_link_ids(db, store, shop_cart, campaign_step):
    steps = [campaign_step(shop_cart(store.pk, f"cart-{i}")) for i in range(3)]
    # (inside the test's transaction: PostgreSQL rolls the schema changes back with it; deferred
    # foreign-key checks first, as ALTER TABLE refuses a table with pending ones)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    _migrate(BEFORE)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM campaigns_step")
        assert cursor.fetchone() == (3,)

    _migrate(AFTER)

    link_ids = list(Step.objects.order_by("pk").values_list("link_id", flat=True))
    assert len(link_ids) == 3
    assert len(set(link_ids)) == 3
    assert all(isinstance(v, uuid.UUID) and v.version == 4 for v in link_ids)
    assert link_ids != [s.link_id for s in steps]  # new ones, not the ones the rows had
