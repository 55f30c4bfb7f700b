"""The live page under /dashboard/ (the other dashboard pages are in dashboards/urls.py)."""

from django.urls import path

from dashboards import live_views

app_name = "dashboards_live"

urlpatterns = [
    path("<int:store_id>/live/", live_views.live, name="live"),
]
