"""train_scorer / activate_scorer on a generated log, and the model swap without a restart."""

from __future__ import annotations

import copy
import io
import json
import time
import urllib.request

import pytest
from django.core.management import CommandError, call_command

from carts import services as carts_services
from carts.models import CartState
from carts.sources import Source
from recovery import features, services, serving
from recovery.council import Council
from recovery.models import ScoringModel
from tests.conftest import event, item, subprocess_env
from tests.e2e import procs
from tests.recovery.helpers import append_journeys


@pytest.fixture(autouse=True)
def fresh_models(settings):
    settings.RECOVERY_MODEL_REFRESH_SECONDS = 0
    serving.MODELS.clear()
    yield
    serving.MODELS.clear()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_train_scorer_stores_a_versioned_model_with_metrics(store):
    append_journeys(store_id=store.pk, carts=400)

    summary = json.loads(
        run("train_scorer", "--store", str(store.pk), "--horizon", "24h", "--json")
    )

    model = ScoringModel.objects.get(version=summary["version"])
    assert model.store_id == store.pk and not model.active
    assert model.horizon_seconds == 24 * 3600
    assert model.window_start and model.split_at and model.window_end
    assert model.window_start < model.split_at < model.window_end
    assert model.typical_basket and model.typical_basket > 0
    test = model.metrics["test"]
    assert test["carts"] >= 50 and 0 < test["positives"] < test["n"]
    # Synthetic journeys carry real signal (checkout progress, shipping shock...): the council
    # finds it on carts it never saw.
    assert test["roc_auc"] > 0.7
    assert 0 <= test["brier"] < 0.25
    assert len(test["calibration"]) >= 2
    council = Council.from_dict(model.artifact)
    assert council.version == model.version
    assert set(council.specialist_names) == set(features.SPECIALISTS)
    assert model.features_version == 1


def test_activation_swaps_the_model_for_the_next_append(store, post_events, api):
    append_journeys(store_id=store.pk, carts=300, prefix="hist-")
    # The API fixture's store is a different one: train on this one, score that one's carts.
    summary = json.loads(run("train_scorer", "--store", str(store.pk), "--json", "--activate"))
    assert ScoringModel.objects.get(version=summary["version"]).active

    carts_services.events_append(
        source=Source.server("test"),
        store_id=store.pk,
        events=[
            __import__("tests.conftest", fromlist=["new_event"]).new_event(
                "cart.item_added", "fresh", item()
            )
        ],
    )
    row = CartState.objects.get(store=store, token="fresh")
    assert row.model_version == summary["version"]

    run("activate_scorer", "--store", str(store.pk), "--stock")
    carts_services.events_append(
        source=Source.server("test"),
        store_id=store.pk,
        events=[
            __import__("tests.conftest", fromlist=["new_event"]).new_event(
                "checkout.started", "fresh"
            )
        ],
    )
    row.refresh_from_db()
    assert row.model_version == "stock-1"

    out = run("activate_scorer", "--store", str(store.pk), "--model", summary["version"])
    assert "Activated" in out
    assert ScoringModel.objects.filter(store=store, active=True).count() == 1


def test_train_scorer_errors(store):
    with pytest.raises(CommandError, match="No store"):
        run("train_scorer", "--store", "999999")
    with pytest.raises(CommandError, match="--horizon"):
        run("train_scorer", "--store", str(store.pk), "--horizon", "soon")
    with pytest.raises(CommandError, match="no events"):
        run("train_scorer", "--store", str(store.pk))
    append_journeys(store_id=store.pk, carts=5)
    with pytest.raises(CommandError, match="carts to train on"):
        run("train_scorer", "--store", str(store.pk))
    with pytest.raises(CommandError, match="no model"):
        run("activate_scorer", "--store", str(store.pk), "--model", "nope")


def _post(port: int, key: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/events",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        json.loads(response.read())
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/carts/{body['cart']}",
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def test_a_running_server_picks_up_a_new_model_without_restart(committed_store, tmp_path):
    store, creds = committed_store
    port = procs.free_port()
    env = subprocess_env(RECOVERY_MODEL_REFRESH_SECONDS="0.5")
    server = procs.start(
        [procs.PYTHON, "-m", "uvicorn", "config.asgi:application", "--port", str(port)],
        env=env,
        log=tmp_path / "web.log",
    )
    try:
        procs.wait_for(
            lambda: procs.status_of(f"http://127.0.0.1:{port}/healthz") in (200, 503),
            timeout=60,
            what="the web server",
        )
        before = _post(port, creds.secret_key, event("cart.item_added", "swap", item(), at=0))
        assert before["model_version"] == "stock-1"

        # A new model: the stock artifact with its base log-odds moved, so scores change too.
        artifact = copy.deepcopy(serving.stock_model().council.to_dict())
        artifact["base_log_odds"] = artifact["base_log_odds"] + 1.0
        artifact["version"] = f"swap-{store.pk}"
        model = ScoringModel.objects.create(
            store=store, version=f"swap-{store.pk}", artifact=artifact, features_version=1,
            horizon_seconds=86400,
        )  # fmt: skip
        services.scorer_activate(model=model, now=model.created_at)

        deadline = time.monotonic() + 10
        after = before
        n = 0
        while after["model_version"] != model.version and time.monotonic() < deadline:
            n += 1
            after = _post(
                port,
                creds.secret_key,
                event("page.viewed", "swap", {"url": "/", "page_type": "home"}, at=n),
            )
        assert after["model_version"] == model.version, procs.tail(tmp_path / "web.log")
        assert after["score"] > before["score"]
    finally:
        procs.stop(server)
