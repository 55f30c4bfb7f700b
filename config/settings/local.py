"""Development settings used by ``make run`` and manage.py."""

from config import env

from .base import *  # noqa: F403

DEBUG = env.get_bool("DJANGO_DEBUG", True)
# Emails print to the console unless EMAIL_BACKEND says otherwise (e.g. SMTP, see README).
EMAIL_BACKEND = env.get_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
