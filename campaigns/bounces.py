"""What email providers report about sent campaign emails: bounces and spam complaints.

Providers post them to anymail's tracking webhooks (campaigns/webhooks.py), which hand each
normalised event here as a ``ProviderReport``. The report names its step by the metadata the
message carried (``campaign_link``: the step's ``link_id``, campaigns/emails.py) or else by our
Message-ID (``<step-<id>.<store>@host>``), which providers that relay SMTP report back.

- A hard bounce suppresses the shopper in the store (``Suppression`` BOUNCED, both of the cart's
  shopper keys, as an unsubscribe does): every campaign's email steps to them are skipped from
  now on, the open ones at once, with ``campaign.email_bounced`` on the step's cart.
- A complaint does the same with COMPLAINED and ``campaign.email_complained``.
- A soft bounce (a full mailbox, a greylisting server: the provider retries or gives up on this
  message only) is recorded as ``campaign.email_bounced`` with ``"permanent": false`` and
  suppresses nothing.

Providers retry webhooks: a report is recorded once (the event's id is derived from the
provider's event id, and a second suppression of the same kind stores nothing).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from campaigns import emails, events, rules, tracking
from campaigns.models import Step, Suppression
from carts import identity
from carts.errors import EventIdConflict
from carts.services import events_append
from carts.sources import Source

# anymail's normalised event types (anymail.signals.EventType) that concern us.
BOUNCED = "bounced"
COMPLAINED = "complained"

HARD = "hard"
SOFT = "soft"


@dataclass(frozen=True, slots=True)
class ProviderReport:
    esp: str  # anymail's name of the provider ("Postmark")
    event_type: str  # anymail's normalised type ("bounced", "complained", "delivered", ...)
    event_id: str = ""  # the provider's id of this event, when it has one
    message_id: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    mta_response: str = ""
    raw: Any = None  # the provider's own event, as posted


@dataclass(frozen=True, slots=True)
class Recorded:
    outcome: str  # ignored | unknown_step | recorded | suppressed
    step_id: int | None = None


def bounce_severity(report: ProviderReport) -> str:
    """HARD or SOFT for a bounce. anymail files some soft bounces under "bounced" too
    (Postmark's SoftBounce, SES's Transient, SendGrid's blocked): each provider's own event says
    which; any other "bounced" is hard (their "deferred" is the soft kind)."""
    raw = report.raw if isinstance(report.raw, Mapping) else {}
    esp = report.esp.lower()
    if esp == "postmark":
        return HARD if raw.get("Type") == "HardBounce" or raw.get("Inactive") is True else SOFT
    if esp == "amazon ses":
        bounce = raw.get("bounce")
        kind = bounce.get("bounceType") if isinstance(bounce, Mapping) else None
        return SOFT if kind in ("Transient", "Undetermined") else HARD
    if esp == "sendgrid":
        return SOFT if raw.get("type") == "blocked" else HARD
    return HARD


_OUR_MESSAGE_ID = re.compile(r"^<?step-(\d+)\.(\d+)@[^>]*>?$")


def report_step(report: ProviderReport) -> Step | None:
    """The step whose message the report is about, or None when it names none of ours."""
    link = (
        report.metadata.get(emails.METADATA_KEY) if isinstance(report.metadata, Mapping) else None
    )
    if link:
        try:
            link_id = uuid.UUID(str(link))
        except ValueError:
            return None
        return Step.objects.select_related("tier").filter(link_id=link_id).first()
    matched = _OUR_MESSAGE_ID.match(report.message_id.strip())
    if matched is None:
        return None
    step_id, store_id = int(matched[1]), int(matched[2])
    return Step.objects.select_related("tier").filter(pk=step_id, store_id=store_id).first()


def provider_report_record(*, report: ProviderReport, now: datetime) -> Recorded:
    """Record a provider's bounce or complaint about one of our steps' messages (module
    docstring); other reports and reports about messages not ours store nothing. Idempotent."""
    if report.event_type not in (BOUNCED, COMPLAINED):
        return Recorded("ignored")
    step = report_step(report)
    if step is None:
        return Recorded("unknown_step")
    data: dict[str, Any] = {
        "provider": report.esp,
        # Providers' texts name the recipient: stored without it (carts.identity).
        "description": identity.addresses_redacted(report.description)[:200],
        "response": identity.addresses_redacted(report.mta_response)[:500],
    }
    key = f"{report.esp}:{report.event_id or report.message_id}:{report.event_type}"
    if report.event_type == COMPLAINED:
        event_type, kind = events.EMAIL_COMPLAINED, Suppression.Kind.COMPLAINED
    else:
        data["permanent"] = bounce_severity(report) == HARD
        event_type, kind = events.EMAIL_BOUNCED, Suppression.Kind.BOUNCED
        if not data["permanent"]:
            _append_once(step, event_type, data, key, now)
            return Recorded("recorded", step.pk)
    with transaction.atomic():
        suppressed = tracking.shopper_suppress(
            step_id=step.pk,
            kind=kind,
            event_type=event_type,
            reason=str(kind),  # rules.BOUNCED, rules.COMPLAINED
            channels=rules.EMAIL_CHANNELS,
            now=now,
            data=data,
            key=key,
        )
    if not suppressed:  # suppressed before (another message bounced): the report still counts
        _append_once(step, event_type, data, key, now)
        return Recorded("recorded", step.pk)
    return Recorded("suppressed", step.pk)


def _append_once(
    step: Step, event_type: str, data: dict[str, Any], key: str, now: datetime
) -> None:
    event = events.campaign_event(
        cart=step.cart, type=event_type, data={**events.step_data(step), **data}, now=now, key=key
    )
    with contextlib.suppress(EventIdConflict):  # the provider's retry of a recorded report
        events_append(store_id=step.store_id, events=[event], source=Source.system("campaigns"))
