"""The contract is the schema (issue 13; security review 2, finding 16): schemathesis, with every
check, against every /api/v1 operation of the live server (uvicorn, as `make run` serves it).

No 500, no status code the schema does not list, no body, header or content type unlike it, no
schema-valid request refused and no schema-invalid one accepted. Bounded: a fixed number of
examples per operation and a fixed seed, so a run is the same run every time (about a minute).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from django.utils import timezone

from carts import services
from carts.models import Store
from carts.sources import Source
from tests.conftest import new_event, subprocess_env
from tests.e2e import procs

ST = Path(procs.PYTHON).with_name("st")
EXAMPLES = 25
SEED = 20261113
ORIGIN = "https://shop.example"
# What cannot make sense against a live server, with why:
# - POST /api/v1/events, "schema-valid request accepted": occurred_at must fall in a window around
#   the server's clock at the time of the request (docs/api.md, "Bounds"), which no static schema
#   can state; the fuzzer's dates (years 1 to 9999) are refused with 400, as documented. (Each
#   type's payload is checked too, and the schema gives `data` as an object: docs/api.md lists
#   the types' fields.) Every other check runs on it: no 500, statuses, bodies, negative data.
CONFIG = """
checks.enabled = true  # every check (--checks all on the command line would override the below)

[[operations]]
include-path = "/api/v1/events"
include-method = "POST"
checks.positive_data_acceptance.enabled = false
"""
ITEM = {"sku": "S1", "name": "Socks", "quantity": 2, "unit_price": 1500, "currency": "EUR"}


@pytest.fixture
def api(committed_store, tmp_path) -> Iterator[tuple[str, str, str]]:
    """(base URL, secret key, a cart of the store) of a live server."""
    store, creds = committed_store
    Store.objects.filter(pk=store.pk).update(allowed_origins=[ORIGIN])
    cart = f"st-{uuid4().hex[:12]}"
    services.events_append(
        store_id=store.pk,
        source=Source.server("test"),
        events=[new_event("cart.item_added", cart, ITEM, at=timezone.now() - timedelta(minutes=5))],
    )
    port = procs.free_port()
    env = subprocess_env(DJANGO_DEBUG="0")
    with procs.web_server(port, env=env, log=tmp_path / "web.log"):
        yield f"http://127.0.0.1:{port}", creds.secret_key, cart


def test_every_operation_keeps_to_the_schema(api, tmp_path):
    base, key, _ = api
    argv = [
        str(ST), "run", f"{base}/api/schema/?format=json",
        "--url", base,
        "--include-path-regex", "^/api/v1/",
        "--max-examples", str(EXAMPLES),
        "--seed", str(SEED),
        "--header", f"Authorization: Bearer {key}",
        "--workers", "2",
        "--request-timeout", "10",
        "--no-color",
        "--output-truncate", "false",
    ]  # fmt: skip
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    run = subprocess.run(
        [*argv[:1], "--config-file", str(config), *argv[1:]],
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
             "PYTHONPATH": str(procs.ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"{report}\n--- server log ---\n{procs.tail(tmp_path / 'web.log')}"
