"""What the pages and CSV exports show, built from the selectors' results (pure: no database).

A ``Table`` holds raw cells with a kind per column: the page formats them for reading (money with
its currency, rates in percent) and the CSV export writes them plainly (money in major units with
a currency column, rates as fractions), so the chart, its table and the export carry the same
numbers. The charts of each page are made here too, from the same rows.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from campaigns.emails import money_format
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

TEXT = "text"
COUNT = "count"
RATE = "rate"
MONEY = "money"  # a cell is (minor units, currency)
NUMBER = "number"
MIXED = "mixed"  # the row's kind is in its last cell (the overview: counts, rates and money)
DASH = "—"


# -- formatting ---------------------------------------------------------------------------------


def major(amount: int | float, currency: str) -> Decimal:
    """Minor units as a decimal of major units: ``1299, "EUR"`` -> ``Decimal("12.99")``."""
    exponent = money.exponent(currency) if currency else 2
    return Decimal(round(amount)).scaleb(-exponent)


def money_text(amount: int | float | None, currency: str) -> str:
    return DASH if amount is None else money_format(round(amount), currency)


def moneys_text(amounts: dict[str, int] | None) -> str:
    """Money per currency: ``"12.00 EUR, 3.00 USD"``; nothing is ``"0"``."""
    if not amounts:
        return "0"
    return ", ".join(money_format(a, c) for c, a in sorted(amounts.items()))


def count_text(value: int | float | None) -> str:
    if value is None:
        return DASH
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def rate_text(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"


def change_text(change: float | None, kind: str, value: Any, previous: Any) -> str:
    """Against the previous period: relative for counts and money, in points for rates."""
    if change is None:
        if kind != RATE and not previous and value:
            return "new"
        return DASH
    if kind == RATE:
        return f"{change * 100:+.1f} pts"
    return f"{change * 100:+.1f}%"


def interval_text(low: float | None, high: float | None, fmt: Callable[[float], str]) -> str:
    if low is None or high is None:
        return DASH
    return f"{fmt(low)} to {fmt(high)}"


def cell_text(value: Any, kind: str) -> str:
    if value is None:
        return DASH
    if kind == MONEY:
        return money_text(*value)
    if kind == COUNT:
        return count_text(value)
    if kind == RATE:
        return rate_text(value)
    if kind == NUMBER:
        return f"{value:.3f}"
    return str(value)


def cell_csv(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == MONEY:
        amount, currency = value
        return str(major(amount, currency))
    if kind in (RATE, NUMBER):
        return f"{value:.4f}"
    return str(value)


def day_label(moment: datetime | date, hourly: bool) -> str:
    return f"{moment.day} {moment:%b} {moment:%H}:00" if hourly else f"{moment.day} {moment:%b}"


# -- tables -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    label: str
    kind: str = TEXT


@dataclasses.dataclass(frozen=True, slots=True)
class Table:
    """``name`` is its export's: /dashboard/<store>/export/<name>.csv."""

    name: str
    caption: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]

    def display(self) -> list[list[str]]:
        return [
            [cell_text(v, _kind(c, row)) for v, c in zip(row, self.columns, strict=True)]
            for row in self.rows
        ]

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow([c.label for c in self.columns])
        for row in self.rows:
            writer.writerow(
                [
                    _csv_safe(cell_csv(v, _kind(c, row)))
                    for v, c in zip(row, self.columns, strict=True)
                ]
            )
        return out.getvalue()


def _kind(column: Column, row: Sequence[Any]) -> str:
    return str(row[-1]) if column.kind == MIXED else column.kind


def _csv_safe(text: str) -> str:
    """A text cell starting like a formula is quoted with ' (spreadsheets would run it)."""
    if text[:1] in ("=", "+", "@") or (text[:1] == "-" and not _is_number(text)):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


def _table(name: str, caption: str, columns: Iterable[Column], rows: Iterable[Sequence]) -> Table:
    return Table(name, caption, tuple(columns), tuple(tuple(r) for r in rows))


def _currencies(*amounts: Iterable[dict[str, int]]) -> list[str]:
    return sorted({c for group in amounts for one in group for c in one})


# -- overview -----------------------------------------------------------------------------------

FIGURES = (
    ("carts_started", "Carts started"),
    ("abandoned", "Abandoned"),
    ("abandonment_rate", "Abandonment rate"),
    ("recovered", "Recovered"),
    ("came_back", "Came back unaided"),
    ("orders", "Orders"),
    ("recovered_revenue", "Recovered revenue (net)"),
    ("discount_cost", "Discount cost"),
    ("emails_sent", "Emails sent"),
    ("offers_shown", "Offers shown"),
    ("offers_accepted", "Offers accepted"),
    ("treated_carts", "Treated carts (cohort)"),
    ("holdout_carts", "Holdout carts (cohort)"),
    ("conversion_lift", "Conversion lift vs holdout"),
    ("incremental_revenue", "Incremental revenue"),
)
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
    currencies = sorted({*value, *previous})
    if not currencies:
        return [("", 0, 0, None)]
    return [(c, value.get(c, 0), previous.get(c, 0), changes.get(c)) for c in currencies]


def figure_lines(overview: Overview) -> list[FigureLine]:
    lines = []
    for name, label in FIGURES:
        figure: Figure = getattr(overview, name)
        for currency, value, previous, change in _figure_parts(figure):
            if figure.kind == MONEY:
                shown = money_text(value, currency) if currency else "0"
                before = money_text(previous, currency) if currency else "0"
            elif figure.kind == RATE:
                signed = name == "conversion_lift"
                shown, before = rate_text(value, signed=signed), rate_text(previous, signed=signed)
            else:
                shown, before = count_text(value), count_text(previous)
            lines.append(
                FigureLine(
                    name=name,
                    label=label,
                    currency=currency,
                    value=shown,
                    previous=before,
                    change=change_text(change, figure.kind, value, previous),
                    tone=_tone(name, change),
                )
            )
    return lines


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
    return _table(
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


def lift_lines(overview: Overview) -> list[LiftLine]:
    lift = overview.lift
    conversions = interval_text(
        lift.incremental_conversions_low, lift.incremental_conversions_high, count_text
    )
    lines = [
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
                money_text(revenue.incremental, currency),
                DASH
                if low is None or high is None
                else f"{money_text(low, currency)} to {money_text(high, currency)}",
            )
        )
    return lines


# -- time series --------------------------------------------------------------------------------


def series_table(series: Series) -> Table:
    points = series.points
    revenue = _currencies([p.recovered_revenue for p in points])
    discount = _currencies([p.discount_cost for p in points])
    columns = [
        Column("hour" if series.granularity == "hour" else "day"),
        Column("carts started", COUNT),
        Column("abandoned", COUNT),
        Column("abandonment rate", RATE),
        Column("recovered", COUNT),
        Column("came back unaided", COUNT),
        Column("orders", COUNT),
        *(Column(f"recovered revenue {c}", MONEY) for c in revenue),
        *(Column(f"discount cost {c}", MONEY) for c in discount),
        Column("emails sent", COUNT),
        Column("offers shown", COUNT),
        Column("offers accepted", COUNT),
    ]
    rows = [
        (
            p.start.isoformat() if series.granularity == "hour" else p.start.date().isoformat(),
            p.carts_started,
            p.abandoned,
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
    unit = "hour" if series.granularity == "hour" else "day"
    return _table("timeseries", f"Figures per {unit} ({series.timezone})", columns, rows)


def series_charts(series: Series, *, only_carts: bool = False) -> list[str]:
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
                ChartSeries("abandoned", [p.abandoned for p in points]),
                ChartSeries("recovered", [p.recovered for p in points]),
                ChartSeries("came back unaided", [p.came_back for p in points]),
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
            y_label="Share of carts started",
            y_format=charts.percent,
        )
    )
    for currency in _currencies(
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
    name = row.campaign or f"Campaign {row.campaign_id}"
    return f"{name[:16]} · {row.position} {row.channel}"


def funnel_table(rows: Sequence[FunnelRow]) -> Table:
    reasons = sorted({r for row in rows for r in row.skipped_by_reason})
    currencies = _currencies([row.revenue for row in rows])
    columns = [
        Column("campaign"),
        Column("campaign id"),
        Column("tier position", COUNT),
        Column("channel"),
        Column("scheduled", COUNT),
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
        *(Column(f"revenue {c}", MONEY) for c in currencies),
    ]
    body = [
        (
            row.campaign,
            row.campaign_id,
            row.position,
            row.channel,
            row.scheduled,
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
            *((row.revenue.get(c, 0), c) for c in currencies),
        )
        for row in rows
    ]
    return _table("funnel", "Funnel per campaign and tier", columns, body)


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


def offers_table(result: OffersByKind) -> Table:
    rows = [
        (r.kind, r.offered, r.shown, r.accepted, r.dismissed, r.acceptance_rate)
        for r in result.kinds
    ]
    rate = result.accepted / result.shown if result.shown else None
    rows.append(("all", result.offered, result.shown, result.accepted, result.dismissed, rate))
    return _table(
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
    )


def no_offer_table(result: OffersByKind) -> Table:
    return _table(
        "no_offer",
        "Decisions to offer nothing, by reason",
        [Column("reason"), Column("decisions", COUNT)],
        sorted(result.no_offer_by_reason.items()),
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
    return _table(
        "scores",
        "Carts by abandonment score band: predicted and observed abandonment",
        [
            Column("band"),
            Column("carts", COUNT),
            Column("predicted abandonment", RATE),
            Column("observed abandonment", RATE),
        ],
        [(band_label(b), b.carts, b.predicted, b.observed) for b in bands],
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


def lost_table(rows: Sequence[LostValue], *, by: str) -> Table:
    if by == "sku":
        return _table(
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
        )
    return _table(
        "categories",
        "Top abandoned categories by lost value",
        [
            Column("category"),
            Column("currency"),
            Column("carts", COUNT),
            Column("lost value", MONEY),
        ],
        [(r.key or "(none)", r.currency, r.carts, (r.value, r.currency)) for r in rows],
    )


def lost_chart(rows: Sequence[LostValue], *, by: str) -> str:
    """Bars per product (or category), one series per currency (major units)."""
    currencies = sorted({r.currency for r in rows})
    labels = [(r.key or "(none)")[:18] for r in rows]
    return charts.bar_chart(
        title=f"Lost value by {'product' if by == 'sku' else 'category'}",
        categories=labels,
        series=[
            ChartSeries(c, [float(major(r.value, c)) if r.currency == c else None for r in rows])
            for c in currencies
        ],
        x_label="SKU" if by == "sku" else "Category",
        y_label="Lost value (major units)",
    )
