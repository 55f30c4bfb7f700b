"""dashboards.tables (pure, no database): formatting of figures and the CSV of a table."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from dashboards import tables
from dashboards.tables import COUNT, HOUR, MONEY, RATE, Column


@pytest.mark.parametrize(
    ("amount", "currency", "text", "major"),
    [
        (1299, "EUR", "€12.99", Decimal("12.99")),
        (1299, "JPY", "¥1,299", Decimal("1299")),
        (1299, "KWD", "KWD 1.299", Decimal("1.299")),
        (-500, "USD", "-$5.00", Decimal("-5.00")),
        (1234.6, "EUR", "€12.35", Decimal("12.35")),  # a mean: rounded to minor units
    ],
)
def test_money_is_shown_in_major_units_with_its_currency(amount, currency, text, major):
    assert tables.money_text(amount, currency) == text
    assert tables.major(amount, currency) == major


def test_money_per_currency_is_never_added_up():
    assert tables.moneys_text({"USD": 300, "EUR": 1200}) == "€12.00, $3.00"
    assert tables.moneys_text({}) == "0"


@pytest.mark.parametrize(
    ("change", "kind", "value", "previous", "text"),
    [
        (0.25, "count", 5, 4, "+25.0%"),
        (-0.5, "money", 100, 200, "-50.0%"),
        (0.031, "rate", 0.5, 0.469, "+3.1 pts"),
        (None, "count", 3, 0, "new"),
        (None, "count", 0, 0, "—"),
        (None, "rate", 0.5, None, "—"),
    ],
)
def test_changes_are_relative_or_in_points(change, kind, value, previous, text):
    assert tables.change_text(change, kind, value, previous) == text


def test_day_and_hour_labels_are_short():
    day = datetime(2026, 11, 10, 0, tzinfo=UTC)

    assert tables.day_label(day, False) == "10 Nov"
    assert tables.day_label(day, True) == "10 Nov"  # midnight names the day
    assert tables.day_label(day.replace(hour=9), True) == "09:00"


def _table() -> tables.Table:
    return tables.table(
        "products",
        "Products",
        [Column("sku"), Column("carts", COUNT), Column("rate", RATE), Column("value", MONEY)],
        [
            ("=HYPERLINK(1)", 1200, 0.5, (450050, "EUR")),
            ("-5", 3, None, (7, "JPY")),
            ("-x", 0, 1.0, (0, "EUR")),
        ],
    )


def test_a_table_shows_formatted_cells():
    assert _table().display() == [
        ["=HYPERLINK(1)", "1,200", "50.0%", "€4,500.50"],
        ["-5", "3", "—", "¥7"],
        ["-x", "0", "100.0%", "€0.00"],
    ]


def test_a_tables_csv_has_plain_numbers_and_no_formulas():
    assert _table().csv() == (
        "sku,carts,rate,value\r\n"
        "'=HYPERLINK(1),1200,0.5000,4500.50\r\n"
        "-5,3,,7\r\n"
        "'-x,0,1.0000,0.00\r\n"
    )


def test_an_hour_cell_is_iso_in_the_csv_and_short_on_the_page():
    hour = datetime(2026, 11, 10, 9, tzinfo=UTC)
    table = tables.table("t", "t", [Column("hour", HOUR)], [(hour,)])

    assert table.display() == [["2026-11-10 09:00"]]
    assert table.csv() == "hour\r\n2026-11-10T09:00:00+00:00\r\n"


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        # non-finite numbers are no numbers: quoted, whatever they start with
        ("-NaN1", "'-NaN1"),  # Excel reads =-NAN1, a reference to cell NAN1
        ("-nan", "'-nan"),
        ("NaN", "'NaN"),
        ("sNaN", "'sNaN"),
        ("Infinity", "'Infinity"),
        ("-inf", "'-inf"),
        ("+Inf", "'+Inf"),
        # formula starts, TAB and CR included
        ("=1+1", "'=1+1"),
        ("+5", "'+5"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("\t5", "'\t5"),
        ("-1_000", "'-1_000"),  # Decimal reads it; a spreadsheet does not
        ("- 5", "'- 5"),
        ("-\u0665", "'-\u0665"),  # an Arabic-Indic 5: Decimal reads it, a spreadsheet does not
        ("-5 ", "'-5 "),
        # plain numbers and text stay as they are
        ("-5", "-5"),
        ("-12.99", "-12.99"),
        ("-0.5000", "-0.5000"),
        ("-.5", "-.5"),
        ("-1E+3", "-1E+3"),
        ("5", "5"),
        ("SKU-1", "SKU-1"),
        ("Nancy", "Nancy"),
        ("info", "info"),
    ],
)
def test_the_csv_quotes_formulas_and_non_finite_numbers(cell, written):
    table = tables.table("t", "t", [Column("sku")], [(cell,)])

    assert table.csv() == "sku\r\n" + _csv_field(written) + "\r\n"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_rate_is_quoted_in_the_csv(value):
    table = tables.table("t", "t", [Column("rate", RATE)], [(value,)])

    assert table.csv() == "rate\r\n'" + f"{value:.4f}" + "\r\n"


def _csv_field(text: str) -> str:
    # The csv module quotes a field holding a CR (and only such fields, among these).
    return f'"{text}"' if "\r" in text else text
