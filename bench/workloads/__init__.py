"""Workloads: each takes the run's context and returns a report section plus its metrics.

A workload is a function `run(ctx) -> Section` listed by `registry()`; it writes its figures
into `ctx.metrics` under its own prefix. The delivery workloads share one Celery stack
(`ctx.delivery_stack()`), started on first use with a warm-up and stopped at the end.
"""

import json
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench import wrk
from bench.config import BenchError
from bench.cpu import CpuMeter, CpuShare, wait_for_quiet
from bench.deliveries import Broker, DeliveryStack
from bench.report import Measurement, Section
from bench.stack import Gunicorn


@dataclass
class Context:
    server: Gunicorn
    load: wrk.Load
    warmup_s: float
    measure_s: float
    deep_measure_s: float
    deep_endpoints: int
    # Seconds the whole run may spend waiting for other processes to quiet down, and on
    # repeating noisy measurements; once spent, measurements are taken as they come.
    quiet_budget_s: float = 60.0
    quick: bool = False
    # The delivery workloads': the private broker (started before Django read its settings),
    # a scratch folder, Celery worker processes, and the stack once started.
    broker: Broker | None = None
    workdir: Path | None = None
    workers: int = 1
    deliveries: DeliveryStack | None = None
    metrics: dict[str, float | int | str | None] = field(default_factory=dict)

    def close(self) -> None:
        """Stops the delivery stack's processes, if it was started."""
        stack, self.deliveries = self.deliveries, None
        if stack is not None:
            stack.close()

    def delivery_stack(self) -> DeliveryStack:
        """The Celery stack (started by its first use); main() closes it at the end."""
        if self.deliveries is None:
            if self.broker is None or self.workdir is None:
                raise BenchError("the delivery workloads need the private broker from main()")
            self.deliveries = DeliveryStack(self.workdir, self.broker, self.workers)
        return self.deliveries


def http(
    url: str,
    *,
    headers: dict[str, str],
    body: str | None = None,
    expect: int = 200,
) -> Any:
    """One request outside the load run, to check the workload answers what it should."""
    data = body.encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=dict(headers))  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    if status != expect:
        raise BenchError(f"{url} answered {status}, expected {expect}: {payload[:500]!r}")
    return json.loads(payload)


# A measured run during which other processes used more of the machine than this is repeated
# once, and the quieter of the two is kept (the report shows the share for every figure).
NOISY_OTHERS_PERCENT = 15.0
QUIET_WAIT_S = 20.0  # before each measured run, wait this long at most for a quiet machine


def _bench_backends() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return [row[0] for row in cursor.fetchall()]


def measure(
    ctx: Context,
    label: str,
    url: str,
    *,
    headers: dict[str, str],
    body: str | None = None,
    seconds: float | None = None,
    sql_per_request: int | None = None,
    server: Gunicorn | None = None,
) -> Measurement:
    """A discarded warm-up run of wrk, then the measured one (twice if others were busy)."""
    server = server or ctx.server
    wrk.run(url, seconds=ctx.warmup_s, load=ctx.load, headers=headers, body=body)
    check(server.process is not None, "gunicorn is not running")
    best: tuple[wrk.WrkResult, CpuShare] | None = None
    measure_s = seconds or ctx.measure_s
    for attempt in range(2):
        if attempt and ctx.quiet_budget_s < measure_s:
            break  # no time left to repeat it
        started = time.monotonic()
        wait_for_quiet(NOISY_OTHERS_PERCENT, min(QUIET_WAIT_S, ctx.quiet_budget_s))
        meter = CpuMeter(server.process.pid, _bench_backends())  # type: ignore[union-attr]
        meter.start()
        result = wrk.run(url, seconds=measure_s, load=ctx.load, headers=headers, body=body)
        share = meter.stop()
        if attempt:
            ctx.quiet_budget_s -= time.monotonic() - started
        else:
            ctx.quiet_budget_s -= max(0.0, time.monotonic() - started - measure_s)
        if best is None or share.others < best[1].others:
            best = (result, share)
        if share.others_percent <= NOISY_OTHERS_PERCENT:
            break
        print(
            f"  {label}: other processes used {share.others_percent:.0f}% of the CPUs",
            flush=True,
        )
    assert best is not None
    result, share = best
    print(
        f"  {label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, errors {result.errors}, "
        f"other processes {share.others_percent:.0f}% CPU",
        flush=True,
    )
    return Measurement(
        label=label,
        result=result,
        sql_per_request=sql_per_request,
        others_cpu_percent=share.others_percent,
    )


def measure_interleaved(
    ctx: Context,
    requests: dict[str, tuple[str, str, dict[str, str]]],
    *,
    rounds: int,
    seconds: float | None = None,
    sql_per_request: dict[str, int] | None = None,
) -> dict[str, Measurement]:
    """GET workloads (name: label, URL, headers) measured in turn, one short wrk run each per
    round, for `seconds` each in all (`ctx.measure_s` by default).

    Their ratios are what the targets compare, and this machine's speed drifts by tens of
    percent from one minute to the next: measured one after the other, ten seconds each, a
    workload and its baseline could see different machines. In turns, the drift weighs on all
    alike. Each workload's req/s is its requests over its seconds in all rounds; its latency
    percentiles are the median of its rounds'."""
    server = ctx.server
    check(server.process is not None, "gunicorn is not running")
    for _, url, headers in requests.values():
        wrk.run(url, seconds=ctx.warmup_s, load=ctx.load, headers=headers)
    started = time.monotonic()
    wait_for_quiet(NOISY_OTHERS_PERCENT, min(QUIET_WAIT_S, ctx.quiet_budget_s))
    ctx.quiet_budget_s -= time.monotonic() - started
    seconds = max(1.0, (seconds or ctx.measure_s) / rounds)
    runs: dict[str, list[wrk.WrkResult]] = {name: [] for name in requests}
    others: dict[str, list[float]] = {name: [] for name in requests}
    for _ in range(rounds):
        for name, (_, url, headers) in requests.items():
            meter = CpuMeter(server.process.pid, _bench_backends())  # type: ignore[union-attr]
            meter.start()
            runs[name].append(wrk.run(url, seconds=seconds, load=ctx.load, headers=headers))
            others[name].append(meter.stop().others_percent)
    measurements = {}
    for name, (label, _, _) in requests.items():
        result = _combined(runs[name])
        share = sum(others[name]) / len(others[name])
        per_round = ", ".join(f"{r.rps:,.0f}" for r in runs[name])
        print(
            f"  {label}: {result.rps:,.0f} req/s (rounds: {per_round}), p50 {result.p50_ms:.2f} "
            f"ms, p99 {result.p99_ms:.2f} ms, errors {result.errors}, "
            f"other processes {share:.0f}% CPU",
            flush=True,
        )
        measurements[name] = Measurement(
            label=label,
            result=result,
            sql_per_request=(sql_per_request or {}).get(name),
            others_cpu_percent=share,
        )
    return measurements


def _combined(runs: list[wrk.WrkResult]) -> wrk.WrkResult:
    requests, seconds = sum(r.requests for r in runs), sum(r.seconds for r in runs)
    return wrk.WrkResult(
        rps=requests / seconds,
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p75_ms=statistics.median(r.p75_ms for r in runs),
        p90_ms=statistics.median(r.p90_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        requests=requests,
        seconds=seconds,
        errors=sum(r.errors for r in runs),
        raw="\n".join(r.raw for r in runs),
    )


def count_queries(
    path: str, headers: dict[str, str], body: str | None = None, expect: int = 200
) -> tuple[int, list[str]]:
    """SQL statements one request runs, through the whole stack, in the bench process."""
    client = Client()
    method = client.post if body is not None else client.get
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs.update(data=body, content_type="application/json")
    method(path, **kwargs)  # warm: the key's once-a-minute last_used_at write happens here
    with CaptureQueriesContext(connection) as captured:
        response = method(path, **kwargs)
    if response.status_code != expect:
        raise BenchError(f"{path} answered {response.status_code} in-process, expected {expect}")
    statements = [q["sql"] for q in captured.captured_queries]
    return len(statements), statements


def check(condition: object, message: str) -> None:
    if not condition:
        raise BenchError(message)


def registry() -> dict[str, Callable[[Context], Section]]:
    """Every workload by name (imported here: they import this module's helpers)."""
    from bench.workloads import api, deep, deliveries, gunicorn, memory, peer

    return {
        "api": api.run,
        "deep": deep.run,
        "deliveries": deliveries.run_throughput,
        "latency": deliveries.run_latency,
        "fanout": deliveries.run_fanout,
        "slow": deliveries.run_dead_endpoint,
        "memory": memory.run,
        "peer": peer.run,
        "gunicorn": gunicorn.run,
    }
