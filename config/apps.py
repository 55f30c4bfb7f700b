from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project itself (config/): registers its system checks."""

    name = "config"
    label = "project"
    verbose_name = "Project"

    def ready(self) -> None:
        from config import checks  # noqa: F401  (registers the deploy checks)
