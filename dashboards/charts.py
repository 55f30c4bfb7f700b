"""Server-side SVG charts for the dashboards (pure: data in, an SVG string out).

Every chart has a ``<title>``, ``role="img"`` and an ``aria-label``, labelled axes with ticks and a
legend; all text is escaped. The output is deterministic: the same data gives the same bytes (the
tests compare snippets), and a missing or non-finite value is a gap, never ``NaN`` in the markup.
Pages put an HTML table with the same numbers next to each chart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from html import escape

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

WIDTH = 720
HEIGHT = 300
# Plot area margins: room for the tick labels and axis titles (left, bottom) and the legend (top).
LEFT, RIGHT, TOP, BOTTOM = 64, 32, 40, 56
MAX_X_LABELS = 8
FONT = 'font-family="system-ui, sans-serif" font-size="11"'

Formatter = Callable[[float], str]


@dataclasses.dataclass(frozen=True, slots=True)
class ChartSeries:
    """One named line or set of bars; ``None`` (or a non-finite number) is a missing value."""

    name: str
    values: Sequence[float | None]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(_finite(v) for v in self.values))


@dataclasses.dataclass(frozen=True, slots=True)
class CalibrationPoint:
    """A score band: mean predicted probability, observed rate, and its number of carts."""

    label: str
    predicted: float | None
    observed: float | None
    count: int


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# -- scales ---------------------------------------------------------------------------------------


def nice_ticks(low: float, high: float, *, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2, 2.5 or 5 x 10^k, from a multiple of
    the step at or below ``low`` to one at or above ``high``. An empty range becomes [low, low+1].
    ``integer``: steps of at least 1 and never 2.5 (for counts)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = 0.0, 1.0
    if high < low:
        low, high = high, low
    if high == low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    multiples = (1.0, 2.0, 5.0, 10.0) if integer and magnitude < 10 else (1.0, 2.0, 2.5, 5.0, 10.0)
    step = next(m * magnitude for m in multiples if m * magnitude >= raw)
    if integer:
        step = max(step, 1.0)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    # Rounded to the step's decimals: no 0.30000000000000004 in the labels.
    decimals = _decimals(step)
    return [round(i * step, decimals) for i in range(first, last + 1)]


def _decimals(step: float) -> int:
    for decimals in range(7):
        if abs(round(step, decimals) - step) < 1e-9:
            return decimals
    return 6


def tick_label(value: float, ticks: Sequence[float]) -> str:
    """A tick's text with as many decimals as the step needs; thousands separated by commas."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = _decimals(round(step, 6))
    text = f"{value:,.{decimals}f}"
    return "0" if text.strip("-0.,") == "" else text


def percent(value: float) -> str:
    """``0.25`` -> ``"25%"`` (for tick labels of rates)."""
    return f"{value * 100:.0f}%"


def _num(value: float) -> str:
    """A coordinate: at most two decimals, no trailing zeros, never ``-0``."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class _Scale:
    def __init__(self, ticks: Sequence[float], start: float, end: float) -> None:
        self.low, self.high = ticks[0], ticks[-1]
        self.start, self.end = start, end

    def __call__(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return self.start + (value - self.low) / span * (self.end - self.start)


# -- pieces ---------------------------------------------------------------------------------------


def _open(title: str, description: str, width: int, height: int) -> list[str]:
    label = escape(title)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{label}"'
        f' viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f"<title>{label}</title>",
        f"<desc>{escape(description)}</desc>",
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
    ]


def _y_axis(
    lines: list[str],
    ticks: Sequence[float],
    scale: _Scale,
    label: str,
    width: int,
    formatter: Formatter | None,
) -> None:
    lines.append('<g class="y-axis">')
    for tick in ticks:
        y = _num(scale(tick))
        text = formatter(tick) if formatter else tick_label(tick, ticks)
        lines.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y}" y2="{y}" stroke="#e5e5ea"/>'
            f'<text x="{LEFT - 6}" y="{y}" text-anchor="end" dominant-baseline="middle"'
            f" {FONT}>{escape(text)}</text>"
        )
    middle = _num((scale.start + scale.end) / 2)
    lines.append(
        f'<text class="axis-label" x="14" y="{middle}" text-anchor="middle"'
        f' transform="rotate(-90 14 {middle})" {FONT}>{escape(label)}</text>'
    )
    lines.append("</g>")


def _x_axis(
    lines: list[str],
    labels: Sequence[str],
    centres: Sequence[float],
    label: str,
    width: int,
    height: int,
) -> None:
    base = height - BOTTOM
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    lines.append('<g class="x-axis">')
    lines.append(
        f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{base}" y2="{base}" stroke="#6e6e73"/>'
    )
    for index, (text, x) in enumerate(zip(labels, centres, strict=True)):
        if index % every:
            continue
        cx = _num(x)
        lines.append(
            f'<line x1="{cx}" x2="{cx}" y1="{base}" y2="{base + 4}" stroke="#6e6e73"/>'
            f'<text x="{cx}" y="{base + 16}" text-anchor="middle" {FONT}>{escape(text)}</text>'
        )
    lines.append(
        f'<text class="axis-label" x="{_num((LEFT + width - RIGHT) / 2)}" y="{height - 8}"'
        f' text-anchor="middle" {FONT}>{escape(label)}</text>'
    )
    lines.append("</g>")


def _legend(lines: list[str], entries: Sequence[tuple[str, str, str]]) -> None:
    """``entries``: (name, colour, kind) where kind is ``swatch``, ``line`` or ``dash``."""
    lines.append('<g class="legend">')
    x = LEFT
    for name, colour, kind in entries:
        if kind == "swatch":
            mark = f'<rect x="{x}" y="12" width="12" height="12" fill="{colour}"/>'
        else:
            dash = ' stroke-dasharray="4 3"' if kind == "dash" else ""
            mark = (
                f'<line x1="{x}" x2="{x + 12}" y1="18" y2="18" stroke="{colour}"'
                f' stroke-width="2"{dash}/>'
            )
        lines.append(f'{mark}<text x="{x + 16}" y="22" {FONT}>{escape(name)}</text>')
        # A rough width per character keeps the entries apart without measuring text.
        x += 16 + 7 * len(name) + 16
    lines.append("</g>")


def _empty(lines: list[str], width: int, height: int) -> str:
    lines.append(
        f'<text class="empty" x="{width // 2}" y="{height // 2}" text-anchor="middle"'
        f" {FONT}>No data</text>"
    )
    lines.append("</svg>")
    return "".join(lines)


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _check_lengths(labels: Sequence[str], series: Sequence[ChartSeries]) -> None:
    for one in series:
        if len(one.values) != len(labels):
            raise ValueError(
                f"Series {one.name!r} has {len(one.values)} values for {len(labels)} labels."
            )


def _integers(values: Sequence[float]) -> bool:
    return all(v == int(v) for v in values)


def _present(series: Sequence[ChartSeries]) -> list[float]:
    return [v for one in series for v in one.values if v is not None]


# -- charts ---------------------------------------------------------------------------------------


def line_chart(
    *,
    title: str,
    x_labels: Sequence[str],
    series: Sequence[ChartSeries],
    x_label: str,
    y_label: str,
    area: bool = False,
    y_format: Formatter | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Lines (or filled areas) over ordered categories such as days or hours. A missing value
    breaks the line; a lone point between gaps is drawn as a dot."""
    _check_lengths(x_labels, series)
    lines = _open(title, f"Line chart of {y_label} by {x_label}.", width, height)
    values = _present(series)
    if not x_labels or not values:
        return _empty(lines, width, height)
    ticks = nice_ticks(min(0.0, *values), max(values), integer=_integers(values))
    y = _Scale(ticks, height - BOTTOM, TOP)
    span = width - RIGHT - LEFT
    step = span / (len(x_labels) - 1) if len(x_labels) > 1 else 0.0
    xs = [LEFT + i * step if len(x_labels) > 1 else LEFT + span / 2 for i in range(len(x_labels))]
    _y_axis(lines, ticks, y, y_label, width, y_format)
    _x_axis(lines, x_labels, xs, x_label, width, height)
    base = _num(y(max(ticks[0], min(0.0, ticks[-1]))))
    for index, one in enumerate(series):
        colour = _colour(index)
        lines.append(f'<g class="series" data-name="{escape(one.name)}">')
        for run in _runs(one.values):
            points = " ".join(f"{_num(xs[i])},{_num(y(v))}" for i, v in run)
            if area and len(run) > 1:
                first, last = _num(xs[run[0][0]]), _num(xs[run[-1][0]])
                lines.append(
                    f'<polygon points="{first},{base} {points} {last},{base}" fill="{colour}"'
                    ' fill-opacity="0.15" stroke="none"/>'
                )
            if len(run) > 1:
                lines.append(
                    f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
                )
        for i, v in enumerate(one.values):
            if v is not None:
                lines.append(
                    f'<circle class="point" cx="{_num(xs[i])}" cy="{_num(y(v))}" r="2.5"'
                    f' fill="{colour}"><title>{escape(one.name)}, {escape(x_labels[i])}:'
                    f" {escape(_value_text(v, y_format))}</title></circle>"
                )
        lines.append("</g>")
    _legend(lines, [(one.name, _colour(i), "line") for i, one in enumerate(series)])
    lines.append("</svg>")
    return "".join(lines)


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, v))
    if current:
        runs.append(current)
    return runs


def _value_text(value: float, formatter: Formatter | None) -> str:
    if formatter is not None:
        return formatter(value)
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def bar_chart(
    *,
    title: str,
    categories: Sequence[str],
    series: Sequence[ChartSeries],
    x_label: str,
    y_label: str,
    stacked: bool = False,
    y_format: Formatter | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
    gap: float = 0.2,
) -> str:
    """Vertical bars per category: one bar per series side by side (grouped), or the series on
    top of each other (stacked; values below zero count as zero). ``gap`` is the share of each
    category's band left empty; 0 makes a histogram."""
    _check_lengths(categories, series)
    lines = _open(
        title,
        f"{'Stacked' if stacked else 'Grouped'} bar chart of {y_label} by {x_label}.",
        width,
        height,
    )
    values = _present(series)
    if not categories or not values:
        return _empty(lines, width, height)
    if stacked:
        totals = [
            sum(max(one.values[i] or 0.0, 0.0) for one in series) for i in range(len(categories))
        ]
        ticks = nice_ticks(0.0, max(totals), integer=_integers(values))
    else:
        ticks = nice_ticks(min(0.0, *values), max(0.0, *values), integer=_integers(values))
    y = _Scale(ticks, height - BOTTOM, TOP)
    band = (width - RIGHT - LEFT) / len(categories)
    centres = [LEFT + band * (i + 0.5) for i in range(len(categories))]
    _y_axis(lines, ticks, y, y_label, width, y_format)
    zero = y(max(ticks[0], 0.0))
    inner = band * (1 - gap)
    bar_width = inner if stacked else inner / len(series)
    tops = [zero] * len(categories)
    for index, one in enumerate(series):
        colour = _colour(index)
        lines.append(f'<g class="series" data-name="{escape(one.name)}" fill="{colour}">')
        for i, v in enumerate(one.values):
            if v is None:
                continue
            if stacked:
                height_px = zero - y(max(v, 0.0))
                top = tops[i] - height_px
                tops[i] = top
                x = centres[i] - inner / 2
            else:
                top = min(y(v), zero)
                height_px = abs(zero - y(v))
                x = centres[i] - inner / 2 + index * bar_width
            lines.append(
                f'<rect class="bar" x="{_num(x)}" y="{_num(top)}" width="{_num(bar_width)}"'
                f' height="{_num(height_px)}"><title>{escape(one.name)}, {escape(categories[i])}:'
                f" {escape(_value_text(v, y_format))}</title></rect>"
            )
        lines.append("</g>")
    _x_axis(lines, categories, centres, x_label, width, height)
    _legend(lines, [(one.name, _colour(i), "swatch") for i, one in enumerate(series)])
    lines.append("</svg>")
    return "".join(lines)


def histogram(
    *,
    title: str,
    bins: Sequence[str],
    counts: Sequence[float | None],
    x_label: str,
    y_label: str,
    name: str = "carts",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Adjacent bars, one per bin (``bins`` are the bins' labels, e.g. ``"0.1-0.2"``)."""
    return bar_chart(
        title=title,
        categories=bins,
        series=[ChartSeries(name, counts)],
        x_label=x_label,
        y_label=y_label,
        width=width,
        height=height,
        gap=0.04,
    )


def calibration_chart(
    *,
    title: str,
    points: Sequence[CalibrationPoint],
    x_label: str = "Predicted abandonment",
    y_label: str = "Observed abandonment",
    width: int = 420,
    height: int = 380,
) -> str:
    """Observed against predicted rate per band on [0, 1] x [0, 1], with the diagonal of perfect
    calibration; a point's area grows with its band's carts."""
    lines = _open(title, f"Calibration chart: {y_label} against {x_label}.", width, height)
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    x = _Scale(ticks, LEFT, width - RIGHT)
    y = _Scale(ticks, height - BOTTOM, TOP)
    _y_axis(lines, ticks, y, y_label, width, percent)
    _x_axis(lines, [percent(t) for t in ticks], [x(t) for t in ticks], x_label, width, height)
    lines.append(
        f'<line class="diagonal" x1="{_num(x(0))}" y1="{_num(y(0))}" x2="{_num(x(1))}"'
        f' y2="{_num(y(1))}" stroke="#6e6e73" stroke-dasharray="4 3"/>'
    )
    shown = [
        (p, pred, obs)
        for p in points
        if (pred := _finite(p.predicted)) is not None and (obs := _finite(p.observed)) is not None
    ]
    if not shown:
        return _empty(lines, width, height)
    largest = max(max(p.count for p, _, _ in shown), 1)
    colour = _colour(0)
    lines.append(f'<g class="series" data-name="score bands" fill="{colour}" fill-opacity="0.8">')
    for p, pred, obs in shown:
        radius = 3 + 5 * math.sqrt(max(p.count, 0) / largest)
        cx, cy = _clamp(pred), _clamp(obs)
        lines.append(
            f'<circle class="point" cx="{_num(x(cx))}" cy="{_num(y(cy))}" r="{_num(radius)}">'
            f"<title>{escape(p.label)}: predicted {percent(pred)}, observed {percent(obs)},"
            f" {p.count} carts</title></circle>"
        )
    lines.append("</g>")
    _legend(
        lines,
        [("score bands", colour, "swatch"), ("perfect calibration", "#6e6e73", "dash")],
    )
    lines.append("</svg>")
    return "".join(lines)


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 1.0)
