"""The store's budget of on-site codes (campaigns.coupons.coupon_issue with a Budget): codes per
hour and discount value per day, exact under concurrency, and editable in the admin."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client

from campaigns import coupons
from campaigns.models import CampaignSettings, Coupon, Tier
from carts.models import Store
from tests.campaigns.builders import campaign_with_tiers
from tests.carts.threads import raise_first_error, run_in_threads

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ONSITE = {
    "channel": "onsite",
    "offer_kind": "percent_discount",
    "percent": 10,
    "discount_cap": 2000,
    "min_score": 0.0,
    "code_expiry_hours": 48,
}


def _terms(store_id: int) -> coupons.CodeTerms:
    campaign = campaign_with_tiers(store_id, activated_at=T, active=False, tiers=[ONSITE])
    return coupons.CodeTerms.of(campaign.tiers.get())


def _issue(
    store_id: int,
    terms: coupons.CodeTerms,
    budget: coupons.Budget,
    *,
    cart: str | None = None,
    value: int = 5000,
    now: datetime = T,
    barrier: threading.Barrier | None = None,
) -> coupons.Issued:
    with transaction.atomic():
        if barrier is not None:
            barrier.wait(timeout=10)
        return coupons.coupon_issue(
            store_id=store_id,
            cart=cart or f"c-{uuid.uuid4().hex[:8]}",
            shopper="",
            step_id=None,
            tier=terms,
            cart_value=value,
            currency="EUR",
            score=0.9,
            price_sensitivity=None,
            gross_margin_percent=40,
            now=now,
            channel=Tier.Channel.ONSITE,
            budget=budget,
        )


def _rule(issued: coupons.Issued) -> Any:
    return issued.choice.reasons[-1]["rule"]


def test_codes_per_hour_is_a_sliding_hour(store):
    terms = _terms(store.pk)
    budget = coupons.Budget(codes_per_hour=2, value_per_day=10**9)
    made = [_issue(store.pk, terms, budget, now=T + timedelta(minutes=m)) for m in (0, 30, 45)]
    assert [i.coupon is not None for i in made] == [True, True, False]
    assert _rule(made[2]) == coupons.BUDGET_CODES
    assert made[2].event.data["code"] is None and made[2].event.data["kind"] == "none"
    # the first code leaves the hour at T+60: room for one more
    assert _issue(store.pk, terms, budget, now=T + timedelta(minutes=61)).coupon is not None
    assert _issue(store.pk, terms, budget, now=T + timedelta(minutes=62)).coupon is None


def test_value_per_day_counts_what_each_code_takes_off_its_cart(store):
    terms = _terms(store.pk)
    budget = coupons.Budget(codes_per_hour=100, value_per_day=2500)
    first = _issue(store.pk, terms, budget, value=30_000)  # 10 % capped at 20.00
    assert first.coupon is not None and first.coupon.value == 2000
    refused = _issue(store.pk, terms, budget, value=6000)  # 6.00 more: 26.00 > 25.00
    assert refused.coupon is None and refused.choice.reasons[-1] == {
        "rule": "budget_value", "value": 600, "value_last_day": 2000, "value_per_day": 2500
    }  # fmt: skip
    assert _issue(store.pk, terms, budget, value=5000).coupon is not None  # 5.00 fits
    # a day later the first code no longer counts
    assert _issue(store.pk, terms, budget, value=6000, now=T + timedelta(days=1)).coupon


def test_email_codes_do_not_count(store):
    terms = _terms(store.pk)
    budget = coupons.Budget(codes_per_hour=1, value_per_day=10**9)
    Coupon.objects.create(
        store=store, cart="from-email", code="SAVE-EMAIL-0001", kind="percent", amount=10,
        issued_at=T, expires_at=T + timedelta(days=2), channel="discount", value=500,
    )  # fmt: skip
    assert _issue(store.pk, terms, budget).coupon is not None
    assert _issue(store.pk, terms, budget).coupon is None


def test_parallel_issues_never_overshoot_the_budget(committed_store):
    store, _ = committed_store
    terms = _terms(store.pk)
    budget = coupons.Budget(codes_per_hour=3, value_per_day=10**9)
    barrier = threading.Barrier(8)
    outcomes = run_in_threads(
        lambda: _issue(store.pk, terms, budget, now=datetime.now(UTC), barrier=barrier),
        [()] * 8,
    )
    raise_first_error(outcomes)
    assert sum(o.coupon is not None for o in outcomes) == 3
    assert Coupon.objects.filter(store=store, channel="onsite").count() == 3


@pytest.fixture
def superuser_client(db) -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_the_budget_is_edited_in_the_admin(superuser_client, store):
    admin_client = superuser_client
    form = {
        "store": store.pk, "email_from": "Shop <shop@example.com>", "timezone": "UTC",
        "email_legal_basis": "consent", "gross_margin_percent": "40",
        "onsite_codes_per_hour": "5", "onsite_discount_per_day": "123.45",
    }  # fmt: skip
    response = admin_client.post("/admin/campaigns/campaignsettings/add/", form)
    assert response.status_code == 302, response.content[:2000]
    saved = CampaignSettings.objects.get(store=store)
    assert (saved.onsite_codes_per_hour, saved.onsite_discount_per_day) == (5, 12345)
    refused = admin_client.post(
        f"/admin/campaigns/campaignsettings/{saved.pk}/change/",
        {**form, "onsite_discount_per_day": "-1"},
    )
    assert refused.status_code == 200
    assert "onsite_discount_per_day" in refused.context["adminform"].form.errors
    # defaults for a store that never saved them
    assert CampaignSettings(store=Store(pk=0)).onsite_codes_per_hour == 60
