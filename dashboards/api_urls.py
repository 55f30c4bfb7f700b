"""The metrics API under /api/v1/metrics/ (a store's secret key or a marketer's session)."""

from django.urls import path

from dashboards import apis

urlpatterns = [
    path("metrics/overview", apis.OverviewApi.as_view(), name="metrics-overview"),
    path("metrics/timeseries", apis.TimeseriesApi.as_view(), name="metrics-timeseries"),
    path("metrics/funnel", apis.FunnelApi.as_view(), name="metrics-funnel"),
    path("metrics/offers", apis.OffersApi.as_view(), name="metrics-offers"),
    path("metrics/scores", apis.ScoresApi.as_view(), name="metrics-scores"),
    path("metrics/products", apis.ProductsApi.as_view(), name="metrics-products"),
]
