from carts import services
from carts.models import CartEvent
from carts.sources import Source
from tests.conftest import item, new_event


def test_committed_append_is_visible_from_another_connection(committed_store):
    import psycopg
    from django.db import connection

    store, _ = committed_store
    [result] = services.events_append(
        source=Source.server("test"),
        store_id=store.pk,
        events=[new_event("cart.item_added", "c1", item())],
    )
    params = connection.get_connection_params()
    with psycopg.connect(**params) as other:
        row = other.execute(
            "SELECT version FROM carts_cartevent WHERE position = %s", [result.position]
        ).fetchone()
    assert row == (1,)
    assert CartEvent.objects.filter(store=store).count() == 1


def test_committed_db_uses_the_test_database_even_when_run_alone(committed_db):
    """Run alone (`pytest tests/carts/test_committed_smoke.py -k run_alone`), no selected test
    asks pytest-django for a database; conftest makes sure it is still the test one, never
    the development database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        assert cursor.fetchone()[0].startswith("test_")
