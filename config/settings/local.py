"""Development settings used by ``make run`` and manage.py.

Signing keys are generated once per clone into ``var/secrets.json`` (mode 0600; CARTS_VAR_DIR
moves it) and reused by every process that loads these settings; DJANGO_SECRET_KEY,
RECOVERY_TICKET_KEYS and CAMPAIGNS_LINK_KEYS in the environment take precedence. DEBUG is off
unless DJANGO_DEBUG=1: the debug 500 page would echo a request's headers, API keys included.
/metrics's bearer token is generated likewise into ``var/metrics-token`` (METRICS_TOKEN wins).
"""

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

# GET /metrics with "Authorization: Bearer $(cat var/metrics-token)"; METRICS_TOKEN wins.
try:
    METRICS_TOKEN = env.get_str("METRICS_TOKEN").strip() or local_secrets.token_load_or_create(
        env.VAR_DIR / METRICS_TOKEN_FILE
    )
except local_secrets.LocalSecretsError as exc:
    raise ImproperlyConfigured(str(exc)) from exc
