"""The ``campaign.*`` event types: every outcome of running a campaign is a fact in the log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from carts import event_types
from carts.services import NewEvent

if TYPE_CHECKING:
    from campaigns.models import Step

ENROLLED = "campaign.enrolled"
STEP_SENT = "campaign.step_sent"
STEP_SKIPPED = "campaign.step_skipped"
STEP_DEFERRED = "campaign.step_deferred"
STEP_SUPPRESSED = "campaign.step_suppressed"  # holdout: recorded, nothing sent
STEP_CANCELLED = "campaign.step_cancelled"  # the cart's order came first
STEP_FAILED = "campaign.step_failed"
# A campaign.step_sent's reason when its message was in flight while the cart's order committed
# (recorded after the order): it reached the shopper, but cannot have caused the order, so it is
# never credited with it (campaigns/attribution.py, dashboards/projection/fold.py).
IN_FLIGHT_AT_ORDER = "in_flight_at_order"
COUPON_ISSUED = "campaign.coupon_issued"
COUPON_REDEEMED = "campaign.coupon_redeemed"
EMAIL_OPENED = "campaign.email_opened"
LINK_CLICKED = "campaign.link_clicked"
UNSUBSCRIBED = "campaign.unsubscribed"
REMINDERS_DECLINED = "campaign.reminders_declined"
EMAIL_BOUNCED = "campaign.email_bounced"  # the provider reported a bounce (hard or soft)
EMAIL_COMPLAINED = "campaign.email_complained"  # the recipient marked it as spam

TYPES = (
    ENROLLED,
    STEP_SENT,
    STEP_SKIPPED,
    STEP_DEFERRED,
    STEP_SUPPRESSED,
    STEP_CANCELLED,
    STEP_FAILED,
    COUPON_ISSUED,
    COUPON_REDEEMED,
    EMAIL_OPENED,
    LINK_CLICKED,
    UNSUBSCRIBED,
    REMINDERS_DECLINED,
    EMAIL_BOUNCED,
    EMAIL_COMPLAINED,
)

_NAMESPACE = uuid.UUID("5f3c2a8e-1b7d-4c9e-a0f1-7e2d4b6c8a91")


def event_types_register() -> None:
    for name in TYPES:
        event_types.register_system_type(event_types.EventType(name, 1, None))


def campaign_event(
    *, cart: str, type: str, data: dict[str, Any], now: datetime, key: str | None = None
) -> NewEvent:
    """A campaign event for ``cart``. With ``key``, its id is derived from it, so appending the
    same fact twice (a duplicate task delivery) stores it once."""
    event_id = uuid.uuid5(_NAMESPACE, f"{type}:{key}") if key is not None else uuid.uuid4()
    return NewEvent(
        event_id=event_id, cart=cart, type=type, schema_version=1, occurred_at=now, data=data
    )


def step_data(step: Step, reason: str | None = None) -> dict[str, Any]:
    """What every campaign.* event about a step says of it (and why, when there is a reason)."""
    data: dict[str, Any] = {
        "step": step.pk,
        "campaign": step.tier.campaign_id,
        "tier": step.tier_id,
        "position": step.tier.position,
        "channel": step.channel,
    }
    if reason is not None:
        data["reason"] = reason
    return data
