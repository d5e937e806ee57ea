"""Memory: the Celery worker's and gunicorn workers' RSS, early and after ten times the work.

A leak in a long-lived process shows as RSS that keeps growing with the work done, so each
process is measured twice at rest, after the same kind of work: the worker after 10,000
deliveries (past the stack's warm-up) and after 100,000 (`--quick`: 1,000 and 10,000), the
web workers after a wrk warm-up on GET list and after ten times as long again. Growth is
after / before - 1; the target is within +-0.10. RSS is VmRSS from /proc, summed over the
process and its children (a prefork pool's).
"""

import statistics
import time

from bench import deliveries as d
from bench import procs, seed, wrk
from bench.report import Section
from bench.workloads import Context, check

CHECKPOINT = 10_000  # deliveries before the first worker measurement
TOTAL = 100_000
PER_TRANSACTION = 100  # events published per transaction: the producer keeps ahead
WEB_ENDPOINTS = 100
MIB = 1024 * 1024


def settled_rss(pids: list[int]) -> int:
    """RSS at rest: after the last recorder thread and the sweep have had their turn."""
    time.sleep(2)
    samples = []
    for _ in range(3):
        samples.append(procs.tree_rss_bytes(pids))
        time.sleep(0.5)
    return int(statistics.median(samples))


def run(ctx: Context) -> Section:
    section = Section(key="memory", title="Memory (RSS at rest, before and after 10x the work)")
    worker_rows = _worker(ctx)
    web_rows = _web(ctx)
    header = ["process", "work done", "RSS MiB", "work done", "RSS MiB", "growth"]
    section.extra_table = (header, [worker_rows, web_rows])
    section.summary.append(
        "growth = RSS after / RSS before - 1 (target within +-0.10); the worker's figures are "
        "the worker process and its children, the web's the gunicorn workers (not the arbiter)"
    )
    return section


def _worker(ctx: Context) -> list[str]:
    scale = 10 if ctx.quick else 1
    checkpoint, total = CHECKPOINT // scale, TOTAL // scale
    stack = ctx.delivery_stack()
    pids = stack.celery().worker_pids()  # started and warmed up
    warm = settled_rss(pids)
    environment = stack.environment("memory")
    receiver, _ = stack.receiver(environment, d.ENDPOINTS_PER_EVENT, "m")
    started = time.monotonic()
    at_checkpoint = _deliver(environment, 0, checkpoint, pids)
    at_end = _deliver(environment, checkpoint, total, pids)
    seconds = time.monotonic() - started
    got = receiver.finish()
    check(at_checkpoint and at_end, "a Celery worker process is gone")
    check(got["invalid"] == 0, f"the receiver rejected {got['invalid']} signatures")
    growth = at_end / at_checkpoint - 1
    ctx.metrics.update(
        {
            "worker_rss_mib_after_warmup": round(warm / MIB, 1),
            "worker_rss_mib_checkpoint": round(at_checkpoint / MIB, 1),
            "worker_rss_mib_end": round(at_end / MIB, 1),
            "worker_rss_deliveries_checkpoint": checkpoint,
            "worker_rss_deliveries_end": total,
            "worker_rss_growth": round(growth, 4),
            "memory_deliveries_per_s": round(total / seconds, 1),
        }
    )
    return [
        f"celery worker x{len(pids)}",
        f"{checkpoint:,} deliveries",
        f"{at_checkpoint / MIB:,.1f}",
        f"{total:,}",
        f"{at_end / MIB:,.1f}",
        f"{growth:+.3f}",
    ]


def _deliver(environment: object, done: int, upto: int, pids: list[int]) -> int:
    """Publishes events until `upto` deliveries in all, waits for them; the workers' RSS then."""
    events = (upto - done) // d.ENDPOINTS_PER_EVENT
    deliveries = events * d.ENDPOINTS_PER_EVENT
    print(f"  publishing {events:,} events ({deliveries:,} deliveries)...", flush=True)
    d.publish(environment, events, per_transaction=PER_TRANSACTION)
    d.wait_recorded(environment, upto, 300 + upto / 20, poll=0.5, progress_every=30)
    rss = settled_rss(pids)
    print(f"  {upto:,} deliveries: worker RSS {rss / MIB:,.1f} MiB", flush=True)
    return rss


def _web(ctx: Context) -> list[str]:
    tenant = seed.tenant("bench-memory")
    seed.endpoints(tenant.environment, WEB_ENDPOINTS)
    url = f"{ctx.server.base_url}/v1/webhook_endpoints?limit=20"
    arbiter = ctx.server.process.pid if ctx.server.process else 0
    workers = sorted(procs.tree(arbiter)[1:])
    check(workers, "no gunicorn workers found")
    warmup_s = 1.0 if ctx.quick else 5.0
    first = wrk.run(url, seconds=warmup_s, load=ctx.load, headers=tenant.headers)
    before = settled_rss(workers)
    second = wrk.run(url, seconds=warmup_s * 10, load=ctx.load, headers=tenant.headers)
    after = settled_rss(workers)
    check(sorted(procs.tree(arbiter)[1:]) == workers, "gunicorn replaced a worker during the run")
    check(first.errors + second.errors == 0, "failed requests in the web memory run")
    total = first.requests + second.requests
    growth = after / before - 1
    ctx.metrics.update(
        {
            "web_rss_mib_after_warmup": round(before / MIB, 1),
            "web_rss_mib_end": round(after / MIB, 1),
            "web_rss_requests_warmup": first.requests,
            "web_rss_requests_end": total,
            "web_rss_growth": round(growth, 4),
        }
    )
    return [
        f"gunicorn workers x{len(workers)}",
        f"{first.requests:,} requests",
        f"{before / MIB:,.1f}",
        f"{total:,}",
        f"{after / MIB:,.1f}",
        f"{growth:+.3f}",
    ]
