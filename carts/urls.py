from django.urls import path

from carts import apis

urlpatterns = [
    path("events", apis.EventsApi.as_view(), name="events"),
    path("carts/<str:cart>", apis.CartApi.as_view(), name="cart"),
    path("carts/<str:cart>/events", apis.CartEventsApi.as_view(), name="cart-events"),
    path("carts/<str:cart>/browser-grant", apis.BrowserGrantApi.as_view(), name="browser-grant"),
]
