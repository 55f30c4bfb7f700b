from django.apps import AppConfig


class CartsConfig(AppConfig):
    name = "carts"
    verbose_name = "Stores and cart events"

    def ready(self) -> None:
        from django.conf import settings

        from carts import (
            scheduler,
            schema,  # noqa: F401  (registers the OpenAPI auth extension)
        )

        def retention() -> None:
            from carts import tasks

            tasks.retention_sweep.delay()  # a job enqueues; a worker erases (carts/privacy.py)

        scheduler.register("carts.retention", settings.CARTS_RETENTION_SWEEP_SECONDS, retention)

        def partitions_ahead() -> None:
            from carts import partitions

            partitions.partitions_ensure_ahead()  # a few statements: no worker needed

        scheduler.register("carts.partitions", settings.CARTS_PARTITIONS_SECONDS, partitions_ahead)
