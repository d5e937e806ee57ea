"""How a time is written wherever the public sees one (API responses, delivered events), and
read wherever the public gives one."""

import re
from datetime import UTC, datetime


def api_datetime(value: datetime) -> str:
    """`2026-06-12T18:40:00Z`: how the API writes a time, in responses (`ApiDateTimeField`,
    and representations built directly) and in delivered event bodies."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat: half strftime's cost, and a 4-digit year before 1000 too (strftime's %Y on
    # glibc writes "5-01-01"). "2026-06-12T18:40:00+00:00"[:19] + "Z".
    return value.isoformat(timespec="seconds")[:19] + "Z"


# ISO 8601 as RFC 3339 profiles it: a date, a time to the second (a fraction allowed) and a zone.
# ASCII digits only (`\d` would take other scripts' digits).
_ZONED_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})",
    re.IGNORECASE,  # RFC 3339 allows `t` and `z`
)


def parse_zoned_datetime(value: str) -> datetime:
    """`2026-06-12T18:40:00Z` or `2026-06-12T20:40:00+02:00`, in UTC; ValueError for anything
    else, a time without a zone included: which zone was meant cannot be guessed."""
    if not _ZONED_TIME.fullmatch(value):
        raise ValueError("not an ISO 8601 time with a zone")
    try:
        # fromisoformat keeps microseconds of a longer fraction, as PostgreSQL would.
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except OverflowError:  # a valid local time that falls outside year 1-9999 in UTC
        raise ValueError("out of range") from None
