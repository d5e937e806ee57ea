from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operators' console (the Django admin): registers every app's models."""

    name = "console"
    verbose_name = "Operators' console"
