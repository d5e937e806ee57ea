"""System checks: the portal's settings are validated once, at startup."""

import re
from typing import Any

from django.conf import settings
from django.core.checks import Error, register

# A CSP source expression: one token, so that no value can end the directive or add another.
_SOURCE = re.compile(r"[^\s;,'\"]+|'self'")


@register()
def frame_ancestors_setting(app_configs: Any, **kwargs: Any) -> list[Error]:
    bad = [s for s in settings.PORTAL_FRAME_ANCESTORS if not _SOURCE.fullmatch(s)]
    if bad:
        return [
            Error(
                f"PORTAL_FRAME_ANCESTORS takes origins such as https://dashboard.example.com, "
                f"not {bad[0]!r}.",
                id="portal.E001",
            )
        ]
    return []
