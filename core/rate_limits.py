"""Request rate limits, counted in Redis so every web process shares one count.

A fixed window per caller (`API_RATE_LIMIT`, e.g. `100/s`, `6000/m`): one atomic INCR (and an
EXPIRE on the window's first request) per request. Without Redis (a bare local checkout) the
count is kept per process. If Redis cannot be reached the request is let through and a warning
logged: a broken limiter must not take the service down with it. The API (per key) and the
customer portal (per session) count with it.
"""

import logging
import threading
import time
from collections import Counter
from functools import cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

PERIODS = {"s": 1, "m": 60, "h": 3600}
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


@cache
def parse_rate(rate: str) -> tuple[int, int] | None:
    """`"100/s"` -> (100, 1); empty or `"off"` -> None (no limit)."""
    if not rate or rate.strip().lower() == "off":
        return None
    count, _, period = rate.strip().partition("/")
    if not count.isdigit() or period not in PERIODS or int(count) < 1:
        raise ValueError(f"API_RATE_LIMIT must look like 100/s, 6000/m or 'off', not {rate!r}")
    return int(count), PERIODS[period]


def _redis_url() -> str:
    """API_RATE_LIMIT_REDIS_URL, else the broker's Redis, else none (count per process)."""
    url: str = settings.API_RATE_LIMIT_REDIS_URL
    broker: str = settings.CELERY_BROKER_URL
    if not url and broker.startswith(("redis://", "rediss://")):
        url = broker
    return url


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)


class _LocalCounts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.window = -1

    def incr(self, key: str, window: int) -> int:
        with self.lock:
            if window != self.window:
                self.counts.clear()
                self.window = window
            self.counts[key] += 1
            return self.counts[key]


_local = _LocalCounts()


def seconds_to_wait(caller: str) -> float | None:
    """Counts one request of `caller` under API_RATE_LIMIT: None if it is within the limit,
    else the seconds until the next window."""
    limit = parse_rate(settings.API_RATE_LIMIT)
    if limit is None:
        return None
    allowed, period = limit
    now = time.time()
    window = int(now // period)
    key = f"ratelimit:{caller}:{period}:{window}"
    url = _redis_url()
    if url:
        try:
            count = int(_client(url).eval(_COUNT, 1, key, period + 1))
        except redis.RedisError as exc:
            logger.warning("rate limiter unavailable, request allowed: %s", exc)
            return None
    else:
        count = _local.incr(key, window)
    if count <= allowed:
        return None
    return (window + 1) * period - now
