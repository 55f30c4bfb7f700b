"""Development settings used by ``make run`` and manage.py.

Signing keys are generated once per clone into ``var/secrets.json`` (mode 0600; CARTS_VAR_DIR
moves it) and reused by every process that loads these settings; DJANGO_SECRET_KEY,
RECOVERY_TICKET_KEYS and CAMPAIGNS_LINK_KEYS in the environment take precedence. DEBUG is off
unless DJANGO_DEBUG=1: the debug 500 page would echo a request's headers, API keys included.
/metrics's bearer token is generated likewise into ``var/metrics-token`` (METRICS_TOKEN wins).
"""

import contextlib
import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config import env, local_secrets

try:
    env.secret_defaults_set(local_secrets.load_or_create(env.VAR_DIR))
except local_secrets.LocalSecretsError as exc:
    raise ImproperlyConfigured(str(exc)) from exc

from .base import *  # noqa: F403

# Emails print to the console unless EMAIL_BACKEND says otherwise (e.g. SMTP, see README).
EMAIL_BACKEND = env.get_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# The demo storefront's checkout (POST /demo/order), for the demo store.
DEMO_ORDERS = env.get_bool("DEMO_ORDERS", True)
# A shop, a Saleor or a webhook receiver on this machine is a development set-up's normal case.
INTEGRATIONS_ALLOW_PRIVATE_URLS = env.get_bool("INTEGRATIONS_ALLOW_PRIVATE_URLS", True)


METRICS_TOKEN_FILE = "metrics-token"  # noqa: S105 (a file name)


def _metrics_token(var_dir: Path) -> str:
    """``var_dir/metrics-token``, created (0600, atomically: of processes starting together,
    one file wins and every one reads it) on first use."""
    path = var_dir / METRICS_TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{path} cannot be read ({exc}); delete it.") from exc
    if not token:
        raise ImproperlyConfigured(f"{path} is empty; delete it to make a new token.")
    return token


# GET /metrics with "Authorization: Bearer $(cat var/metrics-token)".
METRICS_TOKEN = METRICS_TOKEN or _metrics_token(env.VAR_DIR)  # noqa: F405
