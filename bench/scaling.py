"""`python -m bench.scaling [--quick] [--workers 1,2,4]`: throughput by Celery worker processes.

Runs the delivery throughput workload of `bench.deliveries` (1,000 events x 10 endpoints;
`--quick`: 100 x 10, published by 4 producer threads) with 1, 2 and 4 `celery worker`
processes (each with the settings' pool and concurrency: threads, 16), on one fresh bench
database and private broker, restarting and warming Celery up for each count. During each run
it samples CPU time per group of processes from /proc (celery workers, celery beat, the bench
database's PostgreSQL backends, PostgreSQL's own processes, redis-server, the receiver, this
process as the producer, and everything else on the machine), and reads PostgreSQL's
counters for the bench database, so the figures say what saturates first. Prints a table and
writes docs/scaling.json (the prose, docs/scaling.md, is written from it).
"""

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import deliveries as d
from bench import procs
from bench.config import REPO_ROOT, SETTINGS_MODULE, BenchError

JSON_PATH = REPO_ROOT / "docs" / "scaling.json"
# A process this busy is at its limit: one Python process cannot use more than about one
# core (the GIL), nor a PostgreSQL backend or redis-server (one thread each).
SATURATED_CORES = 0.85
MACHINE_SATURATED = 0.90  # of every CPU
PRODUCER_MARGIN = 1.2  # published / drained below this: the producers set the pace

_PG_COUNTERS = ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 events x 10 per run")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts (1,2,4)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per count (median kept)")
    parser.add_argument(
        "--out", type=Path, default=JSON_PATH, help="where to write the JSON figures"
    )
    return parser.parse_args(argv)


def postgres_counters() -> dict[str, int]:
    """The bench database's cumulative counters, and the server's WAL position (bytes)."""
    from django.db import connection

    columns = ", ".join(_PG_COUNTERS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns}, pg_current_wal_lsn() - '0/0'::pg_lsn "  # noqa: S608  constants
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        row = cursor.fetchone()
    return {**dict(zip(_PG_COUNTERS, row[:-1], strict=True)), "wal_bytes": int(row[-1])}


def one_run(stack: d.DeliveryStack, events: int) -> tuple[dict[str, Any], d.Throughput]:
    """One throughput run on a warm stack: deliveries/s, CPU by group, PostgreSQL's work."""
    stack.celery()
    before = postgres_counters()
    run = d.measure_throughput(stack, events)
    time.sleep(1.5)  # backends report their counters at most once a second
    after = postgres_counters()
    work = {key: after[key] - before[key] for key in after}
    figures = {
        "deliveries": run.deliveries,
        "seconds": round(run.seconds, 2),
        "deliveries_per_s": round(run.per_s, 1),
        "publish_per_s": round(run.publish_per_s, 1),
        "invalid_signatures": run.invalid_signatures,
        "cpu_cores": run.cpu.as_dict(),
        "cpu_count": run.cpu.cpus,
        "postgres": {
            **{f"{k}_per_delivery": round(v / run.deliveries, 2) for k, v in work.items()},
            "commits_per_s": round(work["xact_commit"] / run.seconds, 1),
            "note": "counters of the bench database (approximate: reported up to ~1 s late); "
            "wal_bytes is the server's, others' writes included",
        },
        "saturated": [*saturation(run.cpu), *filter(None, [producer_bound(run)])],
    }
    return figures, run


def saturation(cpu: procs.CpuUsage) -> list[str]:
    """What was at its limit during the run, busiest first."""
    found = []
    if cpu.machine >= MACHINE_SATURATED * cpu.cpus:
        found.append(
            f"the machine's CPUs ({cpu.machine:.2f} of {cpu.cpus} busy, "
            f"{cpu.others:.2f} by other processes)"
        )
    for name, busiest in sorted(cpu.busiest.items(), key=lambda item: -item[1]):
        if busiest >= SATURATED_CORES:
            found.append(f"one {name.replace('_', ' ')} process at {busiest:.2f} cores")
    return found


def producer_bound(run: d.Throughput) -> str:
    """Said when the producers published barely faster than the workers drained: then the
    figure is theirs, not the service's."""
    published = run.publish_per_s * d.ENDPOINTS_PER_EVENT
    if published < PRODUCER_MARGIN * run.per_s:
        return f"the producers ({published:,.0f} deliveries/s published)"
    return ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    if not counts or min(counts) < 1 or args.repeat < 1:
        print("bench.scaling: --workers takes counts >= 1, --repeat >= 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, d._stop_on_sigterm)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "bench.scaling", *given])
    sizes = d.Sizes.of(args.quick)
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="kinetic-bench-scaling-"))
    try:
        with d.broker_environment(workdir) as broker:
            os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
            import django

            django.setup()
            from bench import stack as servers
            from bench.config import database_config

            with servers.bench_database(database_config()):
                runs, ceiling = _measure(workdir, broker, counts, sizes.events, args.repeat)
                context = _context(sizes.events)
    except BenchError as exc:
        print(f"bench.scaling: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures = {
        "command": command,
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "load_average_before": [round(x, 2) for x in load_before],
        **context,
        "bare_loop_2proc_per_s": round(ceiling, 1),
        "runs": runs,
        "summary": _summary(runs, counts),
    }
    print_table(figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.out}")
    print(json.dumps(figures["summary"]))
    return 0


def _measure(
    workdir: Path, broker: d.Broker, counts: list[int], events: int, repeat: int
) -> tuple[list[dict[str, Any]], float]:
    runs: list[dict[str, Any]] = []
    ceiling = 0.0
    for workers in counts:
        with d.delivery_stack(workdir, broker, workers) as stack:
            print(f"bench.scaling: {workers} worker process(es), warming up...", flush=True)
            for attempt in range(repeat):
                figures, run = one_run(stack, events)
                result = {"workers": workers, "attempt": attempt + 1, **figures}
                runs.append(result)
                print(
                    f"  {result['deliveries_per_s']:,.0f} deliveries/s; saturated: "
                    f"{'; '.join(result['saturated']) or 'nothing'}",
                    flush=True,
                )
            if workers == counts[-1]:  # the same bodies as the last run, for reference
                print("bench.scaling: the bare loop (2 processes)...", flush=True)
                _, ceiling = d.measure_ceiling(stack, run, events)
    return runs, ceiling


def _context(events: int) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    from bench import report

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    machine = report.machine_info(postgres, "")
    machine.pop("wrk", None)
    return {
        "machine": machine,
        "workload": f"{events:,} events x {d.ENDPOINTS_PER_EVENT} endpoints, "
        f"{d.PRODUCERS} producer threads, "
        "from the first publish until every delivery is recorded as succeeded",
        "worker": {
            "pool": settings.CELERY_WORKER_POOL,
            "concurrency": settings.CELERY_WORKER_CONCURRENCY,
            "send_threads": settings.WEBHOOKS_SEND_THREADS,
            "batch_size": settings.WEBHOOKS_DELIVERY_BATCH_SIZE,
            "prefetch_multiplier": settings.CELERY_WORKER_PREFETCH_MULTIPLIER,
        },
    }


def _summary(runs: list[dict[str, Any]], counts: list[int]) -> dict[str, Any]:
    """Median deliveries/s per worker count, and the speed-up over the first count."""
    medians = {
        n: statistics.median(r["deliveries_per_s"] for r in runs if r["workers"] == n)
        for n in counts
    }
    base = medians[counts[0]] or 1.0
    return {
        "deliveries_per_s": {str(n): round(v, 1) for n, v in medians.items()},
        f"speedup_over_{counts[0]}": {str(n): round(v / base, 2) for n, v in medians.items()},
    }


GROUPS = (
    ("celery_workers", "workers"),
    ("postgres_backends", "pg backends"),
    ("postgres_server", "pg server"),
    ("redis", "redis"),
    ("receiver", "receiver"),
    ("bench_process", "producer"),
    ("celery_beat", "beat"),
    ("others", "others"),
)


def print_table(figures: dict[str, Any]) -> None:
    header = ["workers", "deliv/s", "machine", *(label for _, label in GROUPS), "busiest worker"]
    rows = []
    for run in figures["runs"]:
        cpu = run["cpu_cores"]
        rows.append(
            [
                str(run["workers"]),
                f"{run['deliveries_per_s']:,.0f}",
                f"{cpu['machine_cores']:.2f}",
                *(f"{cpu[f'{key}_cores']:.2f}" for key, _ in GROUPS),
                f"{cpu['celery_workers_busiest_process_cores']:.2f}",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    print(f"Delivery throughput by worker processes ({figures['workload']})")
    print("CPU used, in cores (1.00 = one CPU the whole run):")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"bare requests loop, 2 processes: {figures['bare_loop_2proc_per_s']:,.0f}/s")
    for run in figures["runs"]:
        pg = run["postgres"]
        print(
            f"{run['workers']} worker(s): saturated: {'; '.join(run['saturated']) or 'nothing'}; "
            f"PostgreSQL {pg['commits_per_s']:,.0f} commits/s, "
            f"{pg['xact_commit_per_delivery']:.2f} commits, "
            f"{pg['tup_inserted_per_delivery']:.2f} rows inserted and "
            f"{pg['tup_updated_per_delivery']:.2f} updated per delivery"
        )


if __name__ == "__main__":
    raise SystemExit(main())
