"""The dashboards fold's work on a cart's lines (review finding 8): linear in the lines an event
touches, not in the cart's line count. Pure: no database.

Work is counted, not timed: the cart's lines are lists that count every access to them (reads,
writes, comparisons, iteration), so a fold that copies, re-sums or scans the lines on each event
shows up as thousands of accesses per event, on any machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, SupportsIndex

from carts.models import CartEvent
from dashboards.projection.counters import Counters
from dashboards.projection.fold import fold
from dashboards.projection.row import Fact, zone_of

T = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
UTC_ZONE = zone_of("UTC")


class CountedLine(list):
    """A line that counts every access to it (in a class-wide counter)."""

    accesses: ClassVar[int] = 0

    def __getitem__(self, i: Any) -> Any:
        CountedLine.accesses += 1
        return super().__getitem__(i)

    def __setitem__(self, i: Any, value: Any) -> None:
        CountedLine.accesses += 1
        super().__setitem__(i, value)

    def __iter__(self) -> Any:
        CountedLine.accesses += 1
        return super().__iter__()

    def __len__(self) -> int:
        CountedLine.accesses += 1
        return super().__len__()

    def __eq__(self, other: object) -> bool:
        CountedLine.accesses += 1
        return super().__eq__(other)

    def __contains__(self, value: object) -> bool:
        CountedLine.accesses += 1
        return super().__contains__(value)

    def index(self, *args: Any) -> int:  # type: ignore[override]
        CountedLine.accesses += 1
        return super().index(*args)

    def __delitem__(self, i: SupportsIndex | slice) -> None:
        CountedLine.accesses += 1
        super().__delitem__(i)

    __hash__ = None  # type: ignore[assignment]


def _event(type: str, data: dict[str, Any], n: int) -> tuple[CartEvent, dict[str, Any]]:
    event = CartEvent(
        position=n,
        store_id=1,
        cart="c",
        version=n,
        type=type,
        data=data,
        occurred_at=T + timedelta(seconds=n),
        recorded_at=T + timedelta(seconds=n),
    )
    return event, data


def _added(sku: str, quantity: int, price: int, n: int) -> tuple[CartEvent, dict[str, Any]]:
    data = {"sku": sku, "name": sku.upper(), "quantity": quantity, "unit_price": price}
    return _event("cart.item_added", {**data, "currency": "EUR", "category": "c"}, n)


def _reference(lines: list[list[Any]], type: str, data: dict[str, Any]) -> None:
    """The item fold as carts/projections.py states it, on a plain list (scans: test only)."""
    sku = data["sku"]
    i = next((i for i, line in enumerate(lines) if line[0] == sku), -1)
    if type == "cart.item_added":
        if i >= 0:
            lines[i][2] += data["quantity"]
            lines[i][3] = data["unit_price"]
        else:
            lines.append([sku, data["name"], data["quantity"], data["unit_price"], "c"])
        return
    if i < 0:
        return
    if type == "cart.item_removed":
        remaining = lines[i][2] - (data.get("quantity") or 10**9)
    else:
        remaining = data["quantity"]
    if remaining <= 0:
        del lines[i]
    else:
        lines[i][2] = remaining


def _cart(n: int) -> Fact:
    """A cart of ``n`` lines of one item at 100, as a batch loads it from its row."""
    fact = Fact(1, "c")
    fact.lines = [CountedLine([f"s{i}", f"S{i}", 1, 100, "c"]) for i in range(n)]
    fact.item_count, fact.value, fact.peak_value = n, 100 * n, 100 * n
    fact.had_items, fact.currency = True, "EUR"
    return fact


def _events(n: int, rounds: int) -> list[tuple[CartEvent, dict[str, Any]]]:
    """Events on both ends of an ``n``-line cart: its last lines changed then removed (a scan
    from the front finds them last), new lines added and shrunk, its first lines added to."""
    events: list[tuple[CartEvent, dict[str, Any]]] = []
    for r in range(rounds):
        last = f"s{n - 1 - r}"
        k = len(events)
        events += [
            _event("cart.item_quantity_changed", {"sku": last, "quantity": 3}, k),
            _event("cart.item_removed", {"sku": last}, k + 1),
            _added(f"t{r}", 2, 50, k + 2),
            _event("cart.item_removed", {"sku": f"t{r}", "quantity": 1}, k + 3),
            _added(f"s{r}", 1, 120, k + 4),
        ]
    return events


def test_item_events_touch_only_their_own_lines_whatever_the_carts_line_count():
    # given a cart of 5,000 lines, loaded for a batch, and 1,000 item events on it
    n, fact, counters = 5_000, _cart(5_000), Counters()
    events = _events(n, 200)
    loaded = fact.lines
    expected = [list(line) for line in loaded]
    for event, data in events:
        _reference(expected, event.type, data)
    CountedLine.accesses = 0

    # when the batch is folded
    for event, data in events:
        fold(fact, event, data, UTC_ZONE, counters)

    # then the lines were indexed once (one access each), and each event touched a few lines
    # only: a fold that copies, re-sums or scans them per event makes millions of accesses
    assert CountedLine.accesses <= n + 10 * len(events)
    # and the lines, read once at the end of the batch, are the same list, refilled once
    assert fact.lines is loaded
    assert fact.lines == expected
    assert len(fact.lines) == n  # 200 lines removed, 200 added
    assert fact.item_count == sum(line[2] for line in expected)
    assert fact.value == sum(line[2] * line[3] for line in expected)


def test_a_small_cart_folds_to_the_same_lines_as_the_reference():
    # given a 50-line cart and every kind of item event, a removed SKU added again included
    fact, counters = _cart(50), Counters()
    events = [
        *_events(50, 10),
        _added("s49", 4, 70, 100),  # removed above: comes back at the end
        _event("cart.item_quantity_changed", {"sku": "nope", "quantity": 0}, 101),
        _event("cart.item_removed", {"sku": "nope"}, 102),
        _event("cart.item_quantity_changed", {"sku": "t3", "quantity": 0}, 103),
    ]
    expected = [list(line) for line in fact.lines]
    peak = fact.peak_value

    for event, data in events:
        fold(fact, event, data, UTC_ZONE, counters)
        _reference(expected, event.type, data)
        # then after each event, the lines read are the reference's, totals included
        assert fact.lines == expected
        assert fact.item_count == sum(line[2] for line in expected)
        assert fact.value == sum(line[2] * line[3] for line in expected)
        peak = max(peak, fact.value)

    assert fact.peak_value == peak
    assert [line[0] for line in fact.lines][-2:] == ["t9", "s49"]


def test_a_sku_found_twice_in_a_row_keeps_both_lines_and_the_first_is_the_carts():
    # given a row no fold writes: the same SKU on two lines
    fact = Fact(1, "c")
    fact.lines = [["a", "A", 1, 100, ""], ["b", "B", 1, 100, ""], ["a", "A", 5, 100, ""]]
    fact.item_count, fact.value = 7, 700

    # when the SKU is added to, and another line removed
    fold(fact, *_added("a", 2, 100, 1), UTC_ZONE, Counters())
    fold(fact, *_event("cart.item_removed", {"sku": "b"}, 2), UTC_ZONE, Counters())

    # then the first line took the change, as carts/projections.py finds it; the other stays
    assert fact.lines == [["a", "A", 3, 100, ""], ["a", "A", 5, 100, ""]]
    assert (fact.item_count, fact.value) == (8, 800)
