"""The dashboard pages: the selectors' figures on a small log, rendered for a marketer, with
charts, table views, filters and CSV exports."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from campaigns import events as campaign_events
from campaigns.models import Campaign, Tier
from carts import projectors, services
from carts.models import Store, StoreMember
from carts.sources import Source
from dashboards import selectors
from tests.campaigns.builders import campaign_with_tiers
from tests.conftest import item, new_event

T = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)
START, END = "2026-11-08", "2026-11-14"  # a week, both days included
RANGE = f"start={START}&end={END}"
RANGE_HTML = RANGE.replace("&", "&amp;")  # as it appears in an href
FILTERS_END = date(2026, 11, 15)  # the selectors' end: excluded


@dataclass
class Log:
    store: Store
    campaign: Campaign
    tier: Tier


def _system(cart: str, type: str, at: datetime, **data: Any):
    return campaign_events.campaign_event(cart=cart, type=type, data=data, now=at)


def log_build(store: Store) -> Log:
    """Three carts in one week, in the store's zone (UTC):

    * ``a``: 2 x Lamp (15.00 EUR), abandoned, enrolled (treated, score 0.8), emailed, opened,
      clicked, ordered 30.00 with a 3.00 coupon, refunded 5.00: recovered, 22.00 net;
    * ``b``: 1 x Chair (45.00 EUR), shown and accepted an offer, abandoned, enrolled in the
      holdout (score 0.6), never ordered: 45.00 lost;
    * ``c``: 1 x Lamp, ordered within minutes: not abandoned.
    """
    campaign = campaign_with_tiers(store.pk, activated_at=T - timedelta(days=30), name="Winback")
    tier = campaign.tiers.get()
    sent = {"campaign": campaign.pk, "tier": tier.pk, "position": 1, "channel": "email"}
    lamp = item("LAMP", 2, 1500, name="Lamp", category="home")
    chair = item("CHAIR", 1, 4500, name="Chair", category="furniture")
    minutes = timedelta(minutes=1)
    events = [
        new_event("cart.item_added", "a", lamp, at=T),
        new_event("cart.item_added", "b", chair, at=T),
        new_event("cart.item_added", "c", {**lamp, "quantity": 1}, at=T + 10 * minutes),
        new_event(
            "order.placed",
            "c",
            {"order_id": "o-c", "total": 1500, "currency": "EUR"},
            at=T + 20 * minutes,
        ),
        _system(
            "b",
            "recovery.offer_decided",
            T + 5 * minutes,
            decision="offer",
            offer={"id": "o1", "kind": "percent_discount"},
            score=0.55,
            exit_event=str(uuid.uuid4()),
            campaign=campaign.pk,
            tier=tier.pk,
        ),
        _system("b", "recovery.offer_shown", T + 5 * minutes, offer_id="o1"),
        _system("b", "recovery.offer_accepted", T + 6 * minutes, offer_id="o1"),
    ]
    for cart, holdout, score, step in (("a", False, 0.8, 1), ("b", True, 0.6, 2)):
        events.append(
            _system(
                cart,
                "campaign.enrolled",
                T + 35 * minutes,
                campaign=campaign.pk,
                holdout=holdout,
                score=score,
                abandoned_at=(T + 30 * minutes).isoformat(),
                steps=[{"step": step, "tier": tier.pk, "channel": "email"}],
            )
        )
    events += [
        _system("a", "campaign.step_sent", T + 60 * minutes, step=1, reason="", **sent),
        _system(
            "b", "campaign.step_suppressed", T + 60 * minutes, step=2, reason="holdout", **sent
        ),
        _system("a", "campaign.email_opened", T + 70 * minutes, step=1, **sent),
        _system("a", "campaign.link_clicked", T + 75 * minutes, step=1, **sent),
        _system(
            "a",
            "campaign.coupon_redeemed",
            T + 110 * minutes,
            code="SAVE3",
            discount_applied=300,
            currency="EUR",
        ),
        new_event(
            "order.placed",
            "a",
            {"order_id": "o-a", "total": 3000, "currency": "EUR"},
            at=T + 120 * minutes,
        ),
        new_event("order.refunded", "a", {"order_id": "o-a", "amount": 500}, at=T + 180 * minutes),
    ]
    events.sort(key=lambda e: e.occurred_at)
    for event in events:  # one at a time: each cart's events in order
        services.events_append(store_id=store.pk, events=[event], source=Source.server("test"))
    projectors.projector_catch_up(name="dashboard")
    return Log(store=store, campaign=campaign, tier=tier)


def member(store: Store, username: str, role: str = StoreMember.Role.MARKETER) -> User:
    user = User.objects.create_user(username=username, password="pw-not-secret")
    StoreMember.objects.create(store=store, user=user, role=role)
    return user


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def csv_rows(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


@pytest.fixture
def log(store) -> Log:
    return log_build(store)


@pytest.fixture
def marketer(log) -> Client:
    return client_for(member(log.store, "mia"))


def _filters(log: Log, **kw: Any) -> selectors.Filters:
    return selectors.Filters(store_id=log.store.pk, start=date(2026, 11, 8), end=FILTERS_END, **kw)


# -- the overview -------------------------------------------------------------------------------


def test_the_overview_shows_every_figure_with_its_change(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/?{RANGE}")

    assert response.status_code == 200
    page = response.content.decode()
    figures = {line.name: line for line in response.context["figures"]}
    assert figures["carts_started"].value == "3"
    assert figures["abandoned"].value == "2"
    assert figures["abandonment_rate"].value == "66.7%"
    assert figures["recovered"].value == "1"
    assert figures["recovered_revenue"].value == "€22.00"  # 30.00 - 3.00 coupon - 5.00 refund
    assert figures["discount_cost"].value == "€3.00"
    assert figures["emails_sent"].value == "1"
    assert figures["offers_shown"].value == "1"
    assert figures["offers_accepted"].value == "1"
    assert figures["carts_started"].previous == "0"
    assert figures["carts_started"].change == "new"
    assert figures["abandonment_rate"].change == "—"
    assert "8 Nov 2026 to 14 Nov 2026 (7 days), against 1 Nov 2026 to 7 Nov 2026 (7 days)" in page
    assert '<div class="value">€22.00</div>' in page
    assert '<div class="value">66.7%</div>' in page


def test_the_overview_figures_are_the_selectors(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/?{RANGE}")
    expected = selectors.overview(_filters(log), now=T + timedelta(days=2))

    shown = response.context["overview"]
    assert shown.carts_started == expected.carts_started
    assert shown.recovered_revenue == expected.recovered_revenue
    assert shown.lift == expected.lift


def test_the_overview_shows_the_lift_with_its_95_percent_interval(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/?{RANGE}")
    lift = selectors.overview(_filters(log), now=T + timedelta(days=2)).lift
    lines = {line.label: line for line in response.context["lift"]}

    assert lift.treated_rate == 1.0 and lift.holdout_rate == 0.0
    assert lines["Treated conversion rate"].estimate == "100.0%"
    assert lines["Holdout conversion rate"].estimate == "0.0%"
    assert lines["Conversion lift (treated - holdout)"].estimate == "+100.0%"
    # Newcombe's interval for 1/1 against 0/1: -0.1221 to 1.
    assert lift.absolute_low == pytest.approx(-0.1221, abs=1e-4)
    assert lines["Conversion lift (treated - holdout)"].interval == "-12.2% to +100.0%"
    assert "Lift with 95% confidence intervals (newcombe-wilson)" in response.content.decode()


def test_the_overview_has_a_chart_with_its_table(log, marketer):
    page = marketer.get(f"/dashboard/{log.store.pk}/?{RANGE}").content.decode()

    assert page.count('<svg xmlns="http://www.w3.org/2000/svg"') == 1
    assert 'aria-label="Carts per day"' in page
    assert '<g class="legend">' in page
    assert ">Day (UTC)</text>" in page
    assert ">10 Nov</text>" in page
    # The chart's table: one row per day, carts started on 10 November: none in progress, two
    # of them abandoned, three settled, 2 / 3 (one cohort per row: issue 14), one recovered.
    row = "<td>3</td><td>0</td><td>2</td><td>3</td><td>66.7%</td><td>1</td>"
    assert f'<th scope="row">2026-11-10</th>{row}' in page
    assert f'href="/dashboard/{log.store.pk}/export/overview.csv?{RANGE_HTML}"' in page
    assert f'href="/dashboard/{log.store.pk}/export/timeseries.csv?{RANGE_HTML}"' in page


def test_the_pages_link_to_each_other_and_to_the_live_view(log, marketer):
    page = marketer.get(f"/dashboard/{log.store.pk}/?{RANGE}").content.decode()

    for name in ("timeseries", "funnel", "offers", "scores", "products"):
        assert f'href="/dashboard/{log.store.pk}/{name}/?{RANGE_HTML}"' in page
    assert f'href="/dashboard/{log.store.pk}/live/"' in page


# -- the other pages ----------------------------------------------------------------------------


def test_the_time_series_page_charts_every_figure_per_day(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/timeseries/?{RANGE}")
    page = response.content.decode()

    assert response.status_code == 200
    for title in (
        "Carts per day",
        "Abandonment rate",
        "Recovered revenue and discount cost (EUR)",
        "Emails and offers",
    ):
        assert f"<title>{title}</title>" in page
    # Every day of each series, but the rate only where carts started (one day): no zeros made up.
    assert page.count('<circle class="point"') == 7 * (5 + 2 + 3) + 1
    assert "<title>recovered revenue (net), 10 Nov: €22.00</title>" in page  # the money format
    table = response.context["tables"][0]
    assert table["columns"][9:11] == [
        "recovered revenue EUR (ordered this day)",
        "discount cost EUR (redeemed this day)",
    ]
    assert table["rows"][2][9:11] == ["€22.00", "€3.00"]


def test_a_range_of_one_day_is_charted_per_hour(log, marketer):
    response = marketer.get(
        f"/dashboard/{log.store.pk}/timeseries/?start=2026-11-10&end=2026-11-10"
    )
    page = response.content.decode()

    assert "<title>Carts per hour</title>" in page
    assert ">Hour (UTC)</text>" in page
    assert ">10 Nov</text>" in page and ">03:00</text>" in page and ">21:00</text>" in page
    assert len(response.context["tables"][0]["rows"]) == 24
    # 10:00-11:00: three carts started, none in progress, two of them abandoned, three settled.
    assert response.context["tables"][0]["rows"][10][:5] == [
        "2026-11-10 10:00",
        "3",
        "0",
        "2",
        "3",
    ]


def test_the_funnel_page_shows_each_tier(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/funnel/?{RANGE}")
    page = response.content.decode()
    table = response.context["tables"][0]

    assert "<title>Funnel per campaign and tier</title>" in page
    assert "<title>Step outcomes per campaign and tier</title>" in page
    assert table["rows"] == [
        # campaign, id, position, channel, scheduled, waiting, sent, skipped, suppressed,
        # deferred, failed, cancelled, opened, clicked, converted, revenue
        [
            "Winback",
            str(log.campaign.pk),
            "1",
            "email",
            "2",
            "0",  # both steps finished (one sent, one suppressed)
            "1",
            "0",
            "1",
            "0",
            "0",
            "0",
            "1",
            "1",
            "1",
            "€22.00",
        ]
    ]
    assert page.count('<rect class="bar"') == 6 + 6  # the first chart has waiting too


def test_the_offers_page_shows_offers_by_kind(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/offers/?{RANGE}")
    offers, no_offer = response.context["tables"]

    assert offers["rows"] == [
        ["percent_discount", "1", "1", "1", "0", "100.0%"],
        ["all", "1", "1", "1", "0", "100.0%"],
    ]
    assert no_offer["rows"] == []
    assert "<title>Offers by kind</title>" in response.content.decode()


def test_the_scores_page_shows_the_distribution_and_calibration(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/scores/?{RANGE}")
    page = response.content.decode()
    rows = response.context["tables"][0]["rows"]

    assert rows[6] == ["0.6-0.7", "1", "60.0%", "100.0%", "0"]  # b: never ordered
    assert rows[8] == ["0.8-0.9", "1", "80.0%", "0.0%", "0"]  # a: ordered within 24 hours
    assert sum(row[1] != "0" for row in rows) == 2
    assert "<title>Score distribution</title>" in page
    assert '<line class="diagonal"' in page
    assert page.count('<circle class="point"') == 2


def test_the_products_page_ranks_lost_value(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/products/?{RANGE}")
    products, categories = response.context["tables"]

    assert products["rows"] == [["CHAIR", "Chair", "EUR", "1", "€45.00"]]
    assert categories["rows"] == [["furniture", "EUR", "1", "€45.00"]]
    assert "<title>Lost value by product</title>" in response.content.decode()


# -- filters ------------------------------------------------------------------------------------


def test_the_default_range_is_the_last_30_days(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/")

    filters = response.context["filters"]
    assert filters.days == 30
    assert filters.end == datetime.now(UTC).date() + timedelta(days=1)


def test_filters_narrow_the_figures(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/?{RANGE}&campaign={log.campaign.pk}")
    figures = {line.name: line.value for line in response.context["figures"]}

    assert response.context["filters"].campaign_id == log.campaign.pk
    assert figures["recovered"] == "1"
    assert f'<option value="{log.campaign.pk}" selected>Winback</option>' in (
        response.content.decode()
    )


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("start=2026-11-10&end=2026-11-01", "end", "The end must not be before the start."),
        ("start=2025-01-01&end=2026-11-01", "start", "The range is 670 days; at most 366."),
        ("channel=pigeon", "channel", "&quot;pigeon&quot; is not a valid choice."),
        ("campaign=999999", "campaign", "This store has no campaign 999999."),
        ("start=yesterday", "start", "Date has wrong format."),
    ],
)
def test_bad_filters_are_a_400_with_the_fields_errors(log, marketer, query, field, message):
    response = marketer.get(f"/dashboard/{log.store.pk}/?{query}")

    assert response.status_code == 400
    page = response.content.decode()
    assert f"<strong>{field}</strong>: {message}" in page
    assert '<section class="figures"' not in page


# -- CSV ----------------------------------------------------------------------------------------


def test_the_overview_csv_has_the_same_figures(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/export/overview.csv?{RANGE}")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="store{log.store.pk}-overview-2026-11-08-2026-11-14.csv"'
    )
    rows = {(r["figure"], r["currency"]): r for r in csv_rows(response)}
    assert rows[("carts_started", "")]["value"] == "3"
    assert rows[("carts_started", "")]["previous"] == "0"
    assert rows[("abandonment_rate", "")]["value"] == "0.6667"
    assert rows[("recovered_revenue", "EUR")]["value"] == "22.00"
    assert rows[("discount_cost", "EUR")]["value"] == "3.00"
    assert rows[("recovered_revenue", "EUR")]["kind"] == "money"


def test_the_lift_csv_has_the_estimates_and_their_intervals(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/export/lift.csv?{RANGE}")
    rows = {(r["measure"], r["currency"]): r for r in csv_rows(response)}

    assert rows[("conversion lift", "")] == {
        "measure": "conversion lift",
        "currency": "",
        "estimate": "1.0000",
        "low": "-0.1221",
        "high": "1.0000",
        "kind": "rate",
    }
    assert rows[("incremental revenue", "EUR")]["estimate"] == "22.00"
    assert rows[("incremental revenue", "EUR")]["low"] == ""  # one cart per group: no interval


def test_the_time_series_csv_of_one_day_has_iso_hours(log, marketer):
    response = marketer.get(
        f"/dashboard/{log.store.pk}/export/timeseries.csv?start=2026-11-10&end=2026-11-10"
    )
    rows = csv_rows(response)

    assert len(rows) == 24
    assert rows[10]["hour"] == "2026-11-10T10:00:00+00:00"
    assert rows[10]["carts started this hour"] == "3"


def test_every_table_exports_as_csv(log, marketer):
    expected = {
        "lift": 10,  # carts counted and pending per group, then the estimates
        "timeseries": 7,
        "funnel": 1,
        "offers": 2,
        "no_offer": 0,
        "scores": 10,
        "products": 1,
        "categories": 1,
    }
    for name, count in expected.items():
        response = marketer.get(f"/dashboard/{log.store.pk}/export/{name}.csv?{RANGE}")
        assert response.status_code == 200, name
        assert len(csv_rows(response)) == count, name


def test_the_time_series_csv_matches_the_selector(log, marketer):
    response = marketer.get(f"/dashboard/{log.store.pk}/export/timeseries.csv?{RANGE}")
    series = selectors.timeseries(_filters(log), now=T + timedelta(days=2))
    rows = csv_rows(response)

    assert [r["day"] for r in rows] == [p.start.date().isoformat() for p in series.points]
    assert [int(r["carts started this day"]) for r in rows] == [
        p.carts_started for p in series.points
    ]
    assert [int(r["of these: abandoned"]) for r in rows] == [
        p.started_abandoned for p in series.points
    ]
    assert rows[2]["recovered revenue EUR (ordered this day)"] == "22.00"


def test_an_unknown_table_is_a_404(log, marketer):
    assert marketer.get(f"/dashboard/{log.store.pk}/export/secrets.csv").status_code == 404


def test_bad_filters_in_an_export_are_a_400(log, marketer):
    response = marketer.get(
        f"/dashboard/{log.store.pk}/export/funnel.csv?start=2026-11-10&end=2026-11-01"
    )

    assert response.status_code == 400
    assert response.content.decode() == "end: The end must not be before the start."


@pytest.mark.parametrize(
    ("page", "empty_charts"),
    [("", 0), ("timeseries/", 1), ("funnel/", 2), ("offers/", 2), ("scores/", 1), ("products/", 2)],
)
def test_a_store_without_data_shows_zeros_and_empty_charts(store, page, empty_charts):
    client = client_for(member(store, "mia"))

    response = client.get(f"/dashboard/{store.pk}/{page}?{RANGE}")

    assert response.status_code == 200
    content = response.content.decode()
    # Days with zero carts are zeros on a line; a chart without any value says so (the rate
    # over no carts, tiers or products that do not exist, calibration without scored carts).
    assert content.count(">No data</text>") == empty_charts
    assert "NaN" not in content
