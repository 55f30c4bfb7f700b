"""The only reader of the process environment.

Every setting that can come from the environment is read here, once. With no ``DATABASE_URL`` /
``REDIS_URL`` the project starts its own embedded PostgreSQL and Redis (see ``config.embedded``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

BASE_DIR = Path(__file__).resolve().parent.parent


def _get(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def get_bool(name: str, default: bool = False) -> bool:
    raw = _get(name)
    if not raw:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def get_int(name: str, default: int) -> int:
    raw = _get(name)
    return int(raw) if raw else default


def get_float(name: str, default: float) -> float:
    raw = _get(name)
    return float(raw) if raw else default


def get_str(name: str, default: str = "") -> str:
    return _get(name, default)


def get_list(name: str) -> list[str]:
    """A comma-separated list (blanks dropped); empty when unset."""
    return [part.strip() for part in _get(name).split(",") if part.strip()]


def get_prefixed(prefix: str) -> dict[str, str]:
    """Every variable named ``<prefix>NAME``, as ``{"NAME": value}`` (e.g. a provider's keys)."""
    return {
        name[len(prefix) :]: value
        for name, value in os.environ.items()
        if name.startswith(prefix) and len(name) > len(prefix)
    }


# Secrets that a settings module supplies when the environment does not: make run's generated
# var/secrets.json (config/settings/local.py) and the test suite's keys (config/settings/test.py).
# Never filled in production settings, where an unset secret stops the process.
_SECRET_DEFAULTS: dict[str, str] = {}


def secret_defaults_set(values: dict[str, str]) -> None:
    """Supply secrets for this process when the environment does not set them."""
    _SECRET_DEFAULTS.update(values)


def export_for_children(values: dict[str, str]) -> None:
    """Put ``values`` in this process's environment, so the processes it starts inherit them
    (the test suite's keys, for the servers and workers that tests start)."""
    for name, value in values.items():
        os.environ.setdefault(name, value)


def get_secret(name: str, *, purpose: str) -> str:
    """A required secret: the environment's, else a settings-supplied default, else the process
    refuses to start (ImproperlyConfigured naming the variable and what it is for)."""
    value = _get(name).strip() or _SECRET_DEFAULTS.get(name, "")
    if not value:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"{name} is not set. It is {purpose}; set it in the environment to a long random "
            f"value (e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'). "
            "`make run` (config.settings.local) generates one into var/secrets.json."
        )
    return value


def get_secret_list(name: str, *, purpose: str) -> list[str]:
    """A required list of keys, newest first (comma-separated); see get_secret."""
    keys = [part.strip() for part in get_secret(name, purpose=purpose).split(",") if part.strip()]
    if not keys:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{name} names no key: it is {purpose}.")
    return keys


def child_environment(**overrides: str) -> dict[str, str]:
    """This process's environment plus ``overrides``, for the processes ``make run`` starts."""
    return {**os.environ, **overrides}


VAR_DIR = Path(_get("CARTS_VAR_DIR") or BASE_DIR / "var")


@dataclass(frozen=True, slots=True)
class Services:
    database_url: str
    redis_url: str
    embedded_postgres: bool
    embedded_redis: bool


def services() -> Services:
    """Return the PostgreSQL and Redis URLs, starting embedded servers for whichever is unset."""
    database_url = _get("DATABASE_URL")
    redis_url = _get("REDIS_URL")
    if not database_url or not redis_url:
        from config import embedded

        if not database_url:
            database_url = embedded.ensure_postgres()
        if not redis_url:
            redis_url = embedded.ensure_redis()
    return Services(
        database_url=database_url,
        redis_url=redis_url,
        embedded_postgres=not _get("DATABASE_URL"),
        embedded_redis=not _get("REDIS_URL"),
    )


def database_config(url: str) -> dict[str, object]:
    """Turn a ``postgresql://`` URL into a Django DATABASES entry."""
    import dj_database_url

    return dict(dj_database_url.parse(url))


def celery_broker_url(redis_url: str) -> str:
    """Kombu spells a unix-socket Redis URL ``redis+socket://`` and its ``db`` ``virtual_host``.

    (Kombu ignores ``db=`` on a socket URL, which would put the broker on database 0 while the
    cache and channel layer use the database the URL names.)
    """
    if not redis_url.startswith("unix://"):
        return redis_url
    path, _, query = redis_url.removeprefix("unix://").partition("?")
    pairs = [
        ("virtual_host" if key == "db" else key, value)
        for key, value in parse_qsl(query, keep_blank_values=True)
    ]
    return "redis+socket://" + path + ("?" + urlencode(pairs) if pairs else "")
