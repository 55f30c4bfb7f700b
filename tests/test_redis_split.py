"""The channel layer and the Celery broker may each have a Redis of their own; both default to
REDIS_URL (docs/operations.md, "Running on several machines")."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import BASE_DIR_FOR_TESTS, subprocess_env

_PRINT = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps([s.REDIS_URL, s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]['address'],"
    " s.CELERY_BROKER_URL]))"
)


def _urls(**env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PRINT],
        cwd=BASE_DIR_FOR_TESTS,
        env={**subprocess_env(**env), "REDIS_URL": "redis://main.internal:6379/0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_redis_defaults_to_redis_url():
    assert _urls() == ["redis://main.internal:6379/0"] * 3


def test_the_channel_layer_and_the_broker_take_their_own():
    assert _urls(
        CHANNELS_REDIS_URL="redis://channels.internal:6379/0",
        CELERY_BROKER_URL="redis://broker.internal:6379/0",
    ) == [
        "redis://main.internal:6379/0",
        "redis://channels.internal:6379/0",
        "redis://broker.internal:6379/0",
    ]
