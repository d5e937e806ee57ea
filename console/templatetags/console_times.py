"""Times in the console's own templates, written as on every other console page."""

from datetime import datetime

from django import template

from console.base import utc_time

register = template.Library()


@register.filter
def utc(moment: datetime | None) -> str:
    """{{ value|utc }}: the time in UTC to the second (console.base.utc_time)."""
    return utc_time(moment)
