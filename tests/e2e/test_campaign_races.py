"""An order and a due email step racing, 1,000 times, with real commits and a real SMTP server:
nothing is ever sent after the order commits."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from campaigns import enrolment, steps
from campaigns.models import Step
from carts import services
from carts.models import CartEvent
from carts.sources import Source
from tests.campaigns.builders import campaign_with_tiers
from tests.conftest import item, new_event
from tests.smtp_sink import SmtpSink

RACES = 1000


def test_no_email_is_sent_after_the_order_commits_across_1000_randomised_races(
    committed_store, settings
):
    store, _ = committed_store
    now = timezone.now()
    campaign_with_tiers(
        store.pk,
        activated_at=now - timedelta(days=1),
        tiers=[{"channel": "email", "subject_template": "Come back"}],
        cart_cap=0,
    )
    tokens = [f"race-{store.pk}-{n}" for n in range(RACES)]
    for n, token in enumerate(tokens):
        services.events_append(
            source=Source.server("test"),
            store_id=store.pk,
            events=[
                new_event("cart.item_added", token, item(), at=now - timedelta(hours=2)),
                new_event(
                    "checkout.contact_captured",
                    token,
                    {"email": f"r{n}@example.com", "consent": {"email": True}},
                    at=now - timedelta(hours=2),
                ),
            ],
        )
    assert enrolment.abandoned_carts_enroll(now=now, limit=RACES) == RACES
    Step.objects.filter(store=store).update(status="enqueued", enqueued_at=now)
    step_of = dict(Step.objects.filter(store=store).values_list("cart", "id"))

    rng = random.Random(20261127)
    order_done: dict[str, float] = {}
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = sink.host, sink.port

        def run_step(barrier: threading.Barrier, token: str, delay: float) -> None:
            barrier.wait()
            time.sleep(delay)
            steps.steps_execute(step_ids=[step_of[token]], now=timezone.now)

        def place_order(barrier: threading.Barrier, token: str, delay: float) -> None:
            barrier.wait()
            time.sleep(delay)
            services.events_append(
                source=Source.server("test"),
                store_id=store.pk,
                events=[
                    new_event(
                        "order.placed",
                        token,
                        {"order_id": f"o-{token}", "total": 1000, "currency": "EUR"},
                        at=timezone.now(),
                    )
                ],
            )
            order_done[token] = time.monotonic()  # the order has committed by now

        def close(barrier: threading.Barrier) -> None:
            barrier.wait()
            connection.close()

        with ThreadPoolExecutor(max_workers=2) as pool:
            for token in tokens:
                barrier = threading.Barrier(2)
                # Either side may start first, by up to 3 ms: both commit orders happen.
                futures = [
                    pool.submit(run_step, barrier, token, rng.uniform(0, 0.003)),
                    pool.submit(place_order, barrier, token, rng.uniform(0, 0.003)),
                ]
                for future in futures:
                    future.result(timeout=30)
            barrier = threading.Barrier(2)
            for future in [pool.submit(close, barrier), pool.submit(close, barrier)]:
                future.result(timeout=30)
        time.sleep(0.2)
        received = sink.received
        arrived = {r.rcpt_tos[0]: r.arrived_at for r in received}

    status = dict(Step.objects.filter(store=store).values_list("cart", "status"))
    versions: dict[tuple[str, str], int] = {
        (cart, type_): version
        for cart, type_, version in CartEvent.objects.filter(
            store_id=store.pk,
            type__in=["order.placed", "campaign.step_sent", "campaign.step_cancelled"],
        ).values_list("cart", "type", "version")
    }
    sent = [t for t in tokens if status[t] == "sent"]
    cancelled = [t for t in tokens if status[t] == "cancelled"]
    assert len(sent) + len(cancelled) == RACES
    # Both orders of commit happened often.
    assert len(sent) >= 50 and len(cancelled) >= 50, (len(sent), len(cancelled))
    # One message per sent step, none for a cancelled one.
    assert len(received) == len(sent)
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(
        f"r{tokens.index(t)}@example.com" for t in sent
    )
    for token in sent:
        address = f"r{tokens.index(token)}@example.com"
        # The message arrived before the order had committed...
        assert arrived[address] < order_done[token]
        # ...and the log orders the send before the order, in the cart's own stream.
        assert versions[(token, "campaign.step_sent")] < versions[(token, "order.placed")]
    for token in cancelled:
        assert versions[(token, "campaign.step_cancelled")] > versions[(token, "order.placed")]
