"""How a time is written wherever the public sees one: API responses and delivered events."""

from datetime import UTC, datetime


def api_datetime(value: datetime) -> str:
    """`2026-06-12T18:40:00Z`: how the API writes a time, in responses (`ApiDateTimeField`,
    and representations built directly) and in delivered event bodies."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat: half strftime's cost, and a 4-digit year before 1000 too (strftime's %Y on
    # glibc writes "5-01-01"). "2026-06-12T18:40:00+00:00"[:19] + "Z".
    return value.isoformat(timespec="seconds")[:19] + "Z"
