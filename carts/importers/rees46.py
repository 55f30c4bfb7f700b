"""REES46 Open CDP event log → NewEvents. Pure: no database, clock or settings.

The export (Kaggle "eCommerce behavior data from multi category store" and its cosmetics twin) has
one row per shopper action: ``event_time, event_type, product_id, category_id, category_code,
brand, price, user_id, user_session``. Each ``user_session`` becomes one cart,
``rees46-<user_session>``, and ``user_id`` its shopper id:

============================  ====================================================================
``view``                      ``page.viewed`` (page_type ``product``, url ``/product/<product_id>``,
                              sku = product_id)
``cart``                      ``cart.item_added`` (quantity 1, unit_price = price in minor units of
                              the import currency, category = category_code)
``remove_from_cart``          ``cart.item_removed`` (quantity 1)
``purchase``                  ``order.placed``, one per session (see below)
============================  ====================================================================

Orders. The dataset describes several ``purchase`` rows of one session as one order, so the
session's order is emitted once, with ``total`` = the sum of all its purchase rows' prices, at the
time and place of its *first* purchase row (``converted_at`` is when the shopper first bought). To
know the total, the mapper holds a purchasing session's events from its first purchase on until
the session has been idle for ``session_timeout`` of file time (rows are in time order), or the
file ends; then it yields the order followed by the held events, so each cart's log stays in time
order. A purchase row that arrives after its session's order was emitted is skipped (reported).

Idempotency. Event ids are uuid5 over a store-independent namespace and the row's full content plus
its ordinal among identical rows of the session at that second (exact duplicate rows occur in the
export; each stays an event with its own id). The order's id derives from the session alone. Same
file, same ids: a second import stores nothing. Importing with another ``currency`` gives the same
ids with other bodies, which the append service refuses as conflicts.
"""

from __future__ import annotations

import csv
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from carts import event_types, money
from carts.errors import EventInvalid
from carts.importers.types import Mapped, Skipped
from carts.services import NewEvent

COLUMNS = (
    "event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price",
    "user_id", "user_session",
)  # fmt: skip
CART_PREFIX = "rees46-"
ORDER_PREFIX = "rees46-"
# Fixed for ever: changing it would give every imported event a new id.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://rees46.com/open-cdp/event-log")
SESSION_TIMEOUT = timedelta(hours=6)
_SEP = "\x1f"
_MAX_REASON_VALUE = 32


def read_rows(file: IO[str]) -> Iterator[dict[str, str]]:
    """CSV rows as dicts. Reads the header now: ValueError if it lacks a REES46 column."""
    reader = csv.DictReader(file)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"Not a REES46 event log: no column {', '.join(missing)}.")
    return iter(reader)


@dataclass(slots=True)
class _Order:
    row: int
    occurred_at: datetime
    shopper: dict[str, Any] | None
    total: int = 0
    held: list[NewEvent] = field(default_factory=list)


@dataclass(slots=True)
class _Session:
    last_seen: datetime
    second: str = ""
    identical: Counter[tuple[str, ...]] = field(default_factory=Counter)
    order: _Order | None = None


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def map_rows(
    rows: Iterable[Mapping[str, str | None]],
    *,
    currency: str = "USD",
    session_timeout: timedelta = SESSION_TIMEOUT,
) -> Iterator[Mapped]:
    """Yield a NewEvent per mappable row (one order per purchasing session), a Skipped per other.

    Rows are numbered from 1 (the first row after the header) in ``Skipped.row``. Raises
    ValueError now, not when iterated, if ``currency`` is not an ISO 4217 code.
    """
    if not money.is_currency(currency):
        raise ValueError(f"'{currency}' is not an ISO 4217 currency code.")
    return _map(rows, currency, session_timeout)


def _map(
    rows: Iterable[Mapping[str, str | None]], currency: str, session_timeout: timedelta
) -> Iterator[Mapped]:
    sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently active first
    closed: set[str] = set()  # sessions whose order was emitted
    watermark: datetime | None = None

    for number, row in enumerate(rows, start=1):
        try:
            values = _values(row)
            occurred_at = _parse_time(values[0])
            session_id, token = _cart_token(values[8])
            kind = values[1].strip()
            if kind not in EVENT_TYPES:
                raise _Skip(f"unknown event_type {kind[:_MAX_REASON_VALUE]!r}")
        except _Skip as skip:
            yield Skipped(number, skip.reason, skip.detail)
            continue

        if watermark is None or occurred_at > watermark:
            watermark = occurred_at
            yield from _close_idle(sessions, closed, watermark - session_timeout, currency)

        session = sessions.get(session_id)
        if session is None:
            session = sessions[session_id] = _Session(last_seen=occurred_at)
        else:
            sessions.move_to_end(session_id)
            session.last_seen = max(session.last_seen, occurred_at)
        if session.second != values[0]:
            session.second = values[0]
            session.identical.clear()
        ordinal = session.identical[values]
        session.identical[values] += 1

        user_id = values[7].strip()
        shopper = {"id": user_id} if user_id else None
        try:
            if kind == "purchase":
                _add_purchase(
                    session, session_id, closed, number, occurred_at, values, shopper, currency
                )
                continue
            event = _HANDLERS[kind](
                event_id=uuid.uuid5(NAMESPACE, _SEP.join((*values, str(ordinal)))),
                token=token,
                occurred_at=occurred_at,
                values=values,
                shopper=shopper,
                currency=currency,
            )
        except _Skip as skip:
            yield Skipped(number, skip.reason, skip.detail)
            continue
        if session.order is not None:
            session.order.held.append(event)
        else:
            yield event

    yield from _close_idle(sessions, closed, None, currency)


def _values(row: Mapping[str, str | None]) -> tuple[str, ...]:
    values = tuple(row.get(c) for c in COLUMNS)
    # csv.DictReader fills a short row with None values and keeps a long row's extras under None.
    if None in values or None in row:
        raise _Skip("malformed row", f"expected {len(COLUMNS)} fields")
    return tuple(v or "" for v in values)


def _parse_time(value: str) -> datetime:
    text = value.strip()
    text = text.removesuffix(" UTC")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _Skip("bad event_time", value[:64]) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _cart_token(value: str) -> tuple[str, str]:
    session_id = value.strip()
    if not session_id:
        raise _Skip("missing user_session")
    token = CART_PREFIX + session_id
    if not event_types.CART_TOKEN_RE.match(token):
        raise _Skip("bad user_session", session_id[:64])
    return session_id, token


def _price(value: str, currency: str) -> int:
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise _Skip("bad price", value[:64]) from None
    if not amount.is_finite() or amount < 0:
        raise _Skip("bad price", value[:64])
    minor = money.to_minor_units(amount, currency)
    if minor > event_types.MAX_MONEY:
        raise _Skip("bad price", value[:64])
    return minor


def _product_id(values: tuple[str, ...]) -> str:
    product_id = values[2].strip()
    if not product_id:
        raise _Skip("missing product_id")
    return product_id


def _product_name(product_id: str, category_code: str, brand: str) -> str:
    leaf = category_code.rsplit(".", 1)[-1].replace("_", " ")
    words = " ".join(w for w in (brand, leaf) if w)
    return f"{words} {product_id}" if words else f"Product {product_id}"


def _validated(type_name: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    try:
        return event_types.validate(type_name, None, data)
    except EventInvalid as exc:
        raise _Skip(f"invalid {type_name}", str(exc.detail)[:200]) from None


def _new_event(
    type_name: str,
    data: dict[str, Any],
    *,
    event_id: uuid.UUID,
    token: str,
    occurred_at: datetime,
    shopper: dict[str, Any] | None,
) -> NewEvent:
    version, payload = _validated(type_name, data)
    return NewEvent(
        event_id=event_id,
        cart=token,
        type=type_name,
        schema_version=version,
        occurred_at=occurred_at,
        data=payload,
        shopper=shopper,
    )


def _view(*, values: tuple[str, ...], currency: str, **common: Any) -> NewEvent:
    product_id = _product_id(values)
    data = {"url": f"/product/{product_id}", "page_type": "product", "sku": product_id}
    return _new_event("page.viewed", data, **common)


def _cart(*, values: tuple[str, ...], currency: str, **common: Any) -> NewEvent:
    product_id = _product_id(values)
    category_code, brand = values[4].strip(), values[5].strip()
    data: dict[str, Any] = {
        "sku": product_id,
        "name": _product_name(product_id, category_code, brand),
        "quantity": 1,
        "unit_price": _price(values[6], currency),
        "currency": currency,
    }
    if category_code:
        data["category"] = category_code
    return _new_event("cart.item_added", data, **common)


def _remove_from_cart(*, values: tuple[str, ...], currency: str, **common: Any) -> NewEvent:
    data = {"sku": _product_id(values), "quantity": 1}
    return _new_event("cart.item_removed", data, **common)


_HANDLERS: dict[str, Callable[..., NewEvent]] = {
    "view": _view,
    "cart": _cart,
    "remove_from_cart": _remove_from_cart,
}
EVENT_TYPES = (*_HANDLERS, "purchase")  # purchases are buffered per session: _add_purchase


def _add_purchase(
    session: _Session,
    session_id: str,
    closed: set[str],
    number: int,
    occurred_at: datetime,
    values: tuple[str, ...],
    shopper: dict[str, Any] | None,
    currency: str,
) -> None:
    amount = _price(values[6], currency)
    if session_id in closed:
        raise _Skip(
            "purchase after its session's order was emitted",
            "the session was idle longer than the session timeout before this row",
        )
    if session.order is None:
        session.order = _Order(row=number, occurred_at=occurred_at, shopper=shopper)
    session.order.total += amount


def _close_idle(
    sessions: OrderedDict[str, _Session],
    closed: set[str],
    before: datetime | None,
    currency: str,
) -> Iterator[Mapped]:
    """Forget sessions last seen before ``before`` (all if None), emitting their orders."""
    while sessions:
        session_id, session = next(iter(sessions.items()))
        if before is not None and session.last_seen >= before:
            return
        del sessions[session_id]
        order = session.order
        if order is None:
            continue
        closed.add(session_id)
        try:
            yield _new_event(
                "order.placed",
                {"order_id": ORDER_PREFIX + session_id, "total": order.total, "currency": currency},
                event_id=uuid.uuid5(NAMESPACE, _SEP.join(("order.placed", session_id))),
                token=CART_PREFIX + session_id,
                occurred_at=order.occurred_at,
                shopper=order.shopper,
            )
        except _Skip as skip:
            yield Skipped(order.row, skip.reason, skip.detail)
        yield from order.held
