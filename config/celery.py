"""Celery application. Tasks take ids, re-read the world, and are idempotent (see STYLE.md)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("cartrecovery")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
