"""Production settings: ``DJANGO_SETTINGS_MODULE=config.settings.production``.

Everything secret comes from the environment, with no default: DJANGO_SECRET_KEY,
RECOVERY_TICKET_KEYS and CAMPAIGNS_LINK_KEYS (config/settings/base.py; the process refuses to
start without them). HTTPS only: secure cookies, HSTS, and a redirect to https. Behind a proxy
that terminates TLS, set DJANGO_SECURE_PROXY_SSL_HEADER to the header it sets (e.g.
``X-Forwarded-Proto``), or every request looks like plain HTTP and is redirected forever.
``manage.py check --deploy`` reports no issues with these settings.
"""

from config import env

from .base import *  # noqa: F403

DEBUG = env.get_bool("DJANGO_DEBUG", False)
# WhiteNoise re-scans static folders per request with autorefresh: a development convenience.
WHITENOISE_AUTOREFRESH = False

SECURE_SSL_REDIRECT = env.get_bool("DJANGO_SECURE_SSL_REDIRECT", True)
# A load balancer's health probe talks plain HTTP to the server itself.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env.get_int("DJANGO_SECURE_HSTS_SECONDS", 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.get_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env.get_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True

_proxy_header = env.get_str("DJANGO_SECURE_PROXY_SSL_HEADER")
if _proxy_header:
    # "X-Forwarded-Proto" -> ("HTTP_X_FORWARDED_PROTO", "https"): trusted only because the proxy
    # sets (and overwrites) it; never set this when clients reach the server directly.
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")
# Origins (scheme://host) allowed to post forms (admin, dashboard login) through a proxy.
CSRF_TRUSTED_ORIGINS = env.get_list("DJANGO_CSRF_TRUSTED_ORIGINS")
