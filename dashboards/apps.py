from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    name = "dashboards"
    verbose_name = "Marketer dashboards"

    def ready(self) -> None:
        from carts import projectors
        from dashboards import projection

        # Tailed by `run_projectors` (make run), rebuilt by `rebuild_projections dashboard`.
        projectors.register(
            projectors.Projector(projection.NAME, projection.apply, projection.reset)
        )
        # Registers the projector `dashboard_live` (the live view's pushes).
        from dashboards import live  # noqa: F401
