"""Placeholder: inbound webhook views."""

from rest_framework.views import APIView


class ShopifyWebhookApi(APIView):
    pass


class WooCommerceWebhookApi(APIView):
    pass


class SaleorWebhookApi(APIView):
    pass
