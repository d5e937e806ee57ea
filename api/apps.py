from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The public API's cross-cutting behaviour: errors, versions, idempotency, pagination."""

    name = "api"
    verbose_name = "API platform"

    def ready(self) -> None:
        from api import checks  # noqa: F401  registers the system checks
