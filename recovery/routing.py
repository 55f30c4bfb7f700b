from django.urls import path

from recovery.consumers import ShopperConsumer

websocket_urlpatterns = [
    path("ws/v1/shopper/", ShopperConsumer.as_asgi()),
]
