"""The dashboard pages under /dashboard/ (Django session; docs/dashboards.md)."""

from django.urls import path

from dashboards import views

app_name = "dashboards"

urlpatterns = [
    path("", views.index, name="index"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.logout, name="logout"),
    path("help/", views.help_page, name="help"),
    path("<int:store_id>/", views.overview, name="overview"),
    path("<int:store_id>/timeseries/", views.timeseries, name="timeseries"),
    path("<int:store_id>/funnel/", views.funnel, name="funnel"),
    path("<int:store_id>/offers/", views.offers, name="offers"),
    path("<int:store_id>/scores/", views.scores, name="scores"),
    path("<int:store_id>/products/", views.products, name="products"),
    path("<int:store_id>/export/<slug:table>.csv", views.export, name="export"),
]
