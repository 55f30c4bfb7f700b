"""Shared fixtures: stores made through the services, an API client holding the store's key."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from carts import services
from carts.models import Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _always_set_up_the_test_database() -> None:
    """pytest-django creates the test database only when a selected test uses ``db``,
    ``transactional_db`` or the ``django_db`` marker. A run of ``committed_db`` tests alone
    (e.g. ``pytest tests/recovery/test_shopper_socket.py``) would then talk to the development
    database. Always set up the default alias (a private hook of pytest-django: if it moves,
    this fails loudly at import)."""
    import pytest_django.fixtures as pd

    original = pd._get_databases_for_setup

    def with_default(items: Any) -> tuple[set[str], set[str]]:
        aliases, serialized = original(items)
        return aliases | {"default"}, serialized

    pd._get_databases_for_setup = with_default


_always_set_up_the_test_database()


# Modules whose every test is marked ``external``: `.ci/run` runs them against PostgreSQL and Redis
# from Debian's packages (DATABASE_URL / REDIS_URL), so the non-embedded mode is proven on what
# matters: the append service and its concurrency, the HTTP event API, the shopper websocket,
# the campaign worker end to end, the projector runner and health. Paths relative to tests/;
# tests/test_external_modules.py checks that each exists.
EXTERNAL_MODULES = (
    "carts/test_append_service.py",
    "carts/test_concurrency.py",
    "carts/test_gap_safe_order.py",
    "carts/test_immutability.py",
    "carts/test_api_events.py",
    "carts/test_projector_runner.py",
    "carts/test_projector_leases.py",
    "carts/test_partitions.py",  # the partitioned log on the oldest PostgreSQL we support (15)
    "recovery/test_shopper_socket.py",
    "recovery/test_offer_push.py",
    "e2e/test_campaign_worker.py",
    "e2e/test_health.py",
    "e2e/test_many_processes.py",  # 2 web processes and 2 workers on the same servers
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    external = {tests_dir / module for module in EXTERNAL_MODULES}
    for test in items:
        if test.path.resolve() in external:
            test.add_marker(pytest.mark.external)


@pytest.fixture
def credentials(db) -> services.StoreCredentials:
    return services.store_create(name="Test shop", domain="shop.example")


@pytest.fixture
def store(credentials) -> Store:
    return Store.objects.get(pk=credentials.store_id)


@pytest.fixture
def api(credentials) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credentials.secret_key}")
    return client


def item(sku: str = "SKU-1", quantity: Any = 1, unit_price: Any = 1000, **extra: Any) -> dict:
    return {
        "sku": sku,
        "name": f"Product {sku}",
        "quantity": quantity,
        "unit_price": unit_price,
        "currency": extra.pop("currency", "EUR"),
        **extra,
    }


def event(
    type: str,
    cart: str = "cart-1",
    data: Any = None,
    *,
    at: datetime | int = 0,
    **extra: Any,
) -> dict:
    """An API event object. ``at`` is a datetime or seconds after T0."""
    occurred = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    return {
        "id": str(extra.pop("id", uuid.uuid4())),
        "cart": cart,
        "type": type,
        "occurred_at": occurred.isoformat(),
        "data": data if data is not None else {},
        **extra,
    }


def new_event(type: str, cart: str = "cart-1", data: dict | None = None, **kw: Any):
    """A services.NewEvent (already valid) for tests that call the service directly."""
    from carts import event_types

    raw = event(type, cart, data, **kw)
    version, payload = event_types.validate(type, raw.get("schema_version"), raw["data"])
    return services.NewEvent(
        event_id=uuid.UUID(raw["id"]),
        cart=cart,
        type=type,
        schema_version=version,
        occurred_at=datetime.fromisoformat(raw["occurred_at"]),
        data=payload,
        shopper=raw.get("shopper"),
        expected_version=raw.get("expected_version"),
    )


@pytest.fixture
def post_events(api) -> Callable[..., Any]:
    def _post(*events: dict, batch: bool | None = None):
        body: Any = {"events": list(events)} if (batch or len(events) != 1) else events[0]
        return api.post("/api/v1/events", body, format="json")

    return _post


@pytest.fixture
def committed_db(django_db_setup, django_db_blocker):
    """Database access with real commits (for concurrency and multi-process tests).

    pytest-django's ``transactional_db`` empties tables with TRUNCATE afterwards, which the
    append-only event log refuses by design. Tests using this fixture instead leave their rows in
    the test database (dropped at the end of the session), so they must create their own stores
    and scope every assertion to them.
    """
    from django.db import connections

    with django_db_blocker.unblock():
        yield
        for conn in connections.all():
            conn.close()


@pytest.fixture(scope="session", autouse=True)
def _no_stray_sessions_at_teardown(django_db_setup, django_db_blocker):
    """Connections opened by worker threads (websocket consumers run their database work in a
    thread pool) can outlive the tests; end them before pytest-django drops the test database,
    or the drop fails and the database is left behind."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"  # not autovacuum: not ours to end
            )
        connection.close()


@pytest.fixture
def committed_store(committed_db) -> tuple[Store, services.StoreCredentials]:
    """A store of its own in the committed database. Earlier tests' rows stay there: their
    unfinished campaign steps (pending, handed out, leased) would become due or stale during this
    test, and their abandoned carts would be enrolled by its enrolment, which (like enqueues)
    takes every store's. So earlier campaigns are switched off and their open steps settled
    (cancelled, reason ``test_leftover``) first, and a test counts only what it made."""
    from campaigns.models import Campaign, Step

    Campaign.objects.filter(active=True).update(active=False)
    Step.objects.filter(
        status__in=[Step.Status.PENDING, Step.Status.ENQUEUED, Step.Status.SENDING]
    ).update(status=Step.Status.CANCELLED, reason="test_leftover", lease_owner="")
    creds = services.store_create(name=f"Committed shop {uuid.uuid4().hex[:6]}")
    return Store.objects.get(pk=creds.store_id), creds


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process (worker, scheduler, server) that must use the test database
    and the same Redis as this test run."""
    from django.conf import settings

    from tests.e2e.procs import child_env, database_url

    return child_env(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        **extra,
    )


BASE_DIR_FOR_TESTS = __import__("pathlib").Path(__file__).resolve().parent.parent
