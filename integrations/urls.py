"""Inbound platform webhooks and the outbound endpoints' API, under /api/v1/."""

from django.urls import path

from integrations import apis, endpoint_apis

urlpatterns = [
    path("webhooks/shopify", apis.ShopifyWebhookApi.as_view(), name="webhooks-shopify"),
    path(
        "webhooks/woocommerce/<str:store_id>",
        apis.WooCommerceWebhookApi.as_view(),
        name="webhooks-woocommerce",
    ),
    path("webhooks/saleor/<str:store_id>", apis.SaleorWebhookApi.as_view(), name="webhooks-saleor"),
    path("webhook-endpoints", endpoint_apis.EndpointListApi.as_view(), name="webhook-endpoints"),
    path(
        "webhook-endpoints/<str:endpoint_id>",
        endpoint_apis.EndpointDetailApi.as_view(),
        name="webhook-endpoint",
    ),
    path(
        "webhook-endpoints/<str:endpoint_id>/deliveries",
        endpoint_apis.EndpointDeliveriesApi.as_view(),
        name="webhook-endpoint-deliveries",
    ),
]
