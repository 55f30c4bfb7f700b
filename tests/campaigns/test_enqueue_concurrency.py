"""Two schedulers handing out due steps at once (a takeover overlap): SKIP LOCKED gives each a
different share and together every step, once."""

from __future__ import annotations

import threading
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from campaigns import enrolment, steps
from campaigns.models import Step
from carts import services
from carts.sources import Source
from tests.campaigns.builders import campaign_with_tiers
from tests.conftest import item, new_event


def test_concurrent_enqueuers_hand_out_disjoint_steps_that_cover_them_all(committed_store):
    store, _ = committed_store
    now = timezone.now()
    campaign_with_tiers(store.pk, activated_at=now - timedelta(days=1))
    services.events_append(
        source=Source.server("test"),
        store_id=store.pk,
        events=[
            new_event("cart.item_added", f"q-{store.pk}-{n}", item(), at=now - timedelta(hours=2))
            for n in range(600)
        ],
        now=now - timedelta(hours=2),  # recorded two hours ago: abandoned by now
    )
    assert enrolment.abandoned_carts_enroll(now=now, limit=1000) == 600
    ids = set(Step.objects.filter(store=store).values_list("id", flat=True))

    handed: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def enqueue(slot: int) -> None:
        barrier.wait()
        try:
            for _ in range(40):  # small bites, so the two really interleave
                steps.due_steps_enqueue(now=now, limit=25, publish=handed[slot].extend)
        finally:
            connection.close()

    threads = [threading.Thread(target=enqueue, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    first, second = set(handed[0]), set(handed[1])
    assert len(handed[0]) == len(first) and len(handed[1]) == len(second)  # no repeats
    assert first.isdisjoint(second)
    assert first | second == ids
    assert first and second  # both took a share
    assert set(Step.objects.filter(store=store).values_list("status", flat=True)) == {"enqueued"}
