from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import health, metrics, views
from dashboards.logins import AdminLoginView
from recovery import demo

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),  # Prometheus; bearer METRICS_TOKEN
    path("demo/", demo.demo_storefront, name="demo"),
    path("demo/order", demo.demo_order, name="demo-order"),
    # Failed logins limited per username and client address (dashboards/logins.py).
    path("admin/login/", AdminLoginView.as_view(), name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("carts.urls")),
    path("api/v1/", include("recovery.urls")),
    path("api/v1/", include("campaigns.api_urls")),
    path("api/v1/", include("dashboards.api_urls")),
    path("api/v1/", include("integrations.urls")),  # platform webhooks, outbound endpoints
    path("dashboard/", include("dashboards.live_urls")),
    path("dashboard/", include("dashboards.urls")),
    path("", include("campaigns.urls")),  # restore, unsubscribe and tracking links in emails
    path("webhooks/email/", include("campaigns.webhooks")),  # providers' bounces and complaints
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
