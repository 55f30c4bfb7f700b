"""What the integrations' admin forms share."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import models


def https_urls(field: models.Field, **kwargs: Any) -> forms.Field | None:
    """A model form's fields, a URL typed without a scheme read as https (as Django 6 will)."""
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


# The same for the fields a ModelAdmin makes (its formfield_overrides).
URL_OVERRIDES: dict[type[models.Field], dict[str, Any]] = {
    models.URLField: {"assume_scheme": "https"}
}
