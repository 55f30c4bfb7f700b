from django.urls import path

from recovery import apis

urlpatterns = [
    path("carts/<str:cart>/score", apis.CartScoreApi.as_view(), name="cart-score"),
]
