"""The dashboards' websocket route: the Django session (cookie) identifies the marketer, and the
Origin must be one of our own hosts (ALLOWED_HOSTS); the storefront's shopper socket has rules of
its own (recovery.routing)."""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from dashboards.consumers import DashboardConsumer

websocket_urlpatterns = [
    path(
        "ws/v1/dashboard/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(DashboardConsumer.as_asgi())),
    ),
]
