"""The retry schedule: when a failed delivery is tried again, and when it is given up.

`WEBHOOKS_RETRY_SCHEDULE` lists the delays in seconds after attempt 1, 2, …; each is applied
with ±20% jitter so a recovering endpoint is not hit by every retry at once. A `Retry-After`
on 429/503 replaces the scheduled delay, within [1 s, RETRY_AFTER_CAP].
"""

import random
from datetime import UTC, datetime

from django.conf import settings
from django.utils.http import parse_http_date_safe

JITTER = 0.2
RETRY_AFTER_CAP = 3600


def max_attempts() -> int:
    return 1 + len(settings.WEBHOOKS_RETRY_SCHEDULE)


def next_delay(attempts_made: int, retry_after: float | None = None) -> float | None:
    """Seconds until the next attempt after `attempts_made` attempts; None when exhausted."""
    schedule: list[float] = settings.WEBHOOKS_RETRY_SCHEDULE
    if attempts_made > len(schedule):
        return None
    if retry_after is not None:
        return float(min(max(retry_after, 1.0), RETRY_AFTER_CAP))
    base = schedule[attempts_made - 1]
    return base * random.uniform(1 - JITTER, 1 + JITTER)  # jitter, not secrecy


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After: 120` or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    when = parse_http_date_safe(value)
    if when is None:
        return None
    now = now or datetime.now(UTC)
    return max(0.0, when - now.timestamp())
