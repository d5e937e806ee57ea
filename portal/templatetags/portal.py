"""The portal's template helpers: which nav section a page is in, and figures as people read
them."""

from datetime import UTC, datetime

from django import template
from django.http import HttpRequest

register = template.Library()

# Page (URL name) -> the nav section it belongs to; anything else belongs to "endpoints".
_SECTIONS = {
    "events": "events",
    "event": "events",
    "catalog": "catalog",
    "verifying": "verifying",
}


@register.simple_tag(takes_context=True)
def portal_section(context: template.Context) -> str:
    request: HttpRequest | None = context.get("request")
    match = getattr(request, "resolver_match", None)
    return _SECTIONS.get(getattr(match, "url_name", "") or "", "endpoints")


@register.filter
def percent(rate: float | None) -> str:
    """0.9734 -> "97.3%"; None -> "—"."""
    if rate is None:
        return "—"
    return f"{rate * 100:.1f}%".replace(".0%", "%")


@register.filter
def capped(count: int, is_capped: bool) -> str:
    """12345 -> "12,345"; at the cap, "10,000+"."""
    return f"{count:,}+" if is_capped else f"{count:,}"


@register.filter
def utc(value: datetime | None) -> str:
    """A time as the portal writes it: "2026-12-03 11:22:33 UTC"; None -> "—"."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
