from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Shop platforms and webhooks"

    def ready(self) -> None:
        from integrations import wiring

        wiring.register()
