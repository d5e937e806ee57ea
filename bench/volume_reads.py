"""The reads of `python -m bench.volume`, the two databases side by side: a gunicorn on each,
and every figure's requests alternated between them (A B, then B A), so that the machine's
drift from one minute to the next (up to a third here) falls on both alike. Measured one
database after the other, minutes apart, the same page's median moved by 20-50% between
rounds of the same database.

Each database's round prepared what its reads need (volume_measure.prepare_reads): the rows
they ask for, an API key that may read them and a console session of a superuser. No Django
here: this runs in the parent process, which has no database of its own."""

import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import requests

from bench import stack
from bench.volume_config import PAGE_LIMIT, REQUESTS, WARMUP_REQUESTS

SLOW_CALL_S = 1.0
SLOW_REPETITIONS = 3
ADMIN = "/admin/deliveries"


def api_paths(info: dict[str, Any]) -> dict[str, str]:
    endpoint = f"/v1/webhook_endpoints/{info['huge_endpoint']}/deliveries?limit={PAGE_LIMIT}"
    return {
        "endpoint_page1_ms": endpoint,
        "endpoint_deep_page_ms": f"{endpoint}&starting_after={info['deep_cursor']}",
        "endpoint_failed_page1_ms": f"{endpoint}&status=failed",
        "endpoint_pending_page1_ms": f"{endpoint}&status=pending",
        "endpoint_cancelled_page1_ms": f"{endpoint}&status=cancelled",
        "event_10k_retrieve_ms": f"/v1/events/{info['fan_event']}",
        "events_page1_ms": f"/v1/events?limit={PAGE_LIMIT}",
    }


def admin_paths(info: dict[str, Any]) -> dict[str, str]:
    return {
        "admin_deliveries_ms": f"{ADMIN}/delivery/",
        "admin_deliveries_failed_ms": f"{ADMIN}/delivery/?status__exact=failed",
        "admin_deliveries_pending_ms": f"{ADMIN}/delivery/?status__exact=pending",
        "admin_deliveries_cancelled_ms": f"{ADMIN}/delivery/?status__exact=cancelled",
        "admin_deliveries_search_event_ms": f"{ADMIN}/delivery/?q={info['fan_event']}",
        "admin_attempts_ms": f"{ADMIN}/deliveryattempt/",
        "admin_events_ms": f"{ADMIN}/event/",
    }


@dataclass
class Reader:
    """One database's gunicorn, with the credentials its round prepared."""

    base_url: str
    prepared: dict[str, Any]
    session: requests.Session
    paths: dict[str, str] = field(init=False)  # figure: path

    def __post_init__(self) -> None:
        info = self.prepared["info"]
        self.paths = api_paths(info) | admin_paths(info)

    def get_ms(self, figure: str) -> float:
        path = self.paths[figure]
        if figure.startswith("admin_"):
            headers = {"Cookie": f"{self.prepared['session_cookie']}={self.prepared['session']}"}
        else:
            headers = self.prepared["api_headers"]
        started = time.perf_counter()
        response = self.session.get(f"{self.base_url}{path}", headers=headers, timeout=60)
        elapsed = (time.perf_counter() - started) * 1000
        # The admin answers a lost session with a redirect to its login page: not a figure.
        if response.status_code != 200 or response.history:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
        return elapsed


def paired(
    prepared: dict[str, dict[str, Any]], env: dict[str, dict[str, str]]
) -> dict[str, dict[str, float]]:
    """Each database's median of every read figure, the requests alternated between the
    databases: `prepared` and `env` (the gunicorn's environment) by database name."""
    names = list(prepared)
    figures: dict[str, dict[str, float]] = {name: {} for name in names}
    with ExitStack() as servers:
        readers = {}
        for name in names:
            server = servers.enter_context(stack.gunicorn(stack.DEFAULT_GUNICORN, env[name]))
            session = servers.enter_context(requests.Session())  # closed with its server
            readers[name] = Reader(server.base_url, prepared[name], session)
        for figure in readers[names[0]].paths:
            first = [readers[name].get_ms(figure) for name in names]  # warm-up, untimed
            for _ in range(WARMUP_REQUESTS - 1):
                for name in names:
                    readers[name].get_ms(figure)
            # A scan takes seconds a call: timed only a few times.
            slow = max(first) > SLOW_CALL_S * 1000
            times: dict[str, list[float]] = {name: [] for name in names}
            for i in range(SLOW_REPETITIONS if slow else REQUESTS):
                for name in names if i % 2 == 0 else names[::-1]:
                    times[name].append(readers[name].get_ms(figure))
            for name in names:
                figures[name][figure] = statistics.median(times[name])
    return figures
