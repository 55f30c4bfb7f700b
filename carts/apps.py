from django.apps import AppConfig


class CartsConfig(AppConfig):
    name = "carts"
    verbose_name = "Stores and cart events"

    def ready(self) -> None:
        from carts import schema  # noqa: F401  (registers the OpenAPI auth extension)
