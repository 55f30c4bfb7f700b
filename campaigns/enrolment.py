"""Enrolment: carts idle past an active campaign's inactivity that match its definition get one
``Enrollment`` and one ``Step`` per tier, due at abandonment plus the tier's delay (the scheduler
calls ``abandoned_carts_enroll`` every second). Due times live in PostgreSQL, never in Celery
countdowns (PITFALLS).

Idleness is measured on the server's clock (docs/campaigns.md, "Time"): a cart is abandoned
``inactivity`` after the server last recorded shopper activity on it (``CartState.seen_at``),
whatever the events' own ``occurred_at`` say, so late, replayed and clock-skewed events are
enrolled once, as soon as they qualify. A cart whose last activity (``last_activity_at``, clamped
to ``seen_at`` for a clock that runs ahead) is older than the campaign's ``max_age_days`` at
enrolment is enrolled with every step skipped (``too_old``), never contacted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction

from campaigns import clock, events, rules
from campaigns.models import Campaign, Enrollment, Step, Tier
from carts.identity import cart_shopper_key
from carts.services import events_append
from carts.sources import Source

log = logging.getLogger(__name__)

# Enrolment rescans this far (server time) behind its high-water mark: for an append whose
# transaction started (its recorded_at) before the mark but committed after the scan, and for a
# database clock (recorded_at) a little behind this process's.
ENROLL_OVERLAP = timedelta(minutes=5)

TOO_OLD = "too_old"  # the skipped steps' reason: last activity older than max_age_days


_CANDIDATES = """
    SELECT c.token, c.shopper_id, c.email, c.score, c.value, c.currency, c.seen_at,
           c.last_activity_at
    FROM carts_cartstate c
    WHERE c.store_id = %(store)s AND c.status IN ('active', 'checkout') AND c.item_count > 0
      AND c.seen_at <= %(idle_since)s AND c.seen_at > %(since)s
      AND c.value >= %(min_value)s
      AND (%(min_score)s <= 0 OR c.score >= %(min_score)s)
      AND (%(no_filter)s OR EXISTS (
            SELECT 1 FROM jsonb_array_elements(c.items) AS i
            WHERE i->>'sku' = ANY(%(skus)s) OR i->>'category' = ANY(%(categories)s)))
      AND NOT EXISTS (
            SELECT 1 FROM campaigns_enrollment e WHERE e.store_id = c.store_id AND e.cart = c.token)
    ORDER BY c.seen_at
    LIMIT %(limit)s
"""


def abandoned_carts_enroll(*, now: datetime, limit: int = 1000) -> int:
    """Enrol carts that became abandoned under an active campaign; schedule their tiers.

    A cart joins at most one campaign (the highest priority whose definition it meets), once;
    only carts abandoned after the campaign was activated (or created) join it. ``now`` is
    campaign time (campaigns/clock.py). Returns carts enrolled (too old ones included: they are
    recorded, with their steps skipped)."""
    enrolled = 0
    campaigns = (
        Campaign.objects.filter(active=True)
        .prefetch_related("tiers")
        .order_by("store_id", "-priority", "id")
    )
    for campaign in campaigns:
        tiers = sorted(campaign.tiers.all(), key=lambda t: t.position)
        if not tiers:
            continue
        try:
            enrolled += _enroll(campaign, tiers, now=now, limit=max(limit - enrolled, 0))
        except Exception:
            # One campaign that cannot be enrolled (a bug, data no rule foresaw) must not stop
            # the others, store after store, turn after turn: logged, and retried next turn.
            log.exception("enrolling campaign %s failed; the other campaigns go on", campaign.pk)
            continue
        if enrolled >= limit:
            break
    return enrolled


def _enroll(campaign: Campaign, tiers: list[Tier], *, now: datetime, limit: int) -> int:
    if limit <= 0:
        return 0
    started = campaign.activated_at or campaign.created_at
    inactivity = timedelta(minutes=campaign.inactivity_minutes)
    # The scan is on the server's clock (seen_at); the campaign's times are campaign time.
    since = clock.server(started - inactivity)
    if campaign.enrolled_through is not None:
        # Only carts recorded idle since the last turn (and a margin): the scan stays the same
        # size however long the store's history grows, and a late event is recorded late, so
        # it is inside the next scan whatever its occurred_at says.
        since = max(since, campaign.enrolled_through - ENROLL_OVERLAP)
    params = {
        "store": campaign.store_id,
        "idle_since": clock.server(now - inactivity),
        "since": since,
        "min_value": campaign.min_cart_value,
        "min_score": campaign.min_score,
        "no_filter": not campaign.only_skus and not campaign.only_categories,
        "skus": [str(s) for s in campaign.only_skus],
        "categories": [str(c) for c in campaign.only_categories],
        "limit": limit,
    }
    try:
        return _enroll_batch(
            campaign,
            tiers,
            params,
            inactivity=inactivity,
            max_age=timedelta(days=campaign.max_age_days),
            now=now,
        )
    except IntegrityError:
        log.info("carts of campaign %s were enrolled concurrently; retrying next turn", campaign.pk)
        return 0


def _enroll_batch(
    campaign: Campaign,
    tiers: list[Tier],
    params: dict[str, Any],
    *,
    inactivity: timedelta,
    max_age: timedelta,
    now: datetime,
) -> int:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_CANDIDATES, params)
            rows = cursor.fetchall()
        # Considered up to here (server time): everything idle long enough, or the last row of
        # a full batch.
        through = rows[-1][6] if len(rows) >= params["limit"] else params["idle_since"]
        Campaign.objects.filter(pk=campaign.pk).update(enrolled_through=through)
        if not rows:
            return 0
        enrollments = []
        too_old: set[str] = set()
        for token, shopper_id, email, score, value, currency, seen, last_activity in rows:
            seen_at = clock.at(seen)
            # The shopper's clock, but never ahead of the server's.
            last = seen_at if last_activity is None else min(last_activity, seen_at)
            if now - last > max_age:
                too_old.add(token)
            shopper = cart_shopper_key(shopper_id=shopper_id, email=email) or f"cart:{token}"
            enrollments.append(
                Enrollment(
                    store_id=campaign.store_id,
                    cart=token,
                    campaign=campaign,
                    shopper=shopper,
                    holdout=rules.in_holdout(
                        campaign_id=campaign.pk, shopper=shopper, share=campaign.holdout_share
                    ),
                    score=score,
                    cart_value=value,
                    currency=currency,
                    abandoned_at=seen_at + inactivity,
                )
            )
        # A cart enrolled meanwhile (a second scheduler) fails the batch: the next turn redoes it.
        created = Enrollment.objects.bulk_create(enrollments)
        steps = [
            Step(
                store_id=e.store_id,
                cart=e.cart,
                enrollment=e,
                tier=tier,
                channel=tier.channel,
                shopper=e.shopper,
                due_at=max(e.abandoned_at + timedelta(minutes=tier.delay_minutes), now),
            )
            if e.cart not in too_old
            # Too old: recorded, never run (only pending steps are handed out).
            else Step(
                store_id=e.store_id,
                cart=e.cart,
                enrollment=e,
                tier=tier,
                channel=tier.channel,
                shopper=e.shopper,
                due_at=now,
                status=Step.Status.SKIPPED,
                reason=TOO_OLD,
                finished_at=now,
            )
            for e in created
            for tier in tiers
        ]
        Step.objects.bulk_create(steps)
        by_cart: dict[str, list[Step]] = defaultdict(list)
        for step in steps:
            by_cart[step.cart].append(step)
        skipped = [
            events.campaign_event(
                cart=s.cart,
                type=events.STEP_SKIPPED,
                now=now,
                key=f"{s.pk}:run:{Step.Status.SKIPPED}",
                data=events.step_data(s, TOO_OLD),
            )
            for s in steps
            if s.status == Step.Status.SKIPPED
        ]
        events_append(
            source=Source.system("campaigns"),
            store_id=campaign.store_id,
            events=[
                events.campaign_event(
                    cart=e.cart,
                    type=events.ENROLLED,
                    now=now,
                    key=f"{e.pk}",
                    data={
                        "campaign": campaign.pk,
                        "holdout": e.holdout,
                        "score": e.score,
                        "value": e.cart_value,
                        "abandoned_at": e.abandoned_at.isoformat(),
                        **({"skipped": TOO_OLD} if e.cart in too_old else {}),
                        "steps": [
                            {
                                "step": s.pk,
                                "tier": s.tier_id,
                                "channel": s.channel,
                                "due_at": s.due_at.isoformat(),
                            }
                            for s in by_cart[e.cart]
                        ],
                    },
                )
                for e in created
            ]
            + skipped,
        )
    return len(created)
