from django.urls import path, register_converter

from carts import apis


class ShopperIdConverter:
    """A shop's shopper id in a path: any text, slashes and line breaks included (str stops at a
    slash, path at a line break); the view validates it (400, not 404)."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ShopperIdConverter, "shopper_id")

urlpatterns = [
    path("events", apis.EventsApi.as_view(), name="events"),
    path("carts/<str:cart>", apis.CartApi.as_view(), name="cart"),
    path("carts/<str:cart>/events", apis.CartEventsApi.as_view(), name="cart-events"),
    path("carts/<str:cart>/browser-grant", apis.BrowserGrantApi.as_view(), name="browser-grant"),
    # Literal paths first: an id "erase" or "export" is named in these bodies instead.
    path("shoppers/erase", apis.ShopperEraseByBodyApi.as_view(), name="shopper-erase"),
    path("shoppers/export", apis.ShopperExportByBodyApi.as_view(), name="shopper-export"),
    path(
        "shoppers/<shopper_id:id>/export",
        apis.ShopperExportApi.as_view(),
        name="shopper-export-by-id",
    ),
    path("shoppers/<shopper_id:id>", apis.ShopperEraseApi.as_view(), name="shopper"),
]
