"""Secrets (issue 11, security review 2 finding 4): no fallback SECRET_KEY in any settings module,
make run's keys generated once per clone, signing keys of their own that rotate, check --deploy."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.core import signing
from django.test import Client
from django.urls import path

from carts.models import Store
from carts.services import store_create, store_origins_add
from config import local_secrets
from recovery import tickets
from tests.e2e import procs

# The key every instance signed with before issue 11 (base.py's fallback): public.
OLD_PUBLIC_KEY = "dev-insecure-change-me-" + "x" * 32
SECRET_NAMES = ("DJANGO_SECRET_KEY", "RECOVERY_TICKET_KEYS", "CAMPAIGNS_LINK_KEYS")
ORIGIN = "http://shop.secrets.test"


def _env(**extra: str) -> dict[str, str]:
    """This test run's servers, and none of the secrets the test process exported."""
    env = procs.child_env(DATABASE_URL=procs.database_url(), REDIS_URL=django_settings.REDIS_URL)
    for name in (*SECRET_NAMES, "DJANGO_SECRET_KEY_FALLBACKS", "DJANGO_DEBUG", "CARTS_VAR_DIR"):
        env.pop(name, None)
    env.update(extra)
    return env


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [procs.PYTHON, "-c", code],
        cwd=procs.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


SETUP = "import django; django.setup()"
PRINT_KEYS = (
    SETUP + "; import json; from django.conf import settings as s; print(json.dumps("
    "{'secret': s.SECRET_KEY, 'tickets': s.RECOVERY_TICKET_KEYS, 'links': s.CAMPAIGNS_LINK_KEYS,"
    " 'debug': s.DEBUG}))"
)


def _random_key() -> str:
    return local_secrets.generate()["DJANGO_SECRET_KEY"]


# Settings that must refuse to start -------------------------------------------------------------


@pytest.mark.parametrize("module", ["config.settings.base", "config.settings.production"])
@pytest.mark.parametrize("missing", SECRET_NAMES)
def test_base_and_production_settings_refuse_to_start_without_each_secret(db, module, missing):
    env = _env(DJANGO_SETTINGS_MODULE=module)
    env.update({name: _random_key() for name in SECRET_NAMES if name != missing})

    done = _python(SETUP, env)

    assert done.returncode != 0
    assert "django.core.exceptions.ImproperlyConfigured" in done.stderr
    assert f"ImproperlyConfigured: {missing} is not set." in done.stderr


def test_production_settings_start_with_every_secret_set(db):
    env = _env(DJANGO_SETTINGS_MODULE="config.settings.production")
    env.update({name: _random_key() for name in SECRET_NAMES})
    env["RECOVERY_TICKET_KEYS"] = "new-ticket-key-" + "n" * 40 + ",old-ticket-key-" + "o" * 40

    done = _python(PRINT_KEYS, env)

    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["secret"] == env["DJANGO_SECRET_KEY"]
    assert got["tickets"] == ["new-ticket-key-" + "n" * 40, "old-ticket-key-" + "o" * 40]
    assert got["links"] == [env["CAMPAIGNS_LINK_KEYS"]]
    assert got["debug"] is False


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [procs.PYTHON, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=procs.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_check_deploy_with_production_settings_reports_no_issues(db):
    env = _env(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_ALLOWED_HOSTS="recover.example",
        DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
    )
    env.update({name: _random_key() for name in SECRET_NAMES})

    done = _check_deploy(env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout
    assert "WARNING" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            {"CAMPAIGNS_LINK_KEYS": OLD_PUBLIC_KEY},
            "(config.E001) CAMPAIGNS_LINK_KEYS holds a key that has been published",
        ),
        (
            {"DJANGO_SECRET_KEY": OLD_PUBLIC_KEY},
            "(config.E001) SECRET_KEY holds a key that has been published",
        ),
        (
            {"RECOVERY_TICKET_KEYS": "short"},
            "(config.W002) RECOVERY_TICKET_KEYS holds a key shorter than 32",
        ),
        (
            {"CAMPAIGNS_LINK_KEYS": "same-" + "s" * 50, "RECOVERY_TICKET_KEYS": "same-" + "s" * 50},
            "(config.W003) RECOVERY_TICKET_KEYS and CAMPAIGNS_LINK_KEYS share a key",
        ),
    ],
    ids=["published-link-key", "published-django-key", "short", "shared"],
)
def test_check_deploy_flags_published_short_and_shared_keys(db, keys, expected):
    env = _env(DJANGO_SETTINGS_MODULE="config.settings.production")
    env.update({name: _random_key() for name in SECRET_NAMES}, **keys)

    done = _check_deploy(env)

    assert done.returncode != 0
    assert expected in done.stderr


# make run's generated keys ------------------------------------------------------------------------


def _local_keys(var_dir: Path, **extra: str) -> dict:
    done = _python(
        PRINT_KEYS,
        _env(DJANGO_SETTINGS_MODULE="config.settings.local", CARTS_VAR_DIR=str(var_dir), **extra),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_local_settings_generate_keys_once_into_var_with_mode_0600_and_reuse_them(db, tmp_path):
    # given an empty var directory (a fresh clone)
    var_dir = tmp_path / "var"

    # when make run's settings start twice
    first = _local_keys(var_dir)
    second = _local_keys(var_dir)

    # then the first start wrote three independent random keys, readable by this user only...
    secrets_file = var_dir / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    stored = json.loads(secrets_file.read_text())
    assert first == {
        "secret": stored["DJANGO_SECRET_KEY"],
        "tickets": [stored["RECOVERY_TICKET_KEYS"]],
        "links": [stored["CAMPAIGNS_LINK_KEYS"]],
        "debug": False,  # make run's DEBUG is off unless DJANGO_DEBUG=1
    }
    assert len(set(stored.values())) == 3
    assert all(len(key) >= 60 for key in stored.values())
    assert OLD_PUBLIC_KEY not in stored.values()
    # ...and the second start reused them
    assert second == first


def test_two_clones_sign_with_different_keys(db, tmp_path):
    one = _local_keys(tmp_path / "clone-1")
    other = _local_keys(tmp_path / "clone-2")

    for name in ("secret", "tickets", "links"):
        assert one[name] != other[name]


def test_the_environment_overrides_the_generated_keys_and_debug(db, tmp_path):
    var_dir = tmp_path / "var"
    generated = _local_keys(var_dir)

    got = _local_keys(
        var_dir,
        DJANGO_SECRET_KEY="from-the-environment-" + "e" * 40,
        CAMPAIGNS_LINK_KEYS="link-new-" + "n" * 40 + ", link-old-" + "o" * 40,
        DJANGO_DEBUG="1",
    )

    assert got == {
        "secret": "from-the-environment-" + "e" * 40,
        "tickets": generated["tickets"],
        "links": ["link-new-" + "n" * 40, "link-old-" + "o" * 40],
        "debug": True,
    }


def test_processes_starting_together_on_a_fresh_clone_agree_on_the_keys(tmp_path):
    var_dir = tmp_path / "var"
    code = (
        "import json, sys; from pathlib import Path; from config import local_secrets; "
        "print(json.dumps(local_secrets.load_or_create(Path(sys.argv[1]))))"
    )
    started = [
        subprocess.Popen(
            [procs.PYTHON, "-c", code, str(var_dir)],
            cwd=procs.ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in started]

    assert all(p.returncode == 0 for p in started)
    assert all(out == outputs[0] for out in outputs)
    assert json.loads((var_dir / "secrets.json").read_text()) == outputs[0]
    assert sorted(p.name for p in var_dir.iterdir()) == ["secrets.json"]  # no temporary left


def test_a_damaged_secrets_file_stops_the_process_with_a_clear_message(db, tmp_path):
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    (var_dir / "secrets.json").write_text('{"DJANGO_SECRET_KEY": "only-this-one"}')

    done = _python(
        SETUP, _env(DJANGO_SETTINGS_MODULE="config.settings.local", CARTS_VAR_DIR=str(var_dir))
    )

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "lacks one of DJANGO_SECRET_KEY" in done.stderr
    assert "delete it to make new keys" in done.stderr


def test_the_test_settings_use_random_keys_of_their_own():
    assert OLD_PUBLIC_KEY not in (
        django_settings.SECRET_KEY,
        *django_settings.RECOVERY_TICKET_KEYS,
        *django_settings.CAMPAIGNS_LINK_KEYS,
    )
    keys = [
        django_settings.SECRET_KEY,
        *django_settings.RECOVERY_TICKET_KEYS,
        *django_settings.CAMPAIGNS_LINK_KEYS,
    ]
    assert len(set(keys)) == 3
    # exported, so the servers and workers that tests start sign with the same keys
    assert os.environ["DJANGO_SECRET_KEY"] == django_settings.SECRET_KEY


# Shopper tickets ----------------------------------------------------------------------------------


def _ticket_signed_with(key: str, *, store_id: int, cart: str) -> str:
    return signing.dumps(
        {"s": store_id, "c": cart, "n": uuid.uuid4().hex}, key=key, salt=tickets.SALT
    )


@database_sync_to_async
def _socket_store() -> int:
    creds = store_create(name=f"Secrets shop {uuid.uuid4().hex[:6]}")
    store_origins_add(store=Store.objects.get(pk=creds.store_id), origins=[ORIGIN])
    return creds.store_id


async def _hello(ticket: str) -> dict:
    """The first thing the shopper socket answers to a hello with this ticket."""
    from config.asgi import application

    communicator = WebsocketCommunicator(
        application, "/ws/v1/shopper/", headers=[(b"origin", ORIGIN.encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "ticket": ticket})
    output = await communicator.receive_output(timeout=5)
    await communicator.disconnect()
    return output


@pytest.mark.asyncio
async def test_a_ticket_signed_with_the_old_public_key_is_refused_with_4401(committed_db):
    store_id = await _socket_store()
    forged = _ticket_signed_with(OLD_PUBLIC_KEY, store_id=store_id, cart="cart-forged")
    forged_with_django_key = _ticket_signed_with(
        django_settings.SECRET_KEY, store_id=store_id, cart="cart-forged"
    )

    assert await _hello(forged) == {"type": "websocket.close", "code": 4401}
    # nor does the Django SECRET_KEY sign tickets: they have keys of their own
    assert await _hello(forged_with_django_key) == {"type": "websocket.close", "code": 4401}


@pytest.mark.asyncio
async def test_a_ticket_key_rotated_out_but_listed_still_opens_and_one_dropped_does_not(
    committed_db, settings
):
    store_id = await _socket_store()
    old, new = "ticket-key-old-" + "o" * 40, "ticket-key-new-" + "n" * 40
    settings.RECOVERY_TICKET_KEYS = [old]
    before_rotation = [tickets.ticket_issue(store_id=store_id, cart=f"cart-{i}") for i in (1, 2)]

    settings.RECOVERY_TICKET_KEYS = [new, old]
    welcome = await _hello(before_rotation[0])
    assert welcome["type"] == "websocket.send"
    assert json.loads(welcome["text"])["type"] == "welcome"
    # the newest key signs
    assert tickets.ticket_read(tickets.ticket_issue(store_id=store_id, cart="c")).cart == "c"
    settings.RECOVERY_TICKET_KEYS = [new]
    with pytest.raises(tickets.TicketInvalid):
        tickets.ticket_read(_ticket_signed_with(old, store_id=store_id, cart="c"))

    assert await _hello(before_rotation[1]) == {"type": "websocket.close", "code": 4401}


# A 500 with DEBUG off ---------------------------------------------------------------------------


def _boom(request):
    raise RuntimeError("a bug")


urlpatterns = [path("boom", _boom)]


@pytest.mark.urls("tests.test_secrets")
def test_a_500_shows_no_traceback_nor_the_callers_key(db):
    assert django_settings.DEBUG is False
    client = Client(raise_request_exception=False)

    response = client.get("/boom", HTTP_AUTHORIZATION="Bearer sk_live_secret_value")

    assert response.status_code == 500
    body = response.content.decode()
    assert "sk_live_secret_value" not in body
    assert "Traceback" not in body
    assert "RuntimeError" not in body


def test_static_files_are_served_with_debug_off(db):
    response = Client().get("/static/admin/css/base.css")

    assert django_settings.DEBUG is False
    assert response.status_code == 200
    assert response.getvalue().startswith(b"/*")


def test_the_schema_declares_the_secret_key_as_a_bearer_scheme(db):
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()

    assert schema["components"]["securitySchemes"]["storeSecretKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The store's secret key: `Authorization: Bearer sk_...`.",
    }
    assert schema["paths"]["/api/v1/events"]["post"]["security"] == [{"storeSecretKey": []}]
    kinds = {name for name in schema["components"]["schemas"] if "Kind" in name}
    assert {"CouponKindEnum", "FigureKindEnum"} <= kinds


def test_the_metrics_token_is_made_once_like_the_keys(tmp_path):
    from config import local_secrets

    path = tmp_path / "var" / "metrics-token"
    first = local_secrets.token_load_or_create(path)
    assert local_secrets.token_load_or_create(path) == first
    assert len(first) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("\n")
    with pytest.raises(local_secrets.LocalSecretsError, match="empty"):
        local_secrets.token_load_or_create(path)
