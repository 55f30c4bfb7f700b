"""What each dashboard page shows, built from the selectors' results (pure: no database): the
formatted figures, the tables (dashboards/tables.py) and the SVG charts (dashboards/charts.py),
each chart from the same rows as its table."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from carts import money
from dashboards import charts
from dashboards.charts import CalibrationPoint, ChartSeries
from dashboards.selectors import (
    Figure,
    FunnelRow,
    LostValue,
    OffersByKind,
    Overview,
    ScoreBand,
    Series,
)
from dashboards.tables import (
    COUNT,
    DASH,
    HOUR,
    MIXED,
    MONEY,
    NUMBER,
    RATE,
    Column,
    Table,
    change_text,
    count_text,
    currencies,
    day_label,
    interval_text,
    major,
    money_text,
    rate_text,
    table,
)

# -- overview -----------------------------------------------------------------------------------

FIGURES = (
    ("carts_started", "Carts started"),
    ("in_progress", "In progress (started, window not expired)"),
    ("abandoned", "Abandoned (in the period)"),
    ("abandonment_rate", "Abandonment rate (of settled carts started in the period)"),
    ("settled", "Settled carts (the rate's base)"),
    ("recovered", "Recovered"),
    ("came_back", "Came back unaided"),
    ("orders", "Orders"),
    ("recovered_revenue", "Recovered revenue (net)"),
    ("discount_cost", "Discount cost"),
    ("emails_sent", "Emails sent"),
    ("offers_shown", "Offers shown"),
    ("offers_accepted", "Offers accepted"),
    ("treated_carts", "Treated carts (cohort, conversion window closed)"),
    ("holdout_carts", "Holdout carts (cohort, conversion window closed)"),
    ("treated_pending", "Treated carts pending (conversion window open)"),
    ("holdout_pending", "Holdout carts pending (conversion window open)"),
    ("conversion_lift", "Conversion lift vs holdout"),
    ("incremental_revenue", "Incremental revenue"),
    ("onsite_recovered", "Recovered by on-site offer"),
    ("onsite_revenue", "On-site offer revenue (net)"),
    ("onsite_discount_cost", "On-site offer discount cost"),
)
# Each figure's definition: an anchor of the help page (docs/dashboards.md's definitions table,
# one row per figure; dashboards/help.py gives each row the id of its first cell).
ANCHORS = {
    "carts_started": "carts-started",
    "in_progress": "in-progress",
    "abandoned": "abandoned",
    "abandonment_rate": "abandonment-rate",
    "settled": "settled",
    "recovered": "recovered",
    "came_back": "came-back-unaided",
    "orders": "orders",
    "recovered_revenue": "recovered-revenue",
    "discount_cost": "discount-cost",
    "emails_sent": "emails-sent",
    "offers_shown": "offers-shown-accepted",
    "offers_accepted": "offers-shown-accepted",
    "treated_carts": "incremental-revenue-lift",
    "holdout_carts": "incremental-revenue-lift",
    "treated_pending": "incremental-revenue-lift",
    "holdout_pending": "incremental-revenue-lift",
    "conversion_lift": "incremental-revenue-lift",
    "incremental_revenue": "incremental-revenue-lift",
    "onsite_recovered": "recovered-by-on-site-offer",
    "onsite_revenue": "recovered-by-on-site-offer",
    "onsite_discount_cost": "on-site-offer-discount-cost",
}
# Figures where a rise is bad news (the page colours changes by what they mean).
LOWER_IS_BETTER = {"abandoned", "abandonment_rate", "discount_cost"}


@dataclasses.dataclass(frozen=True, slots=True)
class FigureLine:
    """One figure, or for money one currency of it, formatted."""

    name: str
    label: str
    currency: str
    value: str
    previous: str
    change: str
    tone: str  # "good", "bad" or ""
    anchor: str = ""  # the definition's anchor on the help page


def _tone(name: str, change: float | None) -> str:
    if not change:
        return ""
    better = change < 0 if name in LOWER_IS_BETTER else change > 0
    return "good" if better else "bad"


def _figure_parts(figure: Figure) -> list[tuple[str, Any, Any, float | None]]:
    """(currency, value, previous, change): one for a count or rate, one per currency for money
    (at least one: no money at all is 0 without a currency)."""
    if figure.kind != MONEY:
        change = figure.change if not isinstance(figure.change, dict) else None
        return [("", figure.value, figure.previous, change)]
    value = figure.value if isinstance(figure.value, dict) else {}
    previous = figure.previous if isinstance(figure.previous, dict) else {}
    changes = figure.change if isinstance(figure.change, dict) else {}
    codes = sorted({*value, *previous})
    if not codes:
        return [("", 0, 0, None)]
    return [(c, value.get(c, 0), previous.get(c, 0), changes.get(c)) for c in codes]


def figure_lines(overview: Overview, *, currency: str = "", locale: str = "") -> list[FigureLine]:
    """The overview's figures formatted; ``currency``: the store's, for money figures that have
    no amount in any currency (``"€0.00"`` rather than a bare ``"0"``); ``locale``: the store's,
    for money (Store.locale; empty: English)."""
    lines = []
    for name, label in FIGURES:
        figure: Figure = getattr(overview, name)
        for code, value, previous, change in _figure_parts(figure):
            if figure.kind == MONEY:
                shown = money_text(value, code or currency, locale)
                before = money_text(previous, code or currency, locale)
            elif figure.kind == RATE:
                signed = name == "conversion_lift"
                shown, before = rate_text(value, signed=signed), rate_text(previous, signed=signed)
            else:
                shown, before = count_text(value), count_text(previous)
            lines.append(
                FigureLine(
                    name=name,
                    label=label,
                    currency=code,
                    value=shown,
                    previous=before,
                    change=change_text(change, figure.kind, value, previous),
                    tone=_tone(name, change),
                    anchor=ANCHORS.get(name, ""),
                )
            )
    return lines


@dataclasses.dataclass(frozen=True, slots=True)
class OnsiteLine:
    """The on-site offer's balance in one currency, next to the holdout lift."""

    currency: str
    orders: str
    revenue: str
    discount_cost: str


def onsite_lines(overview: Overview, *, currency: str = "", locale: str = "") -> list[OnsiteLine]:
    """Orders credited to an accepted on-site offer, their net revenue and the offers' discount
    cost, per currency (one line in the store's currency when there are none)."""
    revenue = (
        overview.onsite_revenue.value if isinstance(overview.onsite_revenue.value, dict) else {}
    )
    cost = (
        overview.onsite_discount_cost.value
        if isinstance(overview.onsite_discount_cost.value, dict)
        else {}
    )
    codes = sorted({*revenue, *cost}) or [currency]
    orders = count_text(overview.onsite_recovered.value)  # type: ignore[arg-type]
    return [
        OnsiteLine(
            currency=c,
            orders=orders,
            revenue=money_text(revenue.get(c, 0), c, locale),
            discount_cost=money_text(cost.get(c, 0), c, locale),
        )
        for c in codes
    ]


def overview_table(overview: Overview) -> Table:
    rows = []
    for name, label in FIGURES:
        figure: Figure = getattr(overview, name)
        for currency, value, previous, change in _figure_parts(figure):
            if figure.kind == MONEY:
                value = (value, currency) if currency else None
                previous = (previous, currency) if currency else None
                rows.append((name, label, currency, value, previous, change, MONEY))
            else:
                rows.append((name, label, "", value, previous, change, figure.kind))
    return table(
        "overview",
        "Figures for the period against the previous one",
        [
            Column("figure"),
            Column("label"),
            Column("currency"),
            Column("value", MIXED),
            Column("previous", MIXED),
            Column("change", NUMBER),
            Column("kind"),
        ],
        rows,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class LiftLine:
    label: str
    estimate: str
    interval: str  # 95%


def _count(figure: Figure) -> int:
    value = figure.value
    return int(value) if isinstance(value, int | float) else 0


def lift_lines(overview: Overview, *, locale: str = "") -> list[LiftLine]:
    lift = overview.lift
    conversions = interval_text(
        lift.incremental_conversions_low, lift.incremental_conversions_high, count_text
    )
    treated, holdout = _count(overview.treated_pending), _count(overview.holdout_pending)
    lines = [
        LiftLine(
            "Carts counted (conversion window closed)",
            f"{count_text(_count(overview.treated_carts))} treated, "
            f"{count_text(_count(overview.holdout_carts))} holdout",
            "",
        ),
        LiftLine(
            "Pending (conversion window still open: not counted yet)",
            f"{count_text(treated + holdout)} pending "
            f"({count_text(treated)} treated, {count_text(holdout)} holdout)",
            "",
        ),
        LiftLine("Treated conversion rate", rate_text(lift.treated_rate), ""),
        LiftLine("Holdout conversion rate", rate_text(lift.holdout_rate), ""),
        LiftLine(
            "Conversion lift (treated - holdout)",
            rate_text(lift.absolute, signed=True),
            interval_text(
                lift.absolute_low, lift.absolute_high, lambda v: rate_text(v, signed=True)
            ),
        ),
        LiftLine("Relative lift", rate_text(lift.relative, signed=True), ""),
        LiftLine("Incremental conversions", count_text(lift.incremental_conversions), conversions),
    ]
    for revenue in lift.incremental_revenue:
        currency = revenue.currency
        low, high = revenue.low, revenue.high
        lines.append(
            LiftLine(
                f"Incremental revenue ({currency})",
                money_text(revenue.incremental, currency, locale),
                DASH
                if low is None or high is None
                else f"{money_text(low, currency, locale)} to {money_text(high, currency, locale)}",
            )
        )
    return lines


def lift_table(overview: Overview) -> Table:
    """The lift's estimates with their 95% intervals (the export of the page's lift table)."""
    lift = overview.lift
    rows: list[tuple[Any, ...]] = [
        ("treated carts counted", "", overview.treated_carts.value, None, None, COUNT),
        ("holdout carts counted", "", overview.holdout_carts.value, None, None, COUNT),
        ("treated carts pending", "", overview.treated_pending.value, None, None, COUNT),
        ("holdout carts pending", "", overview.holdout_pending.value, None, None, COUNT),
        ("treated conversion rate", "", lift.treated_rate, None, None, RATE),
        ("holdout conversion rate", "", lift.holdout_rate, None, None, RATE),
        ("conversion lift", "", lift.absolute, lift.absolute_low, lift.absolute_high, RATE),
        ("relative lift", "", lift.relative, None, None, RATE),
        (
            "incremental conversions",
            "",
            lift.incremental_conversions,
            lift.incremental_conversions_low,
            lift.incremental_conversions_high,
            NUMBER,
        ),
    ]
    for revenue in lift.incremental_revenue:
        c = revenue.currency

        def amount(value: float | None, c: str = c) -> tuple[float, str] | None:
            return None if value is None else (value, c)

        rows.append(
            (
                "incremental revenue",
                c,
                amount(revenue.incremental),
                amount(revenue.low),
                amount(revenue.high),
                MONEY,
            )
        )
    return table(
        "lift",
        f"Lift with 95% confidence intervals ({lift.method})",
        [
            Column("measure"),
            Column("currency"),
            Column("estimate", MIXED),
            Column("low", MIXED),
            Column("high", MIXED),
            Column("kind"),
        ],
        rows,
    )


# -- time series --------------------------------------------------------------------------------


EMPTY_CARTS = (
    "No carts yet in this period. A cart is counted when its first shopper event arrives; it "
    "counts as abandoned 30 minutes after its last activity without an order, and until then it "
    "is in progress."
)


def series_table(series: Series) -> Table:
    """One cohort per row for the cart columns: the carts started in the bucket (in progress,
    abandoned by now, settled, and the rate over the settled ones); orders, recoveries, money,
    emails and offers fall on the bucket they happened in (their headers say so)."""
    points = series.points
    revenue = currencies([p.recovered_revenue for p in points])
    discount = currencies([p.discount_cost for p in points])
    hourly = series.granularity == "hour"
    unit = "hour" if hourly else "day"
    columns = [
        Column("hour", HOUR) if hourly else Column("day"),
        Column(f"carts started this {unit}", COUNT),
        Column("of these: in progress", COUNT),
        Column("of these: abandoned", COUNT),
        Column("of these: settled", COUNT),
        Column("abandonment rate (abandoned / settled)", RATE),
        Column(f"recovered (ordered this {unit})", COUNT),
        Column(f"came back unaided (ordered this {unit})", COUNT),
        Column(f"orders placed this {unit}", COUNT),
        *(Column(f"recovered revenue {c} (ordered this {unit})", MONEY) for c in revenue),
        *(Column(f"discount cost {c} (redeemed this {unit})", MONEY) for c in discount),
        Column(f"emails sent this {unit}", COUNT),
        Column(f"offers shown this {unit}", COUNT),
        Column(f"offers accepted this {unit}", COUNT),
    ]
    rows = [
        (
            p.start if hourly else p.start.date().isoformat(),
            p.carts_started,
            p.started_in_progress,
            p.started_abandoned,
            p.started_settled,
            p.abandonment_rate,
            p.recovered,
            p.came_back,
            p.orders,
            *((p.recovered_revenue.get(c, 0), c) for c in revenue),
            *((p.discount_cost.get(c, 0), c) for c in discount),
            p.emails_sent,
            p.offers_shown,
            p.offers_accepted,
        )
        for p in points
    ]
    return table(
        "timeseries",
        f"Figures per {unit} ({series.timezone}): carts by the {unit} they started",
        columns,
        rows,
        empty=EMPTY_CARTS,
        help="carts-started",
    )


def money_format(currency: str, locale: str = "") -> charts.Formatter:
    """A chart's value (major units of ``currency``) as money in the store's ``locale``."""
    places = money.exponent(currency)
    return lambda value: money_text(round(value * 10**places), currency, locale)


def series_charts(series: Series, *, only_carts: bool = False, locale: str = "") -> list[str]:
    """The time series' charts; ``locale``: the store's, for money (ticks and values)."""
    hourly = series.granularity == "hour"
    unit = "Hour" if hourly else "Day"
    labels = [day_label(p.start, hourly) for p in series.points]
    x_label = f"{unit} ({series.timezone})"
    points = series.points
    out = [
        charts.line_chart(
            title=f"Carts per {unit.lower()}",
            x_labels=labels,
            series=[
                ChartSeries("started", [p.carts_started for p in points]),
                ChartSeries("of these: in progress", [p.started_in_progress for p in points]),
                ChartSeries("of these: abandoned", [p.started_abandoned for p in points]),
                ChartSeries("recovered (by order time)", [p.recovered for p in points]),
                ChartSeries("came back unaided (by order time)", [p.came_back for p in points]),
            ],
            x_label=x_label,
            y_label="Carts",
        )
    ]
    if only_carts:
        return out
    out.append(
        charts.line_chart(
            title="Abandonment rate",
            x_labels=labels,
            series=[ChartSeries("abandonment rate", [p.abandonment_rate for p in points])],
            x_label=x_label,
            y_label="Share of settled carts started",
            y_format=charts.percent,
        )
    )
    for currency in currencies(
        [p.recovered_revenue for p in points], [p.discount_cost for p in points]
    ):
        out.append(
            charts.line_chart(
                title=f"Recovered revenue and discount cost ({currency})",
                x_labels=labels,
                series=[
                    ChartSeries(
                        "recovered revenue (net)",
                        [
                            float(major(p.recovered_revenue.get(currency, 0), currency))
                            for p in points
                        ],
                    ),
                    ChartSeries(
                        "discount cost",
                        [float(major(p.discount_cost.get(currency, 0), currency)) for p in points],
                    ),
                ],
                x_label=x_label,
                y_label=currency,
                y_format=money_format(currency, locale),
                area=True,
            )
        )
    out.append(
        charts.line_chart(
            title="Emails and offers",
            x_labels=labels,
            series=[
                ChartSeries("emails sent", [p.emails_sent for p in points]),
                ChartSeries("offers shown", [p.offers_shown for p in points]),
                ChartSeries("offers accepted", [p.offers_accepted for p in points]),
            ],
            x_label=x_label,
            y_label="Count",
        )
    )
    return out


# -- funnel -------------------------------------------------------------------------------------


def _tier_label(row: FunnelRow) -> str:
    """Short enough for the axis, never cut: the campaign's id (its name is in the table)."""
    return f"#{row.campaign_id} · {row.position} {row.channel}"


EMPTY_FUNNEL = (
    "No campaign steps in this period. A campaign schedules its tiers' steps when it enrols an "
    "abandoned cart (30 minutes after the cart's last activity, or the campaign's own "
    "inactivity); a step waits until it is due, then is sent, skipped or suppressed (holdout)."
)


def funnel_table(rows: Sequence[FunnelRow]) -> Table:
    reasons = sorted({r for row in rows for r in row.skipped_by_reason})
    codes = currencies([row.revenue for row in rows])
    columns = [
        Column("campaign"),
        Column("campaign id"),
        Column("tier position", COUNT),
        Column("channel"),
        Column("scheduled", COUNT),
        Column("waiting (not yet due or sent)", COUNT),
        Column("sent", COUNT),
        Column("skipped", COUNT),
        *(Column(f"skipped: {r}", COUNT) for r in reasons),
        Column("suppressed (holdout)", COUNT),
        Column("deferred", COUNT),
        Column("failed", COUNT),
        Column("cancelled", COUNT),
        Column("opened", COUNT),
        Column("clicked", COUNT),
        Column("converted", COUNT),
        *(Column(f"revenue {c}", MONEY) for c in codes),
    ]
    body = [
        (
            row.campaign,
            row.campaign_id,
            row.position,
            row.channel,
            row.scheduled,
            row.waiting,
            row.sent,
            row.skipped,
            *(row.skipped_by_reason.get(r, 0) for r in reasons),
            row.suppressed,
            row.deferred,
            row.failed,
            row.cancelled,
            row.opened,
            row.clicked,
            row.converted,
            *((row.revenue.get(c, 0), c) for c in codes),
        )
        for row in rows
    ]
    return table(
        "funnel",
        "Funnel per campaign and tier",
        columns,
        body,
        empty=EMPTY_FUNNEL,
        help="funnel",
    )


def funnel_charts(rows: Sequence[FunnelRow]) -> list[str]:
    labels = [_tier_label(row) for row in rows]

    def series(name: str, attr: str) -> ChartSeries:
        return ChartSeries(name, [getattr(row, attr) for row in rows])

    return [
        charts.bar_chart(
            title="Funnel per campaign and tier",
            categories=labels,
            series=[
                series("scheduled", "scheduled"),
                series("waiting", "waiting"),
                series("sent", "sent"),
                series("opened", "opened"),
                series("clicked", "clicked"),
                series("converted", "converted"),
            ],
            x_label="Campaign · tier position and channel",
            y_label="Steps / carts",
        ),
        charts.bar_chart(
            title="Step outcomes per campaign and tier",
            categories=labels,
            series=[
                series("sent", "sent"),
                series("skipped", "skipped"),
                series("suppressed (holdout)", "suppressed"),
                series("deferred", "deferred"),
                series("failed", "failed"),
                series("cancelled", "cancelled"),
            ],
            x_label="Campaign · tier position and channel",
            y_label="Steps",
            stacked=True,
        ),
    ]


# -- offers -------------------------------------------------------------------------------------


EMPTY_OFFERS = (
    "No on-site offers in this period. An offer is decided when a shopper shows exit intent on "
    "the storefront and an active campaign has an on-site tier; it counts on the day it was "
    "decided, then as shown, accepted or dismissed. A channel filter other than on-site leaves "
    "none."
)


def offers_table(result: OffersByKind) -> Table:
    """Offers by kind and a total row; without any offer, no rows (the empty state says why)."""
    rows = [
        (r.kind, r.offered, r.shown, r.accepted, r.dismissed, r.acceptance_rate)
        for r in result.kinds
    ]
    if rows:
        rate = result.accepted / result.shown if result.shown else None
        rows.append(("all", result.offered, result.shown, result.accepted, result.dismissed, rate))
    return table(
        "offers",
        "On-site offers by kind",
        [
            Column("kind"),
            Column("offered", COUNT),
            Column("shown", COUNT),
            Column("accepted", COUNT),
            Column("dismissed", COUNT),
            Column("acceptance rate", RATE),
        ],
        rows,
        empty=EMPTY_OFFERS,
        help="offers-shown-accepted",
    )


def no_offer_table(result: OffersByKind) -> Table:
    return table(
        "no_offer",
        "Decisions to offer nothing, by reason",
        [Column("reason"), Column("decisions", COUNT)],
        sorted(result.no_offer_by_reason.items()),
        empty=(
            "No decisions to offer nothing in this period. An exit intent on the storefront "
            "leads to an offer decision when the store has an active on-site tier."
        ),
        help="offers-shown-accepted",
    )


def offers_charts(result: OffersByKind) -> list[str]:
    kinds = result.kinds
    reasons = sorted(result.no_offer_by_reason.items())
    return [
        charts.bar_chart(
            title="Offers by kind",
            categories=[r.kind for r in kinds],
            series=[
                ChartSeries("offered", [r.offered for r in kinds]),
                ChartSeries("shown", [r.shown for r in kinds]),
                ChartSeries("accepted", [r.accepted for r in kinds]),
                ChartSeries("dismissed", [r.dismissed for r in kinds]),
            ],
            x_label="Offer kind",
            y_label="Offers",
        ),
        charts.bar_chart(
            title="No offer, by reason",
            categories=[reason for reason, _ in reasons],
            series=[ChartSeries("decisions", [n for _, n in reasons])],
            x_label="Reason",
            y_label="Decisions",
        ),
    ]


# -- scores -------------------------------------------------------------------------------------


def band_label(band: ScoreBand) -> str:
    return f"{band.low:.1f}-{band.high:.1f}"


def scores_table(bands: Sequence[ScoreBand]) -> Table:
    return table(
        "scores",
        "Carts by abandonment score band: predicted and observed abandonment over settled carts "
        "(scored at least 24 hours ago); pending carts are not counted yet",
        [
            Column("band"),
            Column("settled carts", COUNT),
            Column("predicted abandonment (settled)", RATE),
            Column("observed abandonment (settled)", RATE),
            Column("pending carts (outcome not known yet)", COUNT),
        ],
        [(band_label(b), b.carts, b.predicted, b.observed, b.pending) for b in bands],
        help="calibration",
    )


def scores_charts(bands: Sequence[ScoreBand]) -> list[str]:
    return [
        charts.histogram(
            title="Score distribution",
            bins=[band_label(b) for b in bands],
            counts=[b.carts for b in bands],
            x_label="Abandonment score",
            y_label="Carts",
        ),
        charts.calibration_chart(
            title="Calibration: predicted against observed abandonment",
            points=[
                CalibrationPoint(band_label(b), b.predicted, b.observed, b.carts) for b in bands
            ],
        ),
    ]


# -- lost value ---------------------------------------------------------------------------------


EMPTY_LOST = (
    "No abandoned carts in this period yet: a cart counts as abandoned 30 minutes after its last "
    "activity without an order; its lines then count here unless it ordered later."
)


def lost_table(rows: Sequence[LostValue], *, by: str) -> Table:
    if by == "sku":
        return table(
            "products",
            "Top abandoned products by lost value",
            [
                Column("sku"),
                Column("name"),
                Column("currency"),
                Column("carts", COUNT),
                Column("lost value", MONEY),
            ],
            [(r.key, r.name, r.currency, r.carts, (r.value, r.currency)) for r in rows],
            empty=EMPTY_LOST,
            help="top-abandoned-products",
        )
    return table(
        "categories",
        "Top abandoned categories by lost value",
        [
            Column("category"),
            Column("currency"),
            Column("carts", COUNT),
            Column("lost value", MONEY),
        ],
        [(r.key or "(none)", r.currency, r.carts, (r.value, r.currency)) for r in rows],
        empty=EMPTY_LOST,
        help="top-abandoned-products",
    )


def lost_chart(rows: Sequence[LostValue], *, by: str, locale: str = "") -> str:
    """Bars per product (or category), one series per currency (major units); with one currency,
    its values as money in the store's ``locale``."""
    codes = sorted({r.currency for r in rows})
    single = codes[0] if len(codes) == 1 and codes[0] else ""
    labels = [(r.key or "(none)")[:18] for r in rows]
    return charts.bar_chart(
        title=f"Lost value by {'product' if by == 'sku' else 'category'}",
        categories=labels,
        series=[
            ChartSeries(c, [float(major(r.value, c)) if r.currency == c else None for r in rows])
            for c in codes
        ],
        x_label="SKU" if by == "sku" else "Category",
        y_label=f"Lost value ({single})" if single else "Lost value (major units)",
        y_format=money_format(single, locale) if single else None,
    )
