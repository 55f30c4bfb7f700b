"""Onboarding (issue 14; UX review 2, sections 1 and 5): make run keeps the once-only admin
password and demo keys in var/credentials.txt (0600, never overwritten), its banner links what a
newcomer opens first, and the default log level leaves out per-request and per-batch lines."""

from __future__ import annotations

import io
import json
import re
import stat
import subprocess

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from carts.models import Store
from config import devrun
from tests.e2e import procs


def _field(text: str, name: str) -> list[str]:
    return re.findall(rf"^  {name} +(\S+)$", text, flags=re.MULTILINE)


def test_the_first_start_writes_the_admin_password_and_the_demo_keys_once_with_mode_0600(
    db, tmp_path
):
    # given a fresh database and an empty var directory
    out = io.StringIO()

    # when make run starts for the first time (what devrun.main does after migrating)
    where = devrun.first_start(port=8123, var_dir=tmp_path, out=out)

    # then the credentials are in var/credentials.txt, readable by this user only
    path = tmp_path / "credentials.txt"
    assert where == f"credentials: {path}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    [password] = _field(text, "password")
    [secret_key] = _field(text, "secret key")
    [publishable_key] = _field(text, "publishable key")
    assert publishable_key.startswith("pk_") and _field(text, "webhook secret")[0].startswith(
        "whsec_"
    )
    # ... and they work: the password logs the admin in, the secret key authenticates to the API
    assert Client().login(username="admin", password=password)
    assert get_user_model().objects.get(username="admin").is_superuser
    api = APIClient()
    assert api.get("/api/v1/carts/nope").status_code == 401
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret_key}")
    answer = api.get("/api/v1/carts/nope")
    assert answer.status_code == 404, answer.content  # authenticated: the cart does not exist
    store = Store.objects.get(name="Demo store")
    assert f"store #{store.pk} 'Demo store'" in text
    assert "http://127.0.0.1:8123" in store.allowed_origins
    # ... and printed once, as before, saying where they are kept
    printed = out.getvalue()
    assert secret_key in printed and password in printed
    assert f"Written to {path} (mode 0600)" in printed

    # when make run starts again: nothing new to write, the file is left as it was
    again = io.StringIO()
    assert devrun.first_start(port=8123, var_dir=tmp_path, out=again) == where
    assert path.read_text() == text
    assert "sk_" not in again.getvalue() and "password" not in again.getvalue()


def test_newer_credentials_are_appended_never_written_over(db, tmp_path):
    path = tmp_path / "credentials.txt"
    path.write_text("# kept by hand\n")
    path.chmod(0o644)

    devrun.first_start(port=8124, var_dir=tmp_path, out=io.StringIO())

    text = path.read_text()
    assert text.startswith("# kept by hand\n")
    assert len(_field(text, "password")) == 1 and len(_field(text, "secret key")) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_without_the_file_the_banner_says_how_to_get_new_credentials(db, tmp_path):
    devrun.first_start(port=8125, var_dir=tmp_path / "one", out=io.StringIO())

    where = devrun.first_start(port=8125, var_dir=tmp_path / "other", out=io.StringIO())

    store = Store.objects.get(name="Demo store")
    assert "changepassword admin" in where
    assert f"rotate_store_keys --store {store.pk}" in where
    assert not (tmp_path / "other" / "credentials.txt").exists()


def test_the_banner_links_the_demo_dashboards_admin_docs_and_the_credentials():
    out = io.StringIO()
    printer = devrun.Printer(out, ["web"])

    devrun.banner(printer, port=8126, credentials="credentials: var/credentials.txt")

    text = out.getvalue()
    base = "http://127.0.0.1:8126"
    for url in ("/", "/demo/", "/dashboard/", "/admin/", "/api/docs/", "/healthz"):
        assert f" {base}{url}\n" in text, url
    assert "docs/first-hour.md" in text
    assert "credentials: var/credentials.txt" in text
    assert "LOG_LEVEL=DEBUG" in text


_LEVELS = (
    "import django, json, logging; django.setup(); print(json.dumps({name: "
    "logging.getLogger(name).isEnabledFor(logging.INFO) for name in "
    "('uvicorn.access', 'uvicorn.error', 'carts.projectors', 'carts.scheduler', "
    "'celery.app.trace', 'celery.worker.strategy', 'campaigns.steps')} | "
    "{'carts.projectors/debug': logging.getLogger('carts.projectors').isEnabledFor(logging.DEBUG)}"
    "))"
)


@pytest.mark.parametrize(
    ("level", "details"), [(None, False), ("INFO", False), ("DEBUG", True), ("debug", True)]
)
def test_details_are_logged_only_with_log_level_debug(level, details):
    env = procs.child_env(DJANGO_SETTINGS_MODULE="config.settings.test")
    env.pop("LOG_LEVEL", None)
    if level:
        env["LOG_LEVEL"] = level

    done = subprocess.run(
        [procs.PYTHON, "-c", _LEVELS],
        cwd=procs.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    enabled = json.loads(done.stdout.strip().splitlines()[-1])
    # per request, per websocket connection, per batch of projected events: details
    # (run_projectors logs a batch at DEBUG)
    detail = ("uvicorn.access", "uvicorn.error", "carts.projectors/debug", "celery.worker.strategy")
    assert {name: enabled[name] for name in detail} == dict.fromkeys(detail, details)
    # progress lines stay: the scheduler's, the worker's task results (the simulator prints its
    # own), run_projectors' "running" and "stopped"
    progress = ("carts.scheduler", "campaigns.steps", "celery.app.trace", "carts.projectors")
    assert all(enabled[name] for name in progress), enabled


def test_make_runs_emails_are_saved_whole_and_logged_as_one_line(tmp_path, monkeypatch, caplog):
    # Console emails were ~95 lines each in the worker's log (about 400 lines a minute from
    # minute 5 of make run): saved under var/emails/ instead, one line each with the restore link.
    import email
    import logging

    from django.core.mail import EmailMultiAlternatives, get_connection

    from config import env

    monkeypatch.setattr(env, "VAR_DIR", tmp_path)
    restore = "http://127.0.0.1:8000/r/abc.DEF-1"
    message = EmailMultiAlternatives(
        subject="Your cart at Demo store is waiting",
        body=f"Back to my cart: {restore}\n\nDon't remind me: http://127.0.0.1:8000/r/x.y/stop\n",
        from_email="Demo store <shop@example.com>",
        to=["ann@example.com"],
    )
    message.attach_alternative(f'<a href="{restore}">Back to my cart</a>', "text/html")
    connection = get_connection("config.devrun.EmailBackend")

    with caplog.at_level(logging.INFO, logger="config.devrun.email"):
        assert connection.send_messages([message]) == 1

    [saved] = list((tmp_path / "emails").iterdir())
    parsed = email.message_from_bytes(saved.read_bytes())
    assert parsed["Subject"] == "Your cart at Demo store is waiting"
    assert parsed["To"] == "ann@example.com"
    assert [part.get_content_type() for part in parsed.walk()][1:] == ["text/plain", "text/html"]
    [line] = [r.getMessage() for r in caplog.records if r.name == "config.devrun.email"]
    assert line == (
        "email to ann@example.com: 'Your cart at Demo store is waiting'; "
        f"restore link {restore}; saved in {saved}"
    )


def test_the_banner_says_where_emails_go_when_make_run_keeps_them(monkeypatch):
    monkeypatch.setenv("EMAIL_BACKEND", "config.devrun.EmailBackend")
    out = io.StringIO()

    devrun.banner(devrun.Printer(out, ["web"]), port=8127, credentials="credentials: x")

    assert "emails: not sent; each saved in " in out.getvalue()
