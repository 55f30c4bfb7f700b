from django.urls import path

from recovery import apis

urlpatterns = [
    path("carts/<str:cart>/score", apis.CartScoreApi.as_view(), name="cart-score"),
    path("shopper-sessions", apis.ShopperSessionsApi.as_view(), name="shopper-sessions"),
    path("shopper-sessions/offers", apis.ShopperOffersApi.as_view(), name="shopper-offers"),
]
