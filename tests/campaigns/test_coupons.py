"""Issuing codes (one per cart, anti-gaming) and redeeming them over the API (real database)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns import coupons
from campaigns.discounts import CODE_PATTERN
from campaigns.models import Coupon, Tier
from carts import services
from carts.models import CartEvent
from carts.sources import Source
from tests.campaigns.builders import campaign_with_tiers, cart_abandoned
from tests.carts.threads import raise_first_error, run_in_threads

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
REDEEM = "/api/v1/coupons/redeem"
VALIDATE = "/api/v1/coupons/validate"
PERCENT_TIER = {
    "channel": "discount",
    "offer_kind": "percent_discount",
    "discount_min": 5,
    "discount_max": 20,
    "min_score": 0.5,
    "code_expiry_hours": 48,
    "recent_code_days": 30,
}


def _tier(store_id: int, **fields: Any) -> Tier:
    # Paused: committed tests leave their rows behind, and an active campaign would enrol them.
    campaign = campaign_with_tiers(
        store_id, activated_at=T, active=False, tiers=[{**PERCENT_TIER, **fields}]
    )
    return campaign.tiers.get()


def _issue(
    store_id: int,
    tier: Tier,
    *,
    cart: str | None = None,
    shopper: str = "shopper-1",
    now: datetime = T,
    score: float | None = 0.8,
    sensitivity: float | None = 0.5,
    value: int = 12_000,
) -> coupons.Issued:
    """Issue as the step runner does: in its transaction, appending the returned event."""
    if cart is None:
        cart = cart_abandoned(store_id, at=now - timedelta(minutes=40), value=value).token
    with transaction.atomic():
        issued = coupons.coupon_issue(
            store_id=store_id,
            cart=cart,
            shopper=shopper,
            step_id=None,
            tier=tier,
            cart_value=value,
            currency="EUR",
            score=score,
            price_sensitivity=sensitivity,
            gross_margin_percent=40,
            now=now,
        )
        services.events_append(
            store_id=store_id, events=[issued.event], source=Source.server("test")
        )
    return issued


def _events(store_id: int, cart: str, type: str) -> list[dict]:
    return list(
        CartEvent.objects.filter(store_id=store_id, cart=cart, type=type)
        .order_by("version")
        .values_list("data", flat=True)
    )


# Issuing ------------------------------------------------------------------------------------------


def test_a_code_is_issued_with_its_dynamic_amount_and_reasons(store):
    tier = _tier(store.pk, discount_cap=3_000)

    issued = _issue(store.pk, tier)

    coupon = Coupon.objects.get(store=store)
    assert issued.coupon == coupon
    assert CODE_PATTERN.match(coupon.code)
    # risk 0.6, sensitivity 0.5: intensity 0.5477, 5 + 15 x 0.5477 = 13.2
    assert (coupon.kind, coupon.amount, coupon.cap, coupon.currency, coupon.min_cart_value) == (
        "percent",
        13,
        3_000,
        "EUR",
        0,
    )
    assert (coupon.shopper, coupon.issued_at, coupon.expires_at) == (
        "shopper-1",
        T,
        T + timedelta(hours=48),
    )
    assert (coupon.redeemed_at, coupon.order_id, coupon.discount_applied) == (None, "", None)
    assert coupon.reasons == [
        {
            "rule": "inputs",
            "score": 0.8,
            "price_sensitivity": 0.5,
            "cart_value": 12_000,
            "currency": "EUR",
            "recent_code": False,
            "gross_margin_percent": 40,
            "tier": tier.pk,
        },
        *issued.choice.reasons,
    ]
    assert [r["rule"] for r in issued.choice.reasons] == ["at_risk", "dynamic", "cap"]
    assert _events(store.pk, coupon.cart, "campaign.coupon_issued") == [
        {
            "code": coupon.code,
            "kind": "percent",
            "amount": 13,
            "cap": 3_000,
            "currency": "EUR",
            "min_cart_value": 0,
            "expires_at": "2026-03-12T12:00:00+00:00",
            "step_id": None,
            "reasons": coupon.reasons,
        }
    ]


def test_one_code_per_cart_issuing_again_returns_it_and_the_same_event(store):
    tier = _tier(store.pk)
    first = _issue(store.pk, tier)
    assert first.coupon is not None

    again = _issue(store.pk, tier, cart=first.coupon.cart, now=T + timedelta(hours=1), score=1.0)

    assert again.coupon == first.coupon
    assert (again.choice.kind, again.choice.amount) == ("percent", 13)
    assert again.choice.reasons[0] == {"rule": "one_code_per_cart", "code": first.coupon.code}
    assert again.event == first.event
    assert Coupon.objects.filter(store=store).count() == 1
    assert len(_events(store.pk, first.coupon.cart, "campaign.coupon_issued")) == 1


def test_a_cart_likely_to_convert_anyway_gets_no_code_and_the_decision_is_recorded(store):
    tier = _tier(store.pk)

    issued = _issue(store.pk, tier, score=0.3)

    assert issued.coupon is None
    assert (issued.choice.kind, issued.choice.amount) == ("none", 0)
    assert not Coupon.objects.filter(store=store).exists()
    [data] = _events(store.pk, issued.event.cart, "campaign.coupon_issued")
    assert (data["code"], data["kind"], data["amount"]) == (None, "none", 0)
    assert data["reasons"][-1] == {"rule": "below_min_score", "score": 0.3, "min_score": 0.5}


@pytest.mark.parametrize(
    ("policy", "days_later", "shopper", "second"),
    [
        ("smaller", 1, "shopper-1", ("percent", 5)),
        ("none", 1, "shopper-1", None),
        ("smaller", 29, "shopper-1", ("percent", 5)),
        ("smaller", 31, "shopper-1", ("percent", 13)),  # outside the 30-day window
        ("none", 1, "shopper-2", ("percent", 13)),  # someone else
    ],
)
def test_a_shopper_with_a_recent_code_gets_the_minimum_or_none(
    store, policy, days_later, shopper, second
):
    tier = _tier(store.pk, recent_code_policy=policy)
    first = _issue(store.pk, tier, shopper="shopper-1")

    later = _issue(store.pk, tier, shopper=shopper, now=T + timedelta(days=days_later))

    assert first.coupon is not None and (first.coupon.kind, first.coupon.amount) == ("percent", 13)
    got = None if later.coupon is None else (later.coupon.kind, later.coupon.amount)
    assert got == second
    assert any(r["rule"] == "recent_code" for r in later.choice.reasons) == (
        shopper == "shopper-1" and days_later < 30
    )


def test_anonymous_carts_are_never_counted_as_the_same_shopper(store):
    tier = _tier(store.pk, recent_code_policy="none")
    _issue(store.pk, tier, shopper="")

    later = _issue(store.pk, tier, shopper="", now=T + timedelta(days=1))

    assert later.coupon is not None and later.coupon.amount == 13


def test_a_percentage_tier_without_a_range_uses_its_percentage(store):
    tier = _tier(store.pk, discount_min=None, discount_max=None, percent=12)

    issued = _issue(store.pk, tier)

    assert issued.coupon is not None and issued.coupon.amount == 12


def test_a_fixed_amount_and_free_shipping(store):
    fixed = _tier(store.pk, offer_kind="fixed_discount", discount_min=500, discount_max=2000)
    free = campaign_with_tiers(
        store.pk,
        activated_at=T,
        active=False,
        tiers=[{**PERCENT_TIER, "offer_kind": "free_shipping"}],
    ).tiers.get()

    a = _issue(store.pk, fixed, shopper="a")
    b = _issue(store.pk, free, shopper="b")

    assert a.coupon is not None and b.coupon is not None
    assert (a.coupon.kind, a.coupon.amount, a.coupon.cap) == ("fixed", 1300, None)
    assert (b.coupon.kind, b.coupon.amount) == ("free_shipping", 0)


# Redeeming over the API ---------------------------------------------------------------------------


def _live_coupon(store_id: int, **tier: Any) -> Coupon:
    """A code issued a minute ago (the API redeems at the real time)."""
    issued = _issue(store_id, _tier(store_id, **tier), now=timezone.now() - timedelta(minutes=1))
    assert issued.coupon is not None
    return issued.coupon


def test_redeem_takes_the_discount_off_and_records_it_once(api, store):
    coupon = _live_coupon(store.pk, discount_cap=1_000)
    before = timezone.now()

    response = api.post(
        REDEEM,
        {"code": coupon.code, "order_id": "o-1", "cart_value": 12_000, "currency": "EUR"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    coupon.refresh_from_db()
    assert body == {
        "code": coupon.code,
        "kind": "percent",
        "amount": 13,
        "currency": "EUR",
        "discount_applied": 1_000,  # 13% of 120.00 is 15.60, capped at 10.00
        "cart": coupon.cart,
        "redeemed_at": body["redeemed_at"],
    }
    assert coupon.redeemed_at is not None
    assert before <= coupon.redeemed_at <= timezone.now()
    assert datetime.fromisoformat(body["redeemed_at"].replace("Z", "+00:00")) == coupon.redeemed_at
    assert (coupon.order_id, coupon.discount_applied) == ("o-1", 1_000)
    assert _events(store.pk, coupon.cart, "campaign.coupon_redeemed") == [
        {
            "code": coupon.code,
            "order_id": "o-1",
            "kind": "percent",
            "amount": 13,
            "currency": "EUR",
            "cart_value": 12_000,
            "discount_applied": 1_000,
        }
    ]


def test_redeem_without_a_cart_value_applies_nothing_yet_and_accepts_the_code_as_typed(api, store):
    coupon = _live_coupon(store.pk)

    response = api.post(
        REDEEM, {"code": f"  {coupon.code.lower()} ", "order_id": "o-1"}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["code"], response.json()["discount_applied"]) == (coupon.code, None)


def test_a_second_redeem_for_another_order_conflicts_and_changes_nothing(api, store):
    coupon = _live_coupon(store.pk)
    first = api.post(
        REDEEM, {"code": coupon.code, "order_id": "o-1", "cart_value": 12_000}, format="json"
    )
    coupon.refresh_from_db()

    second = api.post(
        REDEEM, {"code": coupon.code, "order_id": "o-2", "cart_value": 5_000}, format="json"
    )

    assert first.status_code == 200
    assert second.status_code == 409
    assert second.json() == {
        "code": "coupon_already_redeemed",
        "detail": "This code has already been redeemed, for another order.",
    }
    after = Coupon.objects.get(pk=coupon.pk)
    assert (after.redeemed_at, after.order_id, after.discount_applied) == (
        coupon.redeemed_at,
        "o-1",
        1_560,
    )
    assert len(_events(store.pk, coupon.cart, "campaign.coupon_redeemed")) == 1


def test_the_same_order_again_is_a_replay_of_the_first_redemption(api, store):
    coupon = _live_coupon(store.pk)
    first = api.post(
        REDEEM, {"code": coupon.code, "order_id": "o-1", "cart_value": 12_000}, format="json"
    )

    again = api.post(
        REDEEM, {"code": coupon.code, "order_id": "o-1", "cart_value": 99_000}, format="json"
    )

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert len(_events(store.pk, coupon.cart, "campaign.coupon_redeemed")) == 1


def test_an_expired_code_is_gone(api, store):
    issued = _issue(store.pk, _tier(store.pk), now=timezone.now() - timedelta(hours=49))
    assert issued.coupon is not None

    response = api.post(REDEEM, {"code": issued.coupon.code, "order_id": "o-1"}, format="json")

    assert response.status_code == 410
    assert response.json() == {
        "code": "coupon_expired",
        "detail": "This code has expired.",
        "expires_at": issued.coupon.expires_at.astimezone(UTC).isoformat(),
    }
    assert Coupon.objects.get(pk=issued.coupon.pk).redeemed_at is None
    assert _events(store.pk, issued.coupon.cart, "campaign.coupon_redeemed") == []


NOT_FOUND = {"code": "coupon_not_found", "detail": "This store has no such code."}


def test_another_stores_code_is_not_found_like_a_made_up_one(store):
    coupon = _live_coupon(store.pk)
    other = services.store_create(name="Other shop")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {other.secret_key}")

    theirs = client.post(REDEEM, {"code": coupon.code, "order_id": "o-1"}, format="json")
    made_up = client.post(REDEEM, {"code": "SAVE-2222-3333-4444", "order_id": "o-1"}, format="json")
    checked = client.post(VALIDATE, {"code": coupon.code}, format="json")

    assert (theirs.status_code, theirs.json()) == (404, NOT_FOUND)
    assert (made_up.status_code, made_up.json()) == (404, NOT_FOUND)
    assert (checked.status_code, checked.json()) == (404, NOT_FOUND)
    assert Coupon.objects.get(pk=coupon.pk).redeemed_at is None


def test_redeem_needs_the_secret_key(store):
    coupon = _live_coupon(store.pk)

    response = APIClient().post(REDEEM, {"code": coupon.code, "order_id": "o-1"}, format="json")

    assert response.status_code == 401
    assert Coupon.objects.get(pk=coupon.pk).redeemed_at is None


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"code": ["Field required."], "order_id": ["Field required."]}),
        ({"code": " ", "order_id": "o-1"}, {"code": ["String should have at least 1 character."]}),
        (
            {"code": "X" * 65, "order_id": "o-1"},
            {"code": ["String should have at most 64 characters."]},
        ),
        (
            {"code": "SAVE", "order_id": "o-1", "cart_value": -1},
            {"cart_value": ["Input should be greater than or equal to 0."]},
        ),
        (
            {"code": "SAVE", "order_id": "o-1", "cart_value": True},
            {"cart_value": ["Input should be a valid integer."]},
        ),
        (
            {"code": "SAVE", "order_id": "o-1", "cart_value": None},
            {"cart_value": ["This field may not be null."]},
        ),
        (
            {"code": "SAVE", "order_id": "o-1", "currency": "EUX"},
            {"currency": ["'EUX' is not an ISO 4217 currency code."]},
        ),
        ({"code": "SAVE", "order_id": "o-1", "coupon": "x"}, {"coupon": ["Unknown field."]}),
        (["SAVE"], {"non_field_errors": ["Expected a JSON object."]}),
    ],
)
def test_bad_input_gets_field_errors_and_changes_nothing(api, store, body, errors):
    coupon = _live_coupon(store.pk)

    response = api.post(REDEEM, body, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert Coupon.objects.get(pk=coupon.pk).redeemed_at is None


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {"cart_value": 4_999},
            "cart_value",
            "This code needs a cart value of at least 5000 (minor units).",
        ),
        ({"currency": "USD", "cart_value": 12_000}, "currency", "This code is for carts in EUR."),
    ],
)
def test_a_cart_the_code_does_not_apply_to_gets_a_field_error(api, store, body, field, message):
    coupon = _live_coupon(store.pk, min_cart_value=5_000)

    response = api.post(REDEEM, {"code": coupon.code, "order_id": "o-1", **body}, format="json")

    assert response.status_code == 422
    assert response.json() == {
        "code": "coupon_not_applicable",
        "detail": message,
        "field": field,
        "errors": {field: [message]},
    }
    assert Coupon.objects.get(pk=coupon.pk).redeemed_at is None


def test_validate_says_what_a_code_would_take_off_and_changes_nothing(api, store):
    coupon = _live_coupon(store.pk, min_cart_value=5_000)

    response = api.post(VALIDATE, {"code": coupon.code, "cart_value": 10_000}, format="json")

    assert response.status_code == 200
    assert response.json() == {
        "code": coupon.code,
        "kind": "percent",
        "amount": 13,
        "currency": "EUR",
        "discount_applied": 1_300,
        "cart": coupon.cart,
        "expires_at": response.json()["expires_at"],
        "min_cart_value": 5_000,
    }
    assert Coupon.objects.get(pk=coupon.pk).redeemed_at is None
    assert _events(store.pk, coupon.cart, "campaign.coupon_redeemed") == []
    api.post(REDEEM, {"code": coupon.code, "order_id": "o-1"}, format="json")
    assert api.post(VALIDATE, {"code": coupon.code}, format="json").status_code == 409


# Concurrency: real commits ------------------------------------------------------------------------


def _committed_coupon(store_id: int) -> Coupon:
    issued = _issue(store_id, _tier(store_id), now=timezone.now() - timedelta(minutes=1))
    assert issued.coupon is not None
    return issued.coupon


def _redeem_at_once(secret_key: str, code: str, order_ids: list[str]) -> list[Any]:
    start = threading.Barrier(len(order_ids))

    def redeem(order_id: str) -> tuple[int, dict]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret_key}")
        start.wait()
        response = client.post(
            REDEEM, {"code": code, "order_id": order_id, "cart_value": 12_000}, format="json"
        )
        return response.status_code, response.json()

    outcomes = run_in_threads(redeem, [(o,) for o in order_ids])
    raise_first_error(outcomes)
    return outcomes


def test_of_sixteen_concurrent_redemptions_exactly_one_wins(committed_store):
    store, creds = committed_store
    coupon = _committed_coupon(store.pk)

    outcomes = _redeem_at_once(creds.secret_key, coupon.code, [f"o-{i}" for i in range(16)])

    statuses = sorted(status for status, _ in outcomes)
    assert statuses == [200] + [409] * 15
    [winner] = [body for status, body in outcomes if status == 200]
    coupon.refresh_from_db()
    assert coupon.order_id == f"o-{[o[0] for o in outcomes].index(200)}"
    assert (winner["discount_applied"], coupon.discount_applied) == (1_560, 1_560)
    redeemed = _events(store.pk, coupon.cart, "campaign.coupon_redeemed")
    assert [e["order_id"] for e in redeemed] == [coupon.order_id]


def test_concurrent_retries_of_one_order_all_succeed_and_record_it_once(committed_store):
    store, creds = committed_store
    coupon = _committed_coupon(store.pk)

    outcomes = _redeem_at_once(creds.secret_key, coupon.code, ["o-1"] * 8)

    assert [status for status, _ in outcomes] == [200] * 8
    assert len({body["redeemed_at"] for _, body in outcomes}) == 1
    assert len(_events(store.pk, coupon.cart, "campaign.coupon_redeemed")) == 1


def test_the_schema_documents_the_coupon_endpoints(db):
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]

    def body_of(path: str) -> dict:
        ref = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        node = components[ref["schema"]["$ref"].rsplit("/", 1)[1]]
        return components[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    redeem, validate = body_of(REDEEM), body_of(VALIDATE)
    assert redeem["required"] == ["code", "order_id"]
    assert set(redeem["properties"]) == {"code", "order_id", "cart_value", "currency"}
    assert redeem["additionalProperties"] is False
    assert validate["required"] == ["code"]
    assert set(schema["paths"][REDEEM]["post"]["responses"]) == {
        "200", "400", "401", "404", "409", "410", "411", "422", "429"
    }  # fmt: skip


def test_a_tier_saved_with_durations_past_what_a_date_holds_still_issues_a_code(store):
    # Columns allow 2^31 hours and days; earlier admins saved such values. A code is still
    # issued, expiring within a year, and the recent-code look-back held to a year too.
    tier = _tier(store.pk)
    Tier.objects.filter(pk=tier.pk).update(
        code_expiry_hours=2_147_483_647, recent_code_days=2_147_483_647
    )
    tier.refresh_from_db()

    issued = _issue(store.pk, tier)

    assert issued.coupon is not None
    assert T < issued.coupon.expires_at <= T + timedelta(days=366)
