"""Tables for the pages and their CSV exports, and the formatting of figures (pure).

A ``Table`` holds raw cells with a kind per column: the page formats them for reading (money with
its currency, rates in percent) and the CSV export writes them plainly (money in major units with
a currency column, rates as fractions), so a chart, its table and the export carry the same
numbers. What each page shows is built in dashboards/pages.py.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from carts import money

TEXT = "text"
COUNT = "count"
RATE = "rate"
MONEY = "money"  # a cell is (minor units, currency)
NUMBER = "number"
HOUR = "hour"  # a cell is an aware datetime: the local hour's start
MIXED = "mixed"  # the row's kind is in its last cell (the overview: counts, rates and money)
DASH = "—"
NOTHING = "Nothing in this period for these filters: try a longer range or All campaigns."


# -- formatting ---------------------------------------------------------------------------------


def major(amount: int | float, currency: str) -> Decimal:
    """Minor units as a decimal of major units: ``1299, "EUR"`` -> ``Decimal("12.99")``."""
    exponent = money.exponent(currency) if currency else 2
    return Decimal(round(amount)).scaleb(-exponent)


# One money format for every page, email and admin view: carts.money.display (the store's locale).
money_display = money.display


def money_text(amount: int | float | None, currency: str, locale: str = "") -> str:
    """``locale``: the store's (Store.locale); empty for the English house format."""
    return DASH if amount is None else money_display(amount, currency, locale)


def moneys_text(amounts: dict[str, int] | None, locale: str = "") -> str:
    """Money per currency: ``"€12.00, $3.00"``; nothing is ``"0"``."""
    if not amounts:
        return "0"
    return ", ".join(money_display(a, c, locale) for c, a in sorted(amounts.items()))


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


def cell_text(value: Any, kind: str, locale: str = "") -> str:
    """A cell for reading; money in the store's ``locale``."""
    if value is None:
        return DASH
    if kind == MONEY:
        amount, currency = value
        return money_text(amount, currency, locale)
    if kind == COUNT:
        return count_text(value)
    if kind == RATE:
        return rate_text(value)
    if kind == NUMBER:
        return f"{value:.3f}"
    if kind == HOUR:
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


def cell_csv(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == MONEY:
        amount, currency = value
        return str(major(amount, currency))
    if kind in (RATE, NUMBER):
        return f"{value:.4f}"
    if kind == HOUR:
        return str(value.isoformat())
    return str(value)


def day_label(moment: datetime | date, hourly: bool) -> str:
    """``"10 Nov"`` for a day; for an hour ``"09:00"``, or the day at midnight (short enough for
    eight labels on an axis)."""
    if hourly and isinstance(moment, datetime) and moment.hour:
        return f"{moment:%H}:00"
    return f"{moment.day} {moment:%b}"


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
    empty: str = ""  # what an empty table says (NOTHING when not given)
    help: str = ""  # the definition's anchor on the help page (/dashboard/help/#...)

    def display(self, locale: str = "") -> list[list[str]]:
        """The cells for reading, money in the store's ``locale`` (Store.locale)."""
        return [
            [cell_text(v, _kind(c, row), locale) for v, c in zip(row, self.columns, strict=True)]
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


# What a spreadsheet reads as the start of a formula (OWASP's list: = + - @, and TAB and CR, which
# some strip before looking at the next character).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A number as the export writes them (counts, "-12.99", "0.5000"): a "-" cell of this shape is a
# plain negative number, anything else starting with "-" is quoted.
_PLAIN_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)


def _csv_safe(text: str) -> str:
    """A text cell a spreadsheet could read as a formula or a non-finite number is quoted with '
    (``-NaN1`` is ``=-NAN1`` to Excel; ``NaN`` and ``inf`` become no value in most readers)."""
    if text[:1] in _FORMULA_STARTS and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    if _non_finite(text):
        return "'" + text
    return text


def _non_finite(text: str) -> bool:
    """``NaN``, ``-inf``, ``Infinity``, ``sNaN12``: what Decimal (and float) read as no number."""
    try:
        return not Decimal(text).is_finite()
    except ArithmeticError:
        return False


def table(
    name: str,
    caption: str,
    columns: Iterable[Column],
    rows: Iterable[Sequence],
    *,
    empty: str = "",
    help: str = "",
) -> Table:
    return Table(
        name,
        caption,
        tuple(columns),
        tuple(tuple(r) for r in rows),
        empty or NOTHING,
        help,
    )


def currencies(*amounts: Iterable[dict[str, int]]) -> list[str]:
    return sorted({c for group in amounts for one in group for c in one})
