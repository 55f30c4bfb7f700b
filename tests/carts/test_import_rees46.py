import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count

from carts import services
from carts.importers import Skipped, rees46
from carts.models import CartEvent, CartState
from carts.services import NewEvent
from carts.sources import Source
from tests.conftest import item, new_event

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "rees46" / "2019-Oct_sample.csv"
HEADER = ",".join(rees46.COLUMNS)
SESSION = "72d76fde-8bb3-4e00-8c23-a032dfed738c"
CART = f"rees46-{SESSION}"
OTHER = "9333dfbd-b87a-4708-9857-6336556b0fcc"


def row(
    second: int,
    event_type: str,
    product_id: str = "44600062",
    price: str = "35.79",
    *,
    session: str = SESSION,
    user_id: str = "541312140",
    category_code: str = "appliances.environment.water_heater",
    brand: str = "aqua",
) -> dict[str, str]:
    return {
        "event_time": at(second).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "event_type": event_type,
        "product_id": product_id,
        "category_id": "2053013552326770905",
        "category_code": category_code,
        "brand": brand,
        "price": price,
        "user_id": user_id,
        "user_session": session,
    }


def at(second: int) -> datetime:
    return datetime(2019, 10, 1, tzinfo=UTC) + timedelta(seconds=second)


def without_ids(mapped: list) -> list:
    return [
        (m.cart, m.type, m.schema_version, m.occurred_at, m.data, m.shopper)
        if isinstance(m, NewEvent)
        else m
        for m in mapped
    ]


def events(rows: list[dict[str, str]], **options) -> list[NewEvent]:
    """Map rows that must all become events."""
    mapped = list(rees46.map_rows(rows, **options))
    assert not [m for m in mapped if isinstance(m, Skipped)]
    return [m for m in mapped if isinstance(m, NewEvent)]


def csv_text(*rows: dict[str, str]) -> str:
    return "\r\n".join([HEADER, *(",".join(r[c] for c in rees46.COLUMNS) for r in rows)]) + "\r\n"


# The mapper (pure) --------------------------------------------------------------------------------


def test_view_cart_and_remove_rows_map_to_page_item_added_and_item_removed():
    rows = [
        row(0, "view"),
        row(5, "cart", category_code="", brand=""),
        row(9, "cart", "3900821", "33.20"),
        row(12, "remove_from_cart"),
    ]

    mapped = list(rees46.map_rows(rows))

    shopper = {"id": "541312140"}
    assert without_ids(mapped) == [
        (
            CART, "page.viewed", 1, at(0),
            {"url": "/product/44600062", "page_type": "product", "sku": "44600062"}, shopper,
        ),
        (
            CART, "cart.item_added", 2, at(5),
            {"sku": "44600062", "name": "Product 44600062", "quantity": 1, "unit_price": 3579,
             "currency": "USD"},
            shopper,
        ),
        (
            CART, "cart.item_added", 2, at(9),
            {"sku": "3900821", "name": "aqua water heater 3900821", "quantity": 1,
             "unit_price": 3320, "currency": "USD",
             "category": "appliances.environment.water_heater"},
            shopper,
        ),
        (CART, "cart.item_removed", 1, at(12), {"sku": "44600062", "quantity": 1}, shopper),
    ]  # fmt: skip


def test_event_ids_are_fixed_uuid5_values_independent_of_the_run():
    rows = [row(0, "view"), row(1, "purchase")]

    first = events(rows)
    second = events(rows)

    assert [e.event_id for e in first] == [e.event_id for e in second]
    # Pinned: a change here would make re-imports of already imported files store everything again.
    assert [e.event_id for e in first] == [
        uuid.UUID("239cfba5-88fd-5f36-834a-0133b3755b1e"),
        uuid.UUID("b9c7a91e-0665-51ff-bb22-ad98c59655ad"),
    ]


def test_purchase_rows_of_a_session_are_one_order_at_the_first_purchase_with_their_sum():
    rows = [
        row(0, "cart", "1004750", "197.43"),
        row(10, "purchase", "1004750", "197.43"),
        row(20, "view", "1004856", "130.76"),
        row(25, "view", "1", "2.00", session=OTHER, user_id="7"),
        row(30, "purchase", "1004856", "130.76"),
        row(40, "purchase", "1004750", "197.43"),
        row(50, "view", "1004856", "130.76"),
    ]

    mapped = events(rows)

    assert [(e.cart, e.type, e.occurred_at) for e in mapped] == [
        (CART, "cart.item_added", at(0)),
        (f"rees46-{OTHER}", "page.viewed", at(25)),  # other sessions are not held back
        (CART, "order.placed", at(10)),
        (CART, "page.viewed", at(20)),
        (CART, "page.viewed", at(50)),
    ]
    order = mapped[2]
    assert order.data == {"order_id": CART, "total": 52562, "currency": "USD"}
    assert order.shopper == {"id": "541312140"}
    assert order.event_id == uuid.uuid5(rees46.NAMESPACE, f"order.placed\x1f{SESSION}")


def test_an_order_is_emitted_once_its_session_is_idle_and_a_late_purchase_is_skipped():
    rows = [
        row(0, "purchase", price="10.00"),
        row(60, "view"),
        row(60 + 1801, "view", session=OTHER),  # over 30 min after the session's last row
        row(60 + 1802, "purchase", price="5.00"),
    ]

    mapped = list(rees46.map_rows(rows, session_timeout=timedelta(minutes=30)))

    assert without_ids(mapped) == [
        (CART, "order.placed", 1, at(0),
         {"order_id": CART, "total": 1000, "currency": "USD"}, {"id": "541312140"}),
        (CART, "page.viewed", 1, at(60),
         {"url": "/product/44600062", "page_type": "product", "sku": "44600062"},
         {"id": "541312140"}),
        (f"rees46-{OTHER}", "page.viewed", 1, at(1861),
         {"url": "/product/44600062", "page_type": "product", "sku": "44600062"},
         {"id": "541312140"}),
        Skipped(4, "purchase after its session's order was emitted",
                "the session was idle longer than the session timeout before this row"),
    ]  # fmt: skip


def test_identical_rows_stay_distinct_events_with_ids_stable_across_runs():
    rows = [row(0, "view"), row(0, "view"), row(0, "view", session=OTHER), row(1, "view")]

    first = events(rows)
    second = events(rows)

    ids = [e.event_id for e in first]
    assert len(set(ids)) == 4
    assert ids == [e.event_id for e in second]
    assert first[0].body_hash() == first[1].body_hash()


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        ({"price": "12,50"}, "bad price", "12,50"),
        ({"price": "-1.00"}, "bad price", "-1.00"),
        ({"price": "NaN"}, "bad price", "NaN"),
        ({"event_type": "wishlist"}, "unknown event_type 'wishlist'", ""),
        ({"user_session": ""}, "missing user_session", ""),
        ({"user_session": "not a token"}, "bad user_session", "not a token"),
        ({"event_time": "yesterday"}, "bad event_time", "yesterday"),
        ({"product_id": ""}, "missing product_id", ""),
        ({"brand": "x" * 600}, "invalid cart.item_added", None),
        ({"user_id": None}, "malformed row", "expected 9 fields"),
        ({None: ["extra"]}, "malformed row", "expected 9 fields"),
    ],
)
def test_rows_that_cannot_be_mapped_are_skipped_with_a_reason(bad, reason, detail):
    rows = [row(0, "view"), {**row(1, "cart"), **bad}, row(2, "view")]

    mapped = list(rees46.map_rows(rows))

    assert [type(m) for m in mapped] == [NewEvent, Skipped, NewEvent]
    skipped = mapped[1]
    assert isinstance(skipped, Skipped)
    assert (skipped.row, skipped.reason) == (2, reason)
    if detail is not None:
        assert skipped.detail == detail


def test_a_purchase_with_a_bad_price_is_skipped_and_left_out_of_the_order_total():
    rows = [row(0, "purchase", price="x"), row(1, "purchase", price="1.50")]

    mapped = list(rees46.map_rows(rows))

    skipped, order = mapped
    assert skipped == Skipped(1, "bad price", "x")
    assert isinstance(order, NewEvent)
    assert (order.type, order.occurred_at, order.data["total"]) == ("order.placed", at(1), 150)


def test_prices_convert_to_the_minor_units_of_the_chosen_currency():
    rows = [row(0, "cart", price="1234.50"), row(1, "purchase", price="0.5")]

    mapped = events(rows, currency="JPY")

    assert [
        (e.data["currency"], e.data.get("unit_price", e.data.get("total"))) for e in mapped
    ] == [
        ("JPY", 1235),
        ("JPY", 1),
    ]


def test_an_unknown_currency_is_refused_before_any_row_is_read():
    with pytest.raises(ValueError, match="ISO 4217"):
        rees46.map_rows(iter(()), currency="XYZ")


def test_read_rows_refuses_a_file_without_the_rees46_columns():
    with pytest.raises(ValueError, match="no column user_session"):
        rees46.read_rows(io.StringIO("event_time,event_type,product_id,category_id,"
                                     "category_code,brand,price,user_id\r\n"))  # fmt: skip


def test_read_rows_reads_crlf_csv():
    rows = list(rees46.read_rows(io.StringIO(csv_text(row(0, "view")), newline="")))

    assert rows == [row(0, "view")]


# The command (real PostgreSQL) --------------------------------------------------------------------


def run_import(*args: str, **options) -> str:
    out = io.StringIO()
    call_command("import_events", *args, stdout=out, **options)
    return out.getvalue()


def summary_lines(output: str) -> list[str]:
    return output.splitlines()[1:]  # the first line names the file and the time taken


def test_importing_the_sample_appends_every_row_once_and_folds_the_carts(store):
    output = run_import(str(FIXTURE), store=store.pk, format="rees46")

    assert summary_lines(output) == [
        "  rows read        1647",
        "  events mapped    1642 (5 more purchase rows merged into their session's order)",
        "  events appended  1642 (cart.item_added 44, order.placed 31, page.viewed 1567)",
        "  duplicates       0",
        "  rejected events  0",
        "  carts created    744",
        "  skipped rows     0",
    ]
    by_type = dict(
        CartEvent.objects.filter(store=store).values_list("type").annotate(n=Count("position"))
    )
    assert by_type == {"page.viewed": 1567, "cart.item_added": 44, "order.placed": 31}
    assert CartState.objects.filter(store=store).count() == 744
    assert CartState.objects.filter(store=store, status="converted").count() == 31
    # Three purchase rows (197.43 + 130.76 + 197.43), one order; two cart rows of one product.
    cart = CartState.objects.get(store=store, token="rees46-ce885079-4d92-4fe6-92a3-377c5a2d8291")
    assert (cart.status, cart.order_id, cart.order_total, cart.currency) == (
        "converted",
        "rees46-ce885079-4d92-4fe6-92a3-377c5a2d8291",
        52562,
        "USD",
    )
    assert [(i["sku"], i["quantity"], i["unit_price"]) for i in cart.items] == [
        ("1004750", 1, 19743),
        ("1004856", 2, 13076),
    ]
    assert cart.shopper_id == "555110488"
    assert cart.converted_at == datetime(2019, 10, 1, 2, 22, 11, tzinfo=UTC)


def test_importing_the_sample_again_stores_nothing(store):
    run_import(str(FIXTURE), store=store.pk, format="rees46")
    events_before = CartEvent.objects.filter(store=store).count()
    versions_before = list(
        CartState.objects.filter(store=store).order_by("token").values_list("token", "version")
    )

    output = run_import(str(FIXTURE), "--batch-size", "97", store=store.pk, format="rees46")

    assert summary_lines(output) == [
        "  rows read        1647",
        "  events mapped    1642 (5 more purchase rows merged into their session's order)",
        "  events appended  0",
        "  duplicates       1642 (cart.item_added 44, order.placed 31, page.viewed 1567)",
        "  rejected events  0",
        "  carts created    0",
        "  skipped rows     0",
    ]
    assert CartEvent.objects.filter(store=store).count() == events_before == 1642
    assert versions_before == list(
        CartState.objects.filter(store=store).order_by("token").values_list("token", "version")
    )


def test_an_event_the_service_rejects_costs_only_itself_not_its_batch(store, tmp_path):
    # The cart already holds euros, so a USD item cannot join it; the rest of the batch can.
    services.events_append(
        source=Source.server("test"),
        store_id=store.pk,
        events=[new_event("cart.item_added", CART, item(currency="EUR"))],
    )
    path = tmp_path / "events.csv"
    path.write_text(
        csv_text(
            row(0, "view", session=OTHER),
            row(1, "cart"),
            row(2, "cart", "3900821", "33.20", session=OTHER),
            row(3, "cart", "1307067", "251.74", session=OTHER),
            row(4, "remove_from_cart", "3900821", session=OTHER),
            row(5, "wishlist"),
        ),
        newline="",
    )

    output = run_import(str(path), store=store.pk, format="rees46")

    lines = summary_lines(output)
    assert lines[2:5] == [
        "  events appended  4 (cart.item_added 2, cart.item_removed 1, page.viewed 1)",
        "  duplicates       0",
        "  rejected events  1",
    ]
    assert lines[5].startswith("    event_rejected: 1  e.g. cart.item_added ")
    assert lines[5].endswith(": Cart is in EUR; this event is in USD.")
    assert lines[6:] == [
        "  carts created    1",
        "  skipped rows     1",
        "    unknown event_type 'wishlist': 1  e.g. row 6",
    ]
    other = CartState.objects.get(store=store, token=f"rees46-{OTHER}")
    assert [(i["sku"], i["quantity"]) for i in other.items] == [("1307067", 1)]
    assert CartState.objects.get(store=store, token=CART).version == 1


def test_importing_again_in_another_currency_is_refused_as_id_conflicts(store, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(csv_text(row(0, "view"), row(1, "cart"), row(2, "purchase")), newline="")
    run_import(str(path), store=store.pk, format="rees46")

    output = run_import(str(path), store=store.pk, format="rees46", currency="EUR")

    assert summary_lines(output)[2:5] == [
        "  events appended  0",
        "  duplicates       1 (page.viewed 1)",
        "  rejected events  2",
    ]
    assert CartEvent.objects.filter(store=store).count() == 3


def test_an_unknown_store_is_a_command_error(db):
    with pytest.raises(CommandError, match="No store with id 999999"):
        run_import(str(FIXTURE), store=999999, format="rees46")


def test_an_unknown_format_is_a_command_error(store):
    with pytest.raises(CommandError, match="invalid choice: 'shopify'"):
        run_import(str(FIXTURE), store=store.pk, format="shopify")
    assert CartEvent.objects.filter(store=store).count() == 0


def test_a_file_that_is_not_a_rees46_log_is_a_command_error(store, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("order_id,total\r\n1,2.00\r\n")

    with pytest.raises(CommandError, match="Not a REES46 event log"):
        run_import(str(path), store=store.pk, format="rees46")
