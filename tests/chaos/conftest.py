"""Fault tests: the processes under test run against private PostgreSQL and Redis servers
(tests/chaos/servers.py) that the tests stop, kill and restart; the servers the rest of the suite
uses are never touched. This pytest process reads the private database with psycopg and makes
its data in a child process (``Chaos.django``), so its own Django stays on the test database."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.chaos.servers import PrivatePostgres, PrivateRedis, private_servers
from tests.e2e import procs

# Every public surface's rate limit off: the tests' clients all come from 127.0.0.1.
_NO_RATE_LIMITS = {
    f"RATE_LIMIT_{name}": ""
    for name in (
        "SHOPPER_SESSION_IP", "SHOPPER_SESSION_STORE", "OFFERS_IP", "WS_CONNECT_IP",
        "WS_MESSAGE_SOCKET", "WS_MESSAGE_SOCKET_MINUTE", "RESTORE_IP", "OPEN_LINK",
        "UNSUBSCRIBE_IP", "LOGIN_IP", "LOGIN_USER", "LOGIN_IP_LONG", "LOGIN_USER_LONG",
    )
}  # fmt: skip


@dataclasses.dataclass
class Chaos:
    pg: PrivatePostgres
    redis: PrivateRedis

    def env(self, **extra: str) -> dict[str, str]:
        """A child's environment: the private servers, development settings (so EMAIL_* and the
        rest come from the environment), no rate limits."""
        return procs.child_env(
            DJANGO_SETTINGS_MODULE="config.settings.local",
            DATABASE_URL=self.pg.url,
            REDIS_URL=self.redis.url,
            CARTS_RATE_LIMIT_PER_MINUTE="1000000",
            **_NO_RATE_LIMITS,
            **extra,
        )

    def django(self, code: str, **env: str) -> Any:
        """Run ``code`` in a child process with Django set up on the private servers; what it
        assigns to ``result`` comes back (as JSON)."""
        script = (
            "import django, json, sys\ndjango.setup()\nresult = None\n"
            + textwrap.dedent(code)
            + "\nsys.stdout.write('\\n@@' + json.dumps(result, default=str))\n"
        )
        done = subprocess.run(
            [procs.PYTHON, "-c", script],
            cwd=procs.ROOT,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0 or "@@" not in done.stdout:
            raise AssertionError(f"child failed:\n{done.stdout}\n{done.stderr}")
        return json.loads(done.stdout.rsplit("@@", 1)[1])

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.pg.url, connect_timeout=5) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def due_spread(self, ids: list[int], *, start: float, over: float) -> None:
        """Steps ``ids`` (pending) due from ``start`` seconds from now, evenly over ``over``."""
        self.sql(
            "UPDATE campaigns_step SET due_at = clock_timestamp() + make_interval(secs => %s"
            " + %s * (array_position(%s::bigint[], id) - 1)) WHERE id = ANY(%s)",
            [start, over / max(1, len(ids) - 1), ids, ids],
        )

    def store(self, name: str = "Chaos shop") -> dict[str, Any]:
        """A new store (id, keys), made by its service."""
        return dict(
            self.django(
                f"""
                import dataclasses
                from carts import services
                result = dataclasses.asdict(services.store_create(name={name!r}))
                """
            )
        )

    def email_steps(
        self, n: int, *, prefix: str, due_in: float | None = None, due_over: float = 0.0
    ) -> tuple[int, list[int]]:
        """A store with an email campaign and ``n`` abandoned carts (``{prefix}{i}@example.com``)
        enrolled: its step ids, due in ``due_in`` seconds (default now), spread evenly over
        ``due_over`` seconds.
        Earlier tests' campaigns are switched off and their open steps settled first, as
        tests/conftest.py ``committed_store`` does."""
        result = self.django(
            f"""
            from datetime import timedelta
            from django.utils import timezone
            from campaigns import enrolment
            from campaigns.models import Campaign, Step
            from carts import services
            from tests.campaigns.builders import campaign_with_tiers, cart_abandoned

            Campaign.objects.filter(active=True).update(active=False)
            Step.objects.filter(status__in=["pending", "enqueued", "sending"]).update(
                status="cancelled", reason="test_leftover", lease_owner=""
            )
            store = services.store_create(name="Chaos campaigns").store_id
            campaign_with_tiers(
                store,
                activated_at=timezone.now() - timedelta(days=1),
                tiers=[{{"channel": "email", "subject_template": "Come back"}}],
            )
            for i in range({n}):
                at = timezone.now() - timedelta(hours=1)
                cart_abandoned(store, at=at, email=f"{prefix}{{i}}@example.com")
            enrolment.abandoned_carts_enroll(now=timezone.now())
            ids = sorted(Step.objects.filter(store_id=store).values_list("pk", flat=True))
            result = [store, ids]
            """
        )
        store_id, ids = result
        assert len(ids) == n
        ids = [int(i) for i in ids]
        self.due_spread(ids, start=0.0 if due_in is None else due_in, over=due_over)
        return int(store_id), ids


@pytest.fixture(scope="package")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    """Private servers for the package's tests, migrated; stopped and deleted at the end."""
    log = Path(tmp_path_factory.mktemp("chaos")) / "migrate.log"
    with private_servers() as (pg, rd):
        c = Chaos(pg, rd)
        with log.open("wb") as out:
            done = subprocess.run(
                [procs.PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=procs.ROOT,
                env=c.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
        assert done.returncode == 0, procs.tail(log)
        yield c


@pytest.fixture
def servers_up(chaos: Chaos) -> Iterator[Chaos]:
    """The private servers, running at the start and (restarted if a test left them down) at
    the end of each test."""
    for ensure in (_pg_up, _redis_up):
        ensure(chaos)
    yield chaos
    for ensure in (_pg_up, _redis_up):
        ensure(chaos)


def _pg_up(c: Chaos) -> None:
    if not c.pg.up():
        c.pg.start()


def _redis_up(c: Chaos) -> None:
    if not c.redis.up():
        c.redis.start()
