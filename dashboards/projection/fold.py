"""Folding one event into its cart's row, and what follows from the row and its campaign's
windows (``derive``). Pure: no ORM, no clock; the caller supplies the store's zone.

Total over what the log may hold: a time or an amount the row cannot represent raises
``Unrepresentable`` (the projector dead-letters the event), never an error deep in a later
computation or in the database."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from campaigns.events import IN_FLIGHT_AT_ORDER
from carts.sources import trusted
from dashboards import ABANDONMENT_WINDOW
from dashboards.projection.counters import (
    CLICKED,
    EXIT_INTENT,
    FAILED,
    KEY_CHARS,
    KEYED_BY_REASON,
    OFFER_ACCEPTED,
    OFFER_DECIDED,
    OFFER_DISMISSED,
    OFFER_NONE,
    OFFER_SHOWN,
    ONSITE,
    REACTIONS,
    SCHEDULED,
    SENT,
    STEP_METRICS,
    STEP_TERMINAL,
    Counters,
)
from dashboards.projection.row import (
    MAX_COUNT,
    Fact,
    Unrepresentable,
    amount_in_range,
    as_id,
    as_int,
    as_score,
    as_text,
    in_range,
    local,
    parse_time,
    plus,
)

if TYPE_CHECKING:
    from carts.models import CartEvent

_SYSTEM_PREFIXES = ("campaign.", "recovery.")
# What counts as the shopper doing something (as carts/projections.py has it).
_ACTIVITY_PREFIXES = (
    "cart.",
    "page.",
    "checkout.",
    "coupon.",
    "shopper.exit_intent",  # not shopper.erased: the system's, on an erasure request
    "order.placed",
)
DEFAULT_ATTRIBUTION_HOURS = 72


def _line_set(fact: Fact, line: list[Any], quantity: int, price: int) -> None:
    """Set a line's quantity and unit price in place, moving the cart's running totals by the
    difference (so an item event costs the same whatever the cart's line count)."""
    old_quantity = as_int(line[2])
    fact.item_count += quantity - old_quantity
    fact.value += quantity * price - old_quantity * as_int(line[3])
    line[2], line[3] = quantity, price


def _fold_items(fact: Fact, event_type: str, data: Mapping[str, Any]) -> None:
    """The cart's lines after an item event (as carts/projections.py folds them), updated in
    place: the line is found by its SKU, nothing is copied or scanned."""
    sku = str(data.get("sku", ""))
    line = fact.line(sku)
    if event_type == "cart.item_added":
        quantity, price = as_int(data.get("quantity")), as_int(data.get("unit_price"))
        if line is not None:
            _line_set(fact, line, as_int(line[2]) + quantity, price)
        else:
            name = str(data.get("name", ""))
            line = [sku, name, 0, 0, str(data.get("category", "") or "")]
            fact.line_append(line)
            _line_set(fact, line, quantity, price)
        if not fact.currency and data.get("currency"):
            fact.currency = as_text(data["currency"], 3)
    elif line is not None:
        if event_type == "cart.item_removed":
            remaining = as_int(line[2]) - (as_int(data.get("quantity")) or 10**9)
        else:
            remaining = as_int(data.get("quantity"))
        if remaining <= 0:
            _line_set(fact, line, 0, 0)
            fact.line_drop(sku)
        else:
            _line_set(fact, line, remaining, as_int(line[3]))
    if fact.value > fact.peak_value:
        fact.peak_value = fact.value
    if fact.item_count > 0:
        fact.had_items = True


def amounts_check(fact: Fact) -> None:
    """Unrepresentable when an amount of the row is past MAX_AMOUNT (its columns are int8, and
    a cohort's squares of net amounts must fit their numeric) or its item count past an int.
    Called after each event is folded."""
    if not -MAX_COUNT <= fact.item_count <= MAX_COUNT:
        raise Unrepresentable(f"item count out of range: {fact.item_count}")
    amount_in_range(fact.value, "cart value")
    if fact.order_total is not None:
        amount_in_range(fact.order_total, "order total")
    amount_in_range(fact.refunded, "refunded amount")
    amount_in_range(fact.discount, "discount")


def _settle_abandonment(fact: Fact, at: datetime, zone: ZoneInfo) -> None:
    fact.abandoned_final = True
    fact.abandoned_at = at
    fact.abandoned_day, fact.abandoned_hour = local(at, zone)
    fact.abandoned_lines = [list(line) for line in fact.lines]
    fact.abandoned_value = fact.value


def _prospective(fact: Fact) -> datetime | None:
    if fact.converted_at is None and fact.item_count > 0 and fact.last_activity_at is not None:
        return plus(fact.last_activity_at, ABANDONMENT_WINDOW, "prospective abandonment")
    return None


def _campaign_of(data: Mapping[str, Any], fact: Fact) -> int:
    return as_id(data.get("campaign")) or fact.campaign_id or 0


def fold(
    fact: Fact, event: CartEvent, data: Mapping[str, Any], zone: ZoneInfo, counters: Counters
) -> None:
    """One event into its cart's fact; event counters into ``counters``. Unrepresentable when
    the event's time or an amount it leads to cannot be held (the fact is then half-folded:
    the caller discards it)."""
    event_type = event.type
    at = in_range(event.occurred_at, "occurred_at")
    store = fact.store_id
    if not event_type.startswith(_SYSTEM_PREFIXES):
        if fact.started_at is None:
            fact.started_at = at
            fact.started_day, fact.started_hour = local(at, zone)
        if event_type.startswith(_ACTIVITY_PREFIXES):
            last = fact.last_activity_at
            if (
                last is not None
                and at - last >= ABANDONMENT_WINDOW
                and not fact.abandoned_final
                and fact.converted_at is None
                and fact.item_count > 0
            ):
                # The shopper was quiet for the window before this event: abandoned then.
                _settle_abandonment(fact, last + ABANDONMENT_WINDOW, zone)
            if last is None or at > last:
                fact.last_activity_at = at
        if event_type.startswith("cart.item_"):
            _fold_items(fact, event_type, data)
        elif event_type == "order.placed":
            # As the cart's fold has it (carts/projections.py): the first order from a trusted
            # source converts the cart; a browser's "order" counts for nothing.
            if fact.converted_at is None and trusted(getattr(event, "source", "unknown")):
                fact.converted_at = at
                fact.converted_day, fact.converted_hour = local(at, zone)
                fact.order_total = as_int(data.get("total"))
                if not fact.currency and data.get("currency"):
                    fact.currency = as_text(data["currency"], 3)
        elif event_type == "order.refunded":
            # As the cart's fold has it: a trusted refund of the order, in its currency, never
            # past its total (the cart's fold refuses such a refund whole, and so do we).
            amount = as_int(data.get("amount"))
            currency = data.get("currency")
            if (
                fact.order_total is not None
                and trusted(getattr(event, "source", "unknown"))
                and (not currency or not fact.currency or currency == fact.currency)
                and fact.refunded + amount <= fact.order_total
            ):
                fact.refunded += amount
        elif event_type == "checkout.shipping_quoted":
            if not fact.currency and data.get("currency"):
                fact.currency = as_text(data["currency"], 3)
        elif event_type == "shopper.exit_intent":
            fact.exit_intents += 1
            day = local(at, zone)[0]
            counters.add(store, EXIT_INTENT, day, None, campaign=fact.campaign_id or 0)
        return

    day, hour = local(at, zone)
    if event_type == "campaign.enrolled":
        _fold_enrolled(fact, at, data, zone)
        for step in data.get("steps") or ():
            if isinstance(step, Mapping):
                step_id = as_id(step.get("step"))
                if step_id:
                    fact.steps_open = {
                        **fact.steps_open,
                        str(step_id): [
                            as_id(step.get("tier")),
                            as_text(step.get("channel"), 16),
                            day.isoformat(),
                        ],
                    }
                counters.add(
                    store,
                    SCHEDULED,
                    day,
                    None,
                    campaign=_campaign_of(data, fact),
                    tier=as_id(step.get("tier")),
                    channel=as_text(step.get("channel"), 16),
                )
        return
    metric = STEP_METRICS.get(event_type)
    if metric is not None or event_type == "campaign.link_clicked":
        campaign = _campaign_of(data, fact)
        tier = as_id(data.get("tier"))
        channel = as_text(data.get("channel"), 16)
        # A message in flight while the order committed is no touch: it cannot have caused it.
        if event_type == "campaign.step_sent" and data.get("reason") != IN_FLIGHT_AT_ORDER:
            fact.touches.append(
                [
                    at.isoformat(),
                    campaign,
                    tier,
                    as_id(data.get("position")),
                    channel,
                    as_id(data.get("step")),
                ]
            )
            if fact.last_touch_at is None or at >= fact.last_touch_at:
                fact.last_touch_at, fact.last_touch_tier, fact.last_touch_channel = (
                    at,
                    tier,
                    channel,
                )
        if metric in STEP_TERMINAL and (metric != FAILED or data.get("final")):
            step_key = str(as_id(data.get("step")))
            if step_key in fact.steps_open:
                fact.steps_open = {k: v for k, v in fact.steps_open.items() if k != step_key}
        key = ""
        if metric in KEYED_BY_REASON:
            key = as_text(data.get("reason"), KEY_CHARS)
        elif metric == FAILED:
            key = "final" if data.get("final") else "retry"
        elif metric is None:  # a click: the first of each step counts
            step = as_id(data.get("step"))
            if step in fact.clicked:
                return
            fact.clicked = [*fact.clicked, step]
            metric = CLICKED
        counters.add(
            store,
            metric,
            day,
            hour if metric == SENT else None,
            campaign=campaign,
            tier=tier,
            channel=channel,
            key=key,
        )
        return
    if event_type == "campaign.coupon_redeemed":
        applied = data.get("discount_applied")
        fact.discount = as_int(applied) if applied is not None else 0
        fact.discount_currency = as_text(data.get("currency"), 3)
        fact.redeemed_at = at
        fact.redeemed_day, fact.redeemed_hour = day, hour
        fact.redeemed_code = as_text(data.get("code"), 64)
        return
    if event_type == "recovery.offer_decided":
        campaign = as_id(data.get("campaign"))
        tier = as_id(data.get("tier"))
        score = as_score(data.get("score"))
        if "exit_event" in data and score is not None and not fact.scored_by_enrolment:
            fact.score, fact.scored_at, fact.scored_day = score, at, day
        offer = data.get("offer")
        if data.get("decision") == "offer" and isinstance(offer, Mapping):
            kind = as_text(offer.get("kind"), KEY_CHARS)
            # The code and what it takes off this cart (recovery.offers.offer_coded), for the
            # on-site credit's discount cost; the acceptance time comes with offer_accepted.
            fact.offers[str(offer.get("id", ""))] = [
                kind,
                campaign,
                tier,
                as_text(offer.get("discount_code"), 64),
                as_int(offer.get("discount_amount")),
                as_text(offer.get("currency"), 3),
                None,
            ]
            counters.add(
                store,
                OFFER_DECIDED,
                day,
                None,
                campaign=campaign,
                tier=tier,
                channel=ONSITE,
                key=kind,
            )
        else:
            counters.add(
                store,
                OFFER_NONE,
                day,
                None,
                campaign=campaign,
                tier=tier,
                key=as_text(data.get("reason"), KEY_CHARS),
            )
        return
    reaction = REACTIONS.get(event_type)
    if reaction is not None:
        made = fact.offers.get(str(data.get("offer_id", "")))
        head: list[Any] = made[:3] if made else ["", 0, 0]
        kind, campaign, tier = head
        if reaction == OFFER_SHOWN:
            fact.offers_shown += 1
        elif reaction == OFFER_ACCEPTED:
            fact.offers_accepted += 1
            if made is not None and len(made) >= 7 and made[6] is None:
                made[6] = at.isoformat()  # the first acceptance
        counters.add(
            store,
            reaction,
            day,
            hour if reaction != OFFER_DISMISSED else None,
            campaign=campaign,
            tier=tier,
            channel=ONSITE,
            key=kind,
        )


def _fold_enrolled(fact: Fact, at: datetime, data: Mapping[str, Any], zone: ZoneInfo) -> None:
    fact.campaign_id = as_id(data.get("campaign")) or None
    fact.holdout = bool(data.get("holdout"))
    fact.enrolled_at = at
    abandoned = in_range(parse_time(data.get("abandoned_at")) or at, "abandoned_at")
    fact.enrolled_abandoned_at = abandoned
    fact.enrolled_day = local(abandoned, zone)[0]
    score = as_score(data.get("score"))
    if score is not None:
        fact.score, fact.scored_at, fact.scored_day = score, at, local(at, zone)[0]
        fact.scored_by_enrolment = True
    # The campaign judged the cart abandoned: it is, at the earlier of its abandonment time and
    # ours (so every recovered cart is an abandoned one).
    if fact.converted_at is not None and fact.converted_at <= abandoned:
        return  # enrolled on a stale view of a cart that had ordered: not abandoned
    if not fact.abandoned_final:
        prospective = _prospective(fact)
        when = min(abandoned, prospective) if prospective is not None else abandoned
        _settle_abandonment(fact, when, zone)
    elif fact.abandoned_at is not None and abandoned < fact.abandoned_at:
        fact.abandoned_at = abandoned
        fact.abandoned_day, fact.abandoned_hour = local(abandoned, zone)


def derive(fact: Fact, windows: Mapping[int, tuple[int, int]], zone: ZoneInfo) -> None:
    """What follows from the fact and its campaign's windows: the prospective abandonment, whether
    its order was recovered (and by which touch), whether it converted within the lift window.

    ``windows``: campaign id -> (attribution hours, largest tier delay in minutes)."""
    if not fact.abandoned_final:
        prospective = _prospective(fact)
        if prospective != fact.abandoned_at:
            fact.abandoned_at = prospective
            fact.abandoned_day, fact.abandoned_hour = (
                local(prospective, zone) if prospective is not None else (None, None)
            )
    _derive_onsite(fact, windows)
    hours, delay = windows.get(fact.campaign_id or 0, (DEFAULT_ATTRIBUTION_HOURS, 0))
    fact.recovered, fact.credit_tier, fact.credit_channel = False, None, ""
    fact.converted_in_window = False
    converted = fact.converted_at
    if converted is None or fact.order_total is None or fact.campaign_id is None:
        return
    abandoned = fact.enrolled_abandoned_at
    if abandoned is not None:
        # Differences, not sums: a campaign's window may reach past the end of the calendar.
        window = timedelta(hours=hours, minutes=delay)
        fact.converted_in_window = abandoned < converted and converted - abandoned <= window
    if fact.holdout:
        return
    # The last touch strictly before the order gets the credit (campaigns.attribution).
    best: tuple[datetime, int, int] | None = None
    credit: list[Any] | None = None
    for touch in fact.touches:
        touched_at = parse_time(touch[0])
        if touched_at is None or touched_at >= converted:
            continue
        rank = (touched_at, as_int(touch[3]), as_int(touch[5]))
        if best is None or rank > best:
            best, credit = rank, touch
    if best is not None and credit is not None and converted - best[0] <= timedelta(hours=hours):
        fact.recovered = True
        fact.credit_tier, fact.credit_channel = as_int(credit[2]), str(credit[4])


def _derive_onsite(fact: Fact, windows: Mapping[int, tuple[int, int]]) -> None:
    """The on-site credit: the cart's order came after an accepted on-site offer (strictly) and
    within the offer's campaign's attribution hours of the acceptance; the latest such offer gets
    it. Its discount cost: the redeemed coupon's discount_applied when the redeemed code is the
    offer's, else what the offer's code takes off the cart (the offer's discount_amount)."""
    fact.onsite_recovered, fact.onsite_campaign, fact.onsite_tier = False, None, None
    fact.onsite_discount = 0
    converted = fact.converted_at
    if converted is None or fact.order_total is None:
        return
    best: tuple[datetime, list[Any]] | None = None
    for made in fact.offers.values():
        if len(made) < 7 or made[6] is None:
            continue
        accepted = parse_time(made[6])
        if accepted is None or accepted >= converted:
            continue
        hours = windows.get(as_int(made[1]), (DEFAULT_ATTRIBUTION_HOURS, 0))[0]
        if converted - accepted > timedelta(hours=hours):
            continue
        if best is None or accepted > best[0]:
            best = (accepted, made)
    if best is None:
        return
    made = best[1]
    fact.onsite_recovered = True
    fact.onsite_campaign, fact.onsite_tier = as_id(made[1]) or None, as_id(made[2]) or None
    code = str(made[3] or "")
    if code and fact.redeemed_code == code and fact.redeemed_at is not None:
        fact.onsite_discount = fact.discount
    else:
        fact.onsite_discount = max(as_int(made[4]), 0)


def offer_campaigns(fact: Fact) -> set[int]:
    """The campaigns of the cart's accepted on-site offers (their attribution windows)."""
    return {
        as_id(made[1])
        for made in fact.offers.values()
        if len(made) >= 7 and made[6] is not None and as_id(made[1])
    }
