"""One step that cannot run fails alone: the rest of its batch is sent and committed, and nothing
already sent is sent again (security review 2, finding 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection

from campaigns import enrolment, steps
from campaigns.models import Coupon, Step, Tier
from carts.models import CartEvent
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned
from tests.conftest import item
from tests.log_sql import event_inject

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ACTIVATED = T - timedelta(days=1)
FAR_FUTURE = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)


def _enqueue(now: datetime, django_capture_on_commit_callbacks) -> list[list[int]]:
    published: list[list[int]] = []
    with django_capture_on_commit_callbacks(execute=True):
        steps.due_steps_enqueue(now=now, publish=published.append)
    return published


def _poison(store_id: int, token: str, at: datetime) -> None:
    """An item event dated ``at`` written with SQL, past every check of the append service (as
    an older version accepted it), and the cart's state moved to it, its server-time activity
    too (cart state is not immutable)."""
    version = CartEvent.objects.filter(store_id=store_id, cart=token).count() + 1
    event_inject(
        store_id, token, "cart.item_added", item(sku="SKU-1"), version=version, occurred_at=at
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE carts_cartstate SET last_activity_at = %s, seen_at = %s, version = version + 1"
            " WHERE store_id = %s AND token = %s",
            [at, at, store_id, token],
        )


def _failures(store_id: int, cart: str) -> list[dict]:
    return [
        e.data
        for e in CartEvent.objects.filter(
            store_id=store_id, cart=cart, type="campaign.step_failed"
        ).order_by("version")
    ]


def test_a_cart_active_past_the_calendar_fails_its_step_and_the_batch_commits_once(
    store, mailoutbox, django_capture_on_commit_callbacks
):
    # given two enrolled carts whose email steps (an hour after abandonment) fall in one batch,
    # the second one poisoned with an item event (and a last activity) at the end of the
    # calendar: its due time, 90 minutes later, is past it
    campaign_with_tiers(
        store.pk, activated_at=ACTIVATED, tiers=[{"channel": "email", "delay_minutes": 60}]
    )
    cart_abandoned(store.pk, at=T, token="a-bystander", email="bystander.one@example.com")
    cart_abandoned(store.pk, at=T, token="z-poison", email="poison@example.com")
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30)) == 2
    _poison(store.pk, "z-poison", FAR_FUTURE)
    run_at = T + timedelta(minutes=91)
    [batch] = _enqueue(run_at, django_capture_on_commit_callbacks)
    assert len(batch) == 2

    # when the batch runs
    result = steps.steps_execute(step_ids=batch, now=lambda: run_at)

    # then the bystander's email went out once, the poisoned step failed for good, and both
    # outcomes were committed
    assert result == {"sent": 1, "failed": 1}
    assert [m.to for m in mailoutbox] == [["bystander.one@example.com"]]
    outcomes = {
        s.cart: (s.status, s.reason, s.finished_at, s.attempts)
        for s in Step.objects.filter(store=store)
    }
    assert outcomes == {
        "a-bystander": ("sent", "eligible", run_at, 0),
        "z-poison": ("failed", "bad_time", run_at, 1),
    }
    [failure] = _failures(store.pk, "z-poison")
    assert failure["final"] is True
    assert failure["reason"] == "bad_time"
    assert failure["attempt"] == 1
    assert failure["error"] == (
        "bad_time: a time beyond the calendar (last activity seen 9999-12-31 23:00:00+00:00)"
    )

    # and running the same batch again, or handing out what is left, sends nothing more
    assert steps.steps_execute(step_ids=batch, now=lambda: run_at + timedelta(minutes=6)) == {}
    later = run_at + timedelta(hours=1)
    assert _enqueue(later, django_capture_on_commit_callbacks) == []
    assert len(mailoutbox) == 1
    assert len(_failures(store.pk, "z-poison")) == 1


def test_a_step_that_raises_is_undone_alone_and_failed_with_its_error(
    store, mailoutbox, django_capture_on_commit_callbacks
):
    # given three carts whose discount steps fall in one batch; the middle one's tier has a
    # template that cannot render (stored past the form's check, as an older version allowed)
    discount = {
        "channel": "discount",
        "offer_kind": "percent_discount",
        "discount_min": 10,
        "discount_max": 10,
    }
    campaign_with_tiers(
        store.pk, activated_at=ACTIVATED, only_skus=["GOOD"], tiers=[dict(discount)]
    )
    broken = campaign_with_tiers(
        store.pk, activated_at=ACTIVATED, only_skus=["BAD"], tiers=[dict(discount)]
    )
    Tier.objects.filter(campaign=broken).update(body_template="{% if %}Come back")
    for token, sku in (("a-good", "GOOD"), ("b-broken", "BAD"), ("c-good", "GOOD")):
        cart_abandoned(store.pk, at=T, token=token, sku=sku, email=f"{token}@example.com")
    assert enrolment.abandoned_carts_enroll(now=T + timedelta(minutes=30)) == 3
    run_at = T + timedelta(minutes=31)
    [batch] = _enqueue(run_at, django_capture_on_commit_callbacks)

    # when the batch runs
    result = steps.steps_execute(step_ids=batch, now=lambda: run_at)

    # then the steps before and after it are sent, with their codes; the broken one failed for
    # good with its error, and its code (issued before the template broke) was undone with it
    assert result == {"sent": 2, "failed": 1}
    assert sorted(m.to[0] for m in mailoutbox) == ["a-good@example.com", "c-good@example.com"]
    assert dict(Step.objects.filter(store=store).values_list("cart", "status")) == {
        "a-good": "sent",
        "b-broken": "failed",
        "c-good": "sent",
    }
    assert Step.objects.get(cart="b-broken").reason == "error"
    assert sorted(Coupon.objects.filter(store=store).values_list("cart", flat=True)) == [
        "a-good",
        "c-good",
    ]
    kinds = set(
        CartEvent.objects.filter(store=store, cart="b-broken").values_list("type", flat=True)
    )
    assert "campaign.coupon_issued" not in kinds
    [failure] = _failures(store.pk, "b-broken")
    assert failure["final"] is True
    assert failure["reason"] == "error"
    assert failure["error"].startswith("TemplateSyntaxError: ")

    # and nothing is sent again
    assert steps.steps_execute(step_ids=batch, now=lambda: run_at + timedelta(minutes=6)) == {}
    assert _enqueue(run_at + timedelta(hours=1), django_capture_on_commit_callbacks) == []
    assert len(mailoutbox) == 2
