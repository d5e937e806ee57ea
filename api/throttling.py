"""Rate limits per API key (core.rate_limits counts them): over the limit, `429 rate_limited`
with `Retry-After`."""

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from core.rate_limits import parse_rate, seconds_to_wait

__all__ = ["ApiKeyRateThrottle", "parse_rate"]


class ApiKeyRateThrottle(BaseThrottle):
    def __init__(self) -> None:
        self.retry_after = 1.0

    def allow_request(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if api_key is None:
            return True
        wait = seconds_to_wait(str(api_key.pk))
        if wait is None:
            return True
        self.retry_after = wait
        return False

    def wait(self) -> float:
        return self.retry_after
