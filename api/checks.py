"""System checks: settings the API reads per request are validated once, at startup."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from api.throttling import parse_rate


@register()
def rate_limit_setting(app_configs: Any, **kwargs: Any) -> list[Error]:
    try:
        parse_rate(settings.API_RATE_LIMIT)
    except ValueError as exc:
        return [Error(str(exc), id="api.E001")]
    return []
