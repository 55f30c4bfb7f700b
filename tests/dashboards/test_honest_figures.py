"""Issue 14, honest dashboards: pending outcomes, in-progress carts, one cohort per row, waiting
steps per tier, the on-site offer's credit (revenue and discount cost), one money format, empty
states and definitions one click away. Exact figures on a small log of a UTC store."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from campaigns import events as ce
from campaigns.models import CampaignSettings, Enrollment
from carts import projectors, services
from carts.services import NewEvent
from carts.sources import Source
from dashboards import definitions, pages, tables
from dashboards import selectors as s
from tests.campaigns.builders import campaign_with_tiers
from tests.conftest import item, new_event
from tests.dashboards.test_pages import RANGE, client_for, log_build, member

DAY = date(2026, 6, 1)


def at(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 6, day, hour, minute, tzinfo=UTC)


def added(cart: str, price: int, when: datetime) -> NewEvent:
    return new_event("cart.item_added", cart, item(f"SKU-{cart}", 1, price), at=when)


def order(cart: str, total: int, when: datetime) -> NewEvent:
    data = {"order_id": f"o-{cart}", "total": total, "currency": "EUR"}
    return new_event("order.placed", cart, data, at=when)


def system(type_: str, cart: str, data: dict[str, Any], when: datetime) -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4(), cart=cart, type=type_, schema_version=1, occurred_at=when, data=data
    )


def offer(cart: str, when: datetime, *, campaign: int, code: str, amount: int) -> list[NewEvent]:
    """An exit intent, a coded on-site offer (as recovery.offers.offer_coded has it)."""
    decided = {
        "decision": "offer",
        "reason": "eligible",
        "campaign": campaign,
        "tier": None,
        "score": 0.5,
        "model_version": "test",
        "holdout": False,
        "offer": {
            "id": f"offer-{cart}",
            "kind": "percent_discount",
            "discount_code": code,
            "discount_amount": amount,
            "currency": "EUR",
        },
        "exit_event": str(uuid.uuid4()),
    }
    return [
        new_event("shopper.exit_intent", cart, {"trigger": "mouse_leave"}, at=when),
        system("recovery.offer_decided", cart, decided, when),
    ]


def accepted(cart: str, when: datetime) -> NewEvent:
    return system("recovery.offer_accepted", cart, {"offer_id": f"offer-{cart}"}, when)


def redeemed(cart: str, code: str, applied: int, when: datetime) -> NewEvent:
    data = {
        "code": code,
        "order_id": f"o-{cart}",
        "kind": "percent",
        "amount": 10,
        "currency": "EUR",
        "cart_value": 5000,
        "discount_applied": applied,
    }
    return ce.campaign_event(cart=cart, type=ce.COUPON_REDEEMED, data=data, now=when)


def append(store_id: int, events: list[NewEvent]) -> None:
    services.events_append(store_id=store_id, events=events, source=Source.server("test"))
    projectors.projector_catch_up(name="dashboard", batch_size=5)


@pytest.fixture
def campaign(store):
    CampaignSettings.objects.create(store_id=store.pk, timezone="UTC")
    return campaign_with_tiers(
        store.pk,
        activated_at=at(0),
        tiers=[{"channel": "onsite"}, {"channel": "email"}, {"channel": "discount"}],
        attribution_hours=48,
    )


@pytest.fixture
def marketer_client(store):
    return client_for(member(store, "mo"))


# -- on-site credit -----------------------------------------------------------------------------


def test_orders_after_an_accepted_offer_are_credited_with_revenue_and_discount_cost(
    store, campaign
):
    k = campaign.pk
    append(
        store.pk,
        [
            # R: accepted, redeemed the code (4.50 off), ordered 50.00 an hour later: credited,
            # cost the redeemed discount_applied.
            added("R", 5000, at(9)),
            *offer("R", at(9, 5), campaign=k, code="R-CODE", amount=500),
            accepted("R", at(9, 6)),
            redeemed("R", "R-CODE", 450, at(10)),
            order("R", 5000, at(10)),
            # U: accepted, ordered 30.00 without redeeming through the API: credited, cost the
            # offer's code value (3.00).
            added("U", 3000, at(9)),
            *offer("U", at(9, 5), campaign=k, code="U-CODE", amount=300),
            accepted("U", at(9, 6)),
            order("U", 3000, at(11)),
            # L: accepted, ordered 49 hours later: outside the 48-hour window.
            added("L", 2000, at(9)),
            *offer("L", at(9, 5), campaign=k, code="L-CODE", amount=200),
            accepted("L", at(9, 6)),
            order("L", 2000, at(10, 6, day=3)),
            # B: ordered before accepting: the offer cannot have caused it.
            added("B", 1000, at(9)),
            *offer("B", at(9, 5), campaign=k, code="B-CODE", amount=100),
            order("B", 1000, at(9, 10)),
            accepted("B", at(9, 20)),
            # N: shown an offer, never accepted, ordered.
            added("N", 700, at(9)),
            *offer("N", at(9, 5), campaign=k, code="N-CODE", amount=70),
            order("N", 700, at(9, 30)),
        ],
    )
    day = s.overview(s.Filters(store_id=store.pk, start=DAY, end=date(2026, 6, 2)), now=at(23))

    assert day.onsite_recovered.value == 2  # R and U
    assert day.onsite_revenue.value == {"EUR": 5000 - 450 + 3000}  # net of the redeemed code
    assert day.onsite_discount_cost.value == {"EUR": 450 + 300}
    three = s.overview(s.Filters(store_id=store.pk, start=DAY, end=date(2026, 6, 4)), now=at(23))
    assert three.onsite_recovered.value == 2  # L's order, on June 3, is outside the window
    # The campaign filter keeps the offer's campaign; another channel keeps none.
    of_campaign = s.overview(
        s.Filters(store_id=store.pk, start=DAY, end=date(2026, 6, 2), campaign_id=k), now=at(23)
    )
    assert of_campaign.onsite_recovered.value == 2
    email = s.overview(
        s.Filters(store_id=store.pk, start=DAY, end=date(2026, 6, 2), channel="email"), now=at(23)
    )
    assert email.onsite_recovered.value == 0
    # Shown next to the lift, in the store's money format.
    lines = pages.onsite_lines(day, currency="EUR")
    assert [(x.orders, x.revenue, x.discount_cost) for x in lines] == [("2", "€75.50", "€7.50")]
    # Rebuilt from the log, the same.
    projectors.projector_rebuild(name="dashboard")
    again = s.overview(s.Filters(store_id=store.pk, start=DAY, end=date(2026, 6, 2)), now=at(23))
    assert again.onsite_discount_cost.value == {"EUR": 750}


# -- in progress, cohorts, pending calibration ---------------------------------------------------


def test_in_progress_carts_are_neither_abandoned_nor_in_the_rate(store, campaign):
    append(
        store.pk,
        [
            added("A1", 1000, at(10)),  # abandoned 10:30
            added("A2", 1000, at(10, 10)),  # abandoned 10:40
            added("O1", 1000, at(10, 20)),
            order("O1", 1000, at(10, 25)),  # settled: not abandoned
            added("P1", 1000, at(10, 50)),  # in progress at 11:00 (abandons at 11:20)
            added("P2", 1000, at(10, 55)),  # in progress at 11:00
        ],
    )
    filters = s.Filters(store_id=store.pk, start=DAY, end=date(2026, 6, 2))
    now = at(11)

    view = s.overview(filters, now=now)
    assert (view.carts_started.value, view.in_progress.value, view.settled.value) == (5, 2, 3)
    assert view.abandonment_rate.value == 2 / 3  # over the settled carts, not 2 / 5
    point = s.timeseries(filters, now=now).points[10]  # 10:00-11:00: the same cohort
    assert (
        point.carts_started,
        point.started_in_progress,
        point.started_abandoned,
        point.started_settled,
        point.abandonment_rate,
    ) == (5, 2, 2, 3, 2 / 3)
    later = s.timeseries(filters, now=at(12)).points[10]
    assert (later.started_in_progress, later.started_abandoned, later.abandonment_rate) == (
        0,
        4,
        4 / 5,
    )


def test_calibration_shows_pending_carts_apart(store, campaign):
    k = campaign.pk
    append(
        store.pk,
        [
            added("X", 1000, at(9)),
            *offer("X", at(9, 5), campaign=k, code="X", amount=100),
            order("X", 1000, at(9, 30)),  # ordered early: still pending until 09:05 tomorrow
            added("Y", 1000, at(9)),
            *offer("Y", at(9, 5), campaign=k, code="Y", amount=100),
        ],
    )
    filters = s.Filters(store_id=store.pk, start=DAY, end=date(2026, 6, 2))

    early = s.scores(filters, now=at(12))[5]
    assert (early.carts, early.pending, early.observed) == (0, 2, None)
    settled = s.scores(filters, now=at(9, 6, day=2))[5]
    assert (settled.carts, settled.pending, settled.observed) == (2, 0, 0.5)


# -- waiting per tier -----------------------------------------------------------------------------


def test_the_funnel_counts_steps_waiting_per_tier(store, campaign):
    _onsite, email, discount = campaign.tiers.order_by("position")
    steps = [
        {"step": n, "tier": tier.pk, "channel": tier.channel, "due_at": at(12).isoformat()}
        for n, tier in ((11, email), (12, discount), (21, email), (22, discount))
    ]
    enrolled = [
        system(
            ce.ENROLLED,
            cart,
            {
                "campaign": campaign.pk,
                "holdout": False,
                "score": 0.7,
                "value": 1000,
                "abandoned_at": at(10, 30).isoformat(),
                "steps": steps[i * 2 : i * 2 + 2],
            },
            at(10, 30),
        )
        for i, cart in enumerate(("E1", "E2"))
    ]

    def step(type_: str, cart: str, n: int, tier: Any, **extra: Any) -> NewEvent:
        data = {"step": n, "campaign": campaign.pk, "tier": tier.pk, "channel": tier.channel}
        return system(type_, cart, {**data, **extra}, at(12))

    append(
        store.pk,
        [
            added("E1", 1000, at(10)),
            added("E2", 1000, at(10)),
            *enrolled,
            step(ce.STEP_SENT, "E1", 11, email),
            step(ce.STEP_DEFERRED, "E2", 21, email, reason="quiet_hours"),  # still waiting
            step(ce.STEP_FAILED, "E1", 12, discount, final=False),  # a retry: still waiting
        ],
    )
    rows = {
        r.tier_id: r
        for r in s.funnel(s.Filters(store_id=store.pk, start=DAY, end=date(2026, 6, 2)))
    }
    assert (rows[email.pk].scheduled, rows[email.pk].sent, rows[email.pk].waiting) == (2, 1, 1)
    assert (rows[discount.pk].scheduled, rows[discount.pk].waiting) == (2, 2)

    append(store.pk, [step(ce.STEP_FAILED, "E1", 12, discount, final=True)])
    rows = {
        r.tier_id: r
        for r in s.funnel(s.Filters(store_id=store.pk, start=DAY, end=date(2026, 6, 2)))
    }
    assert rows[discount.pk].waiting == 1
    assert pages.funnel_table(list(rows.values())).columns[5].label.startswith("waiting")


# -- money, empty states, definitions ---------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (123801, "EUR", "€1,238.01"),
        (-500, "USD", "-$5.00"),
        (120000, "JPY", "¥120,000"),
        (1299, "CHF", "CHF 12.99"),
        (1299, "KWD", "KWD 1.299"),
    ],
)
def test_one_money_format(amount, currency, shown):
    assert tables.money_display(amount, currency) == shown
    assert tables.cell_csv((amount, currency), tables.MONEY) == str(
        tables.major(amount, currency)
    )  # the CSV keeps plain numbers


def test_an_empty_period_explains_itself(store, campaign, marketer_client):
    page = marketer_client.get(f"/dashboard/{store.pk}/products/").content.decode()
    assert "No abandoned carts in this period yet: a cart counts as abandoned 30 minutes" in page
    funnel = marketer_client.get(f"/dashboard/{store.pk}/funnel/").content.decode()
    assert "A campaign schedules its tiers&#x27; steps when it enrols" in funnel
    overview = marketer_client.get(f"/dashboard/{store.pk}/").content.decode()
    assert "No carts yet in this period." in overview


def test_each_figure_links_to_its_definition(store, campaign, marketer_client):
    overview = marketer_client.get(f"/dashboard/{store.pk}/").content.decode()
    for anchor in set(pages.ANCHORS.values()):
        assert f'href="/dashboard/help/#{anchor}"' in overview, anchor
    help_page = marketer_client.get("/dashboard/help/")
    assert help_page.status_code == 200
    html = help_page.content.decode()
    for anchor in set(pages.ANCHORS.values()):
        assert f'id="{anchor}"' in html, anchor


def test_the_definitions_renderer_escapes():
    html = definitions.render("| a <b> | `x<y>` |\n|---|---|\n| in progress | **n** |")
    assert '<tr id="in-progress">' in html and "&lt;b&gt;" in html and "<strong>n</strong>" in html


# -- every help link lands on a definition -------------------------------------------------------

HELP_LINK = re.compile(r'href="/dashboard/help/#([^"]*)"')


def test_every_help_link_on_every_page_lands_on_a_definition(store):
    log = log_build(store)
    client = client_for(member(store, "hal"))
    help_page = client.get("/dashboard/help/").content.decode()
    ids = set(re.findall(r'id="([^"]+)"', help_page))
    linked: dict[str, set[str]] = {}
    for page in ("", "timeseries/", "funnel/", "offers/", "scores/", "products/", "live/"):
        response = client.get(f"/dashboard/{log.store.pk}/{page}?{RANGE}")
        assert response.status_code == 200, page
        for anchor in HELP_LINK.findall(response.content.decode()):
            linked.setdefault(anchor, set()).add(page or "overview")
    # Every page but the live one links its figures or tables to their definitions.
    assert {p for pages_ in linked.values() for p in pages_} == {
        "overview",
        "timeseries/",
        "funnel/",
        "offers/",
        "scores/",
        "products/",
    }
    assert "funnel" in linked and "calibration" in linked
    missing = {anchor: sorted(on) for anchor, on in linked.items() if anchor not in ids}
    assert missing == {}


# -- the lift counts only carts whose conversion window has closed -------------------------------


def test_the_lift_counts_only_carts_whose_conversion_window_has_closed(store, campaign):
    """The campaign's conversion window: 48 attribution hours + its largest tier delay (2 hours)
    after the enrolment's abandoned_at. Read on June 3 at 13:00: the carts abandoned on June 1 at
    10:00 are settled (their windows closed at 12:00), those of June 2 are pending."""
    k = campaign.pk
    carts = {
        # cart: (holdout, abandoned on day, order total and time or None)
        "T1": (False, 1, (3000, at(12))),  # converted, window closed
        "T2": (False, 1, None),  # not converted, window closed
        "T3": (False, 1, None),  # not converted, window closed
        "T4": (False, 2, None),  # window open: pending
        "T5": (False, 2, (2000, at(12, day=2))),  # ordered, window open: pending all the same
        "H1": (True, 1, (1000, at(11))),  # converted, window closed
        "H2": (True, 1, None),  # not converted, window closed
        "H3": (True, 2, None),  # window open: pending
    }
    events = []
    for cart, (holdout, day, ordered) in carts.items():
        abandoned = at(10, day=day)
        Enrollment.objects.create(
            store_id=store.pk,
            cart=cart,
            campaign=campaign,
            holdout=holdout,
            currency="EUR",
            abandoned_at=abandoned,
        )
        events.append(added(cart, 1000, at(9, day=day)))
        events.append(
            system(
                ce.ENROLLED,
                cart,
                {
                    "campaign": k,
                    "holdout": holdout,
                    "score": 0.5,
                    "value": 1000,
                    "abandoned_at": abandoned.isoformat(),
                    "steps": [],
                },
                at(10, 5, day=day),
            )
        )
        if ordered is not None:
            events.append(order(cart, ordered[0], ordered[1]))
    events.sort(key=lambda e: e.occurred_at)
    append(store.pk, events)
    filters = s.Filters(store_id=store.pk, start=DAY, end=date(2026, 6, 3))

    view = s.overview(filters, now=at(13, day=3))
    lift = view.lift
    assert (view.treated_carts.value, view.holdout_carts.value) == (3, 2)
    assert (view.treated_pending.value, view.holdout_pending.value) == (2, 1)
    assert (lift.treated_rate, lift.holdout_rate) == (1 / 3, 1 / 2)
    (revenue,) = lift.incremental_revenue
    assert (revenue.treated_carts, revenue.holdout_carts) == (3, 2)
    assert (revenue.treated_mean_net, revenue.holdout_mean_net) == (1000, 500)
    # Shown next to the lift.
    lines = {line.label: line.estimate for line in pages.lift_lines(view)}
    assert lines["Carts counted (conversion window closed)"] == "3 treated, 2 holdout"
    assert (
        lines["Pending (conversion window still open: not counted yet)"]
        == "3 pending (2 treated, 1 holdout)"
    )
    csv_rows = {row[0]: row for row in pages.lift_table(view).rows}
    assert csv_rows["treated carts pending"][2] == 2
    assert csv_rows["holdout carts counted"][2] == 2

    # On June 4 at 12:00 the windows of June 2 are still open (to the minute); past it, settled.
    assert s.overview(filters, now=at(12, day=4)).treated_pending.value == 2
    settled = s.overview(filters, now=at(12, 1, day=4))
    assert (settled.treated_pending.value, settled.holdout_pending.value) == (0, 0)
    assert (settled.lift.treated_rate, settled.lift.holdout_rate) == (2 / 5, 1 / 3)
    # The campaign filter keeps them; the previous period has none.
    of_campaign = s.overview(dataclasses.replace(filters, campaign_id=k), now=at(13, day=3))
    assert (of_campaign.treated_carts.value, of_campaign.treated_pending.value) == (3, 2)
    assert view.treated_pending.previous == 0


# -- the store's locale -------------------------------------------------------------------------


def test_money_on_the_pages_is_in_the_stores_locale(store):
    log = log_build(store)
    client = client_for(member(store, "lou"))
    # A store without a locale: English.
    overview = client.get(f"/dashboard/{store.pk}/?{RANGE}").content.decode()
    assert '<div class="value">€22.00</div>' in overview

    store.locale = "de-DE"
    store.save(update_fields=["locale"])
    response = client.get(f"/dashboard/{log.store.pk}/?{RANGE}")
    overview = response.content.decode()
    figures = {line.name: line.value for line in response.context["figures"]}
    assert figures["recovered_revenue"] == "22,00\xa0€"  # 30.00 - 3.00 coupon - 5.00 refund
    assert '<div class="value">22,00\xa0€</div>' in overview
    assert "€22.00" not in overview
    products = client.get(f"/dashboard/{store.pk}/products/?{RANGE}")
    assert products.context["tables"][0]["rows"] == [["CHAIR", "Chair", "EUR", "1", "45,00\xa0€"]]
    assert "Chair" in products.content.decode() and "45,00\xa0€" in products.content.decode()
    timeseries = client.get(f"/dashboard/{store.pk}/timeseries/?{RANGE}").content.decode()
    assert "22,00\xa0€" in timeseries  # the revenue chart's values
    # The CSV keeps plain numbers.
    export = client.get(f"/dashboard/{store.pk}/export/products.csv?{RANGE}").content.decode()
    assert ",45.00\r\n" in export
    # The live page hands its locale to live.js.
    live = client.get(f"/dashboard/{store.pk}/live/").content.decode()
    assert 'data-locale="de-DE"' in live
    # A large amount, grouped as in Germany.
    assert tables.money_text(123801, "EUR", "de-DE") == "1.238,01\xa0€"


def test_live_js_formats_money_in_the_pages_locale():
    script = (Path(settings.BASE_DIR) / "dashboards/static/dashboards/live.js").read_text()
    assert "script.dataset.locale" in script
    assert 'new Intl.NumberFormat("en", {' not in script.split("catch (e)")[0]


# -- the offers page's empty state ---------------------------------------------------------------


def test_the_offers_page_without_offers_explains_itself(store, marketer_client):
    response = marketer_client.get(f"/dashboard/{store.pk}/offers/?{RANGE}")
    page = response.content.decode()
    offers_table = response.context["tables"][0]
    assert offers_table["rows"] == []
    assert offers_table["empty"] == pages.EMPTY_OFFERS
    assert pages.EMPTY_OFFERS in page
    assert '<th scope="row">all</th>' not in page
    assert "An offer is decided when a shopper shows exit intent" in page
