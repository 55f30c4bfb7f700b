"""Placeholder; filled in by the issue 5 work."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
