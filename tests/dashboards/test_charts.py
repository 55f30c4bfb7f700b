"""dashboards.charts (pure, no database): exact snippets of deterministic SVG output."""

import re
import xml.etree.ElementTree as ET

import pytest

from dashboards import charts
from dashboards.charts import CalibrationPoint, ChartSeries

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - our own output


@pytest.mark.parametrize(
    ("low", "high", "integer", "ticks"),
    [
        (0, 7, False, [0, 2, 4, 6, 8]),
        (0, 1234, False, [0, 250, 500, 750, 1000, 1250]),
        (0, 0.3, False, [0, 0.1, 0.2, 0.3]),
        (-3, 17, False, [-5, 0, 5, 10, 15, 20]),
        (0, 0, False, [0, 0.2, 0.4, 0.6, 0.8, 1]),
        (0, 0, True, [0, 1]),
        (0, 3, True, [0, 1, 2, 3]),
        (0, 23, True, [0, 5, 10, 15, 20, 25]),
        (0, 125, True, [0, 25, 50, 75, 100, 125]),
        (0.4, 3.2, True, [0, 1, 2, 3, 4]),
    ],
)
def test_nice_ticks_are_round_and_cover_the_range(low, high, integer, ticks):
    assert charts.nice_ticks(low, high, integer=integer) == ticks


def test_tick_labels_use_the_steps_decimals_and_thousands_separators():
    ticks = charts.nice_ticks(0, 0.3)
    assert [charts.tick_label(t, ticks) for t in ticks] == ["0", "0.1", "0.2", "0.3"]
    ticks = charts.nice_ticks(0, 12000)
    assert [charts.tick_label(t, ticks) for t in ticks] == [
        "0",
        "2,500",
        "5,000",
        "7,500",
        "10,000",
        "12,500",
    ]


def _line() -> str:
    return charts.line_chart(
        title="Carts <per> day",
        x_labels=["1 Nov", "2 Nov", "3 Nov"],
        series=[
            ChartSeries("started", [4, 2, 3]),
            ChartSeries("abandoned", [1, None, float("nan")]),
        ],
        x_label="Day",
        y_label="Carts",
    )


def test_line_chart_is_accessible_and_escapes_its_text():
    svg = _line()

    assert svg.startswith(
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"'
        ' aria-label="Carts &lt;per&gt; day" viewBox="0 0 720 300"'
    )
    assert "<title>Carts &lt;per&gt; day</title>" in svg
    assert "<desc>Line chart of Carts by Day.</desc>" in svg
    assert "<per>" not in svg
    _parse(svg)  # well-formed XML


def test_line_chart_has_labelled_axes_with_ticks_and_a_legend():
    svg = _line()
    root = _parse(svg)
    y_ticks = [t.text for t in root.iterfind(f"{SVG}g[@class='y-axis']/{SVG}text")]
    x_ticks = [t.text for t in root.iterfind(f"{SVG}g[@class='x-axis']/{SVG}text")]
    legend = [t.text for t in root.iterfind(f"{SVG}g[@class='legend']/{SVG}text")]

    assert y_ticks == ["0", "1", "2", "3", "4", "Carts"]
    assert x_ticks == ["1 Nov", "2 Nov", "3 Nov", "Day"]
    assert legend == ["started", "abandoned"]


def test_line_chart_draws_a_point_per_value_and_gaps_for_missing_ones():
    svg = _line()

    assert svg.count('<circle class="point"') == 4  # 3 started + 1 abandoned
    assert svg.count("<polyline") == 1  # abandoned is a lone point: no line
    assert '<polyline points="64,40 376,142 688,91"' in svg  # 4, 2, 3 on 0-4
    assert "<title>abandoned, 1 Nov: 1</title>" in svg
    assert re.findall(r"\b(?:nan|inf)\b", svg, flags=re.IGNORECASE) == []


def test_area_chart_fills_under_each_line():
    svg = charts.line_chart(
        title="Revenue",
        x_labels=["a", "b"],
        series=[ChartSeries("EUR", [10.5, 20.25])],
        x_label="Day",
        y_label="Revenue (EUR)",
        area=True,
    )

    assert svg.count("<polygon") == 1
    # Ticks 0-25: 10.5 sits at 244 - 10.5 / 25 * 204 px.
    assert '<polygon points="64,244 64,158.32 688,78.76 688,244"' in svg


def test_the_same_data_gives_the_same_bytes():
    assert _line() == _line()


def test_many_days_label_at_most_eight_ticks_on_the_x_axis():
    labels = [f"d{i}" for i in range(30)]
    svg = charts.line_chart(
        title="t",
        x_labels=labels,
        series=[ChartSeries("s", list(range(30)))],
        x_label="Day",
        y_label="n",
    )
    root = _parse(svg)
    x_ticks = [t.text for t in root.iterfind(f"{SVG}g[@class='x-axis']/{SVG}text")][:-1]

    assert x_ticks == ["d0", "d4", "d8", "d12", "d16", "d20", "d24", "d28"]
    assert svg.count('<circle class="point"') == 30


def test_a_chart_without_values_says_no_data():
    svg = charts.line_chart(
        title="Empty",
        x_labels=["a", "b"],
        series=[ChartSeries("s", [None, None])],
        x_label="x",
        y_label="y",
    )

    assert '<text class="empty"' in svg
    assert ">No data</text>" in svg
    assert "<circle" not in svg


def test_series_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match="has 1 values for 2 labels"):
        charts.bar_chart(
            title="t", categories=["a", "b"], series=[ChartSeries("s", [1])], x_label="", y_label=""
        )


def test_grouped_bars_sit_side_by_side():
    svg = charts.bar_chart(
        title="Funnel",
        categories=["Tier 1", "Tier 2"],
        series=[ChartSeries("sent", [4, 2]), ChartSeries("opened", [2, 1])],
        x_label="Tier",
        y_label="Steps",
    )
    bars = re.findall(r'<rect class="bar" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)"', svg)

    assert len(bars) == 4
    assert bars[0] == ("95.2", "40", "124.8")  # sent, tier 1: the full height
    assert bars[2] == ("220", "142", "124.8")  # opened, tier 1: next to it, half as high
    assert "<desc>Grouped bar chart of Steps by Tier.</desc>" in svg
    assert "<title>opened, Tier 2: 1</title>" in svg


def test_stacked_bars_sit_on_top_of_each_other():
    svg = charts.bar_chart(
        title="Offers",
        categories=["a", "b"],
        series=[ChartSeries("x", [1, 2]), ChartSeries("y", [3, 4])],
        x_label="Kind",
        y_label="Offers",
        stacked=True,
    )
    bars = re.findall(
        r'<rect class="bar" x="([\d.]+)" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"', svg
    )

    assert bars == [
        ("95.2", "210", "34"),
        ("407.2", "176", "68"),
        ("95.2", "108", "102"),
        ("407.2", "40", "136"),
    ]
    root = _parse(svg)
    assert [t.text for t in root.iterfind(f"{SVG}g[@class='y-axis']/{SVG}text")] == [
        "0",
        "2",
        "4",
        "6",
        "Offers",
    ]


def test_negative_bars_hang_below_zero():
    svg = charts.bar_chart(
        title="t", categories=["a"], series=[ChartSeries("s", [-2])], x_label="", y_label=""
    )

    assert '<rect class="bar" x="126.4" y="40" width="499.2" height="204">' in svg
    assert ">-2<" in svg


def test_histogram_has_one_adjacent_bar_per_bin():
    bins = [f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)]
    svg = charts.histogram(
        title="Scores",
        bins=bins,
        counts=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        x_label="Abandonment score",
        y_label="Carts",
    )

    assert svg.count('<rect class="bar"') == 10
    assert 'width="59.9"' in svg  # 62.4 px per bin, 4% gap
    assert "<title>carts, 0.9-1.0: 9</title>" in svg


def test_calibration_chart_draws_the_diagonal_and_a_point_per_band():
    svg = charts.calibration_chart(
        title="Calibration",
        points=[
            CalibrationPoint("0.0-0.1", 0.05, 0.10, 10),
            CalibrationPoint("0.9-1.0", 0.95, 0.80, 40),
            CalibrationPoint("0.5-0.6", None, None, 0),
        ],
    )
    root = _parse(svg)

    assert '<line class="diagonal" x1="64" y1="324" x2="388" y2="40"' in svg
    assert svg.count('<circle class="point"') == 2
    assert "<title>0.9-1.0: predicted 95%, observed 80%, 40 carts</title>" in svg
    assert [t.text for t in root.iterfind(f"{SVG}g[@class='x-axis']/{SVG}text")] == [
        "0%",
        "20%",
        "40%",
        "60%",
        "80%",
        "100%",
        "Predicted abandonment",
    ]
    assert [t.text for t in root.iterfind(f"{SVG}g[@class='legend']/{SVG}text")] == [
        "score bands",
        "perfect calibration",
    ]
