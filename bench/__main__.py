"""`python -m bench [--quick | --full] [--only api,deliveries,...]`: benchmark the service.

Creates the bench database fresh, starts gunicorn on a free 127.0.0.1 port with
`bench.settings`, and, for the delivery workloads, a private redis-server, Celery worker(s)
and beat, and a receiver; runs every workload after a warm-up (the API ones with wrk), prints
a table, rewrites `docs/benchmarks.md` and its chart `docs/benchmarks.png` (full-length runs),
and prints one JSON object of figures as the last line. Everything it started is stopped and
the database dropped however the run ends.
"""

import argparse
import contextlib
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from bench.config import (
    ALL_WORKLOADS,
    DEFAULT_WORKLOADS,
    DELIVERY_WORKLOADS,
    SETTINGS_MODULE,
    BenchError,
    add_docs_flags,
    command_line,
)

if TYPE_CHECKING:
    from bench.deliveries import Broker
    from bench.report import Run
    from bench.workloads import Context

DEEP_ENDPOINTS = 100_000
DEEP_ENDPOINTS_QUICK = 10_000
DEEP_ENDPOINTS_FULL = 1_000_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="every workload at a tenth of its size, under five minutes (a smoke test; "
        f"{DEEP_ENDPOINTS_QUICK:,} deep endpoints; does not rewrite docs/benchmarks.md)",
    )
    size.add_argument(
        "--full",
        action="store_true",
        help=f"{DEEP_ENDPOINTS_FULL:,} endpoints for the deep-page workload",
    )
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated workloads among {', '.join(ALL_WORKLOADS)} "
        f"(default: all but gunicorn)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="Celery worker processes for the delivery workloads (default: one per CPU, as "
        "deployed; python -m bench.scaling compares 1, 2 and 4)",
    )
    parser.add_argument(
        "--keep-db", action="store_true", help="leave the bench database for inspection"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch folder of the delivery workloads (celery.log: the worker and "
        "beat logs, the receivers' records) and print its path",
    )
    add_docs_flags(
        parser, "rewrite docs/benchmarks.md and its chart; by default only full-length runs do"
    )
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the context managers: cleanup runs


def chosen_workloads(only: str | None) -> list[str]:
    """The workloads to run, in the order given; raises on an unknown name."""
    chosen = [w.strip() for w in (only or ",".join(DEFAULT_WORKLOADS)).split(",") if w.strip()]
    unknown = [w for w in chosen if w not in ALL_WORKLOADS]
    if unknown or not chosen:
        raise BenchError(f"unknown workload(s) {unknown}; choose from {', '.join(ALL_WORKLOADS)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench import wrk

    try:
        wrk_version = wrk.wrk_version()
    except wrk.WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    try:
        chosen = chosen_workloads(args.only)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    # Forced, not defaulted: a shell pointing at another settings module must not matter.
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    t0 = time.monotonic()
    with contextlib.ExitStack() as resources:
        broker = workdir = None
        if any(name in DELIVERY_WORKLOADS for name in chosen):
            from bench.deliveries import broker_environment

            workdir = Path(tempfile.mkdtemp(prefix="kinetic-bench-"))
            if args.keep:
                resources.callback(print, f"bench: kept {workdir}", file=sys.stderr, flush=True)
            else:
                resources.callback(shutil.rmtree, workdir, ignore_errors=True)
            # Before django.setup(): bench.settings reads the broker's URL when it loads.
            broker = resources.enter_context(broker_environment(workdir))
        command = command_line("bench", argv)
        run = _run(args, chosen, command, wrk_version, resources, broker, workdir)
    run.elapsed_s = time.monotonic() - t0
    run.metrics["elapsed_s_total"] = round(run.elapsed_s, 1)
    return _finish(args, run)


def _run(
    args: argparse.Namespace,
    chosen: list[str],
    command: str,
    wrk_version: str,
    resources: contextlib.ExitStack,
    broker: "Broker | None",
    workdir: Path | None,
) -> "Run":
    """Starts the servers (on `resources`, which stops them) and runs each workload."""
    import warnings

    import django

    from bench import wrk

    # WhiteNoise warns that collectstatic has not run; the bench serves no static files.
    warnings.filterwarnings("ignore", message="No directory at")
    django.setup()

    from bench import report, stack
    from bench.config import database_config
    from bench.workloads import Context, registry

    workloads = registry()
    mode = "quick" if args.quick else "full size" if args.full else "default"
    deep_endpoints = (
        DEEP_ENDPOINTS_QUICK if args.quick else DEEP_ENDPOINTS_FULL if args.full else DEEP_ENDPOINTS
    )
    load = wrk.Load()
    warmup_s, measure_s, deep_s = (1.0, 3.0, 2.0) if args.quick else (2.0, 10.0, 5.0)
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"bench: warning: load average {load_before[0]:.2f} before starting; other "
            "processes are using the CPUs and the figures will be lower and noisier",
            file=sys.stderr,
        )
    print(f"bench: {mode} run of {', '.join(chosen)}", flush=True)
    resources.enter_context(stack.bench_database(database_config(), keep=args.keep_db))
    server = resources.enter_context(stack.gunicorn(stack.DEFAULT_GUNICORN))
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres_version = cursor.fetchone()[0]
    ctx = Context(
        server=server,
        load=load,
        warmup_s=warmup_s,
        measure_s=measure_s,
        deep_measure_s=deep_s,
        deep_endpoints=deep_endpoints,
        quiet_budget_s=15.0 if args.quick else 60.0,
        quick=args.quick,
        broker=broker,
        workdir=workdir,
        workers=args.workers,
    )
    resources.callback(ctx.close)  # before the database is dropped (last in, first out)
    run = report.Run(
        command=command,
        mode=mode,
        started=started,
        machine=report.machine_info(postgres_version, wrk_version),
        setup=_setup(ctx, connection.settings_dict["NAME"], load_before),
    )
    for name in chosen:
        print(f"bench: {name}...", flush=True)
        began = time.monotonic()
        run.sections.append(workloads[name](ctx))
        seconds = time.monotonic() - began
        ctx.metrics[f"elapsed_s_{name}"] = round(seconds, 1)
        print(f"bench: {name} took {seconds:.0f} s", flush=True)
    run.metrics = ctx.metrics
    return run


def _setup(ctx: "Context", database: str, load_before: tuple[float, ...]) -> dict[str, str]:
    from bench import stack

    setup = {
        "server": f"gunicorn {stack.DEFAULT_GUNICORN.label} on 127.0.0.1 "
        f"(bench.settings, database {database})",
        "load": f"wrk -t {ctx.load.threads} -c {ctx.load.connections} --latency; "
        f"{ctx.warmup_s:.0f} s warm-up, then {ctx.measure_s:.0f} s per API workload and "
        f"{ctx.deep_measure_s:.0f} s per deep-page URL",
    }
    if ctx.broker is not None:
        from django.conf import settings

        setup["deliveries"] = (
            f"{ctx.workers} Celery worker process(es) (--pool {settings.CELERY_WORKER_POOL} "
            f"--concurrency {settings.CELERY_WORKER_CONCURRENCY}, "
            f"{settings.WEBHOOKS_SEND_THREADS} send threads each) and beat, a private "
            "redis-server, the receiver bench/receiver.py; 200 deliveries of warm-up first"
        )
    setup["load average before the run"] = " ".join(f"{x:.2f}" for x in load_before)
    return setup


def _finish(args: argparse.Namespace, run: "Run") -> int:
    """The table, the docs and chart (full-length runs), and the JSON line last."""
    from bench import report

    metrics = run.metrics
    ours, peer = metrics.get("deliveries_per_s"), metrics.get("peer_per_s")
    if isinstance(ours, int | float) and isinstance(peer, int | float) and peer > 0:
        metrics["peer_ratio"] = round(ours / peer, 3)
    report.print_report(run)
    write_docs = args.docs if args.docs is not None else not args.quick
    if write_docs:
        chart = _chart(run)
        print(f"wrote {report.write_docs(run, chart=chart)}" + (f" and {chart}" if chart else ""))
    errors = sum(section.errors for section in run.sections)
    if errors:
        print(f"bench: {errors} failed requests (see the errors column)", file=sys.stderr)
    print(report.summary_line(metrics), flush=True)
    return 1 if errors else 0


def _chart(run: "Run") -> Path | None:
    from bench.chart import write_chart

    title = f"Kinetic bench, {run.mode} run, {run.started:%Y-%m-%d %H:%M} UTC"
    if run.noise_warning:
        title += " (noisy: other processes used the CPUs; see docs/benchmarks.md)"
    try:
        return write_chart(run.metrics, title)
    except ImportError as exc:  # matplotlib is in the dev pins
        print(f"bench: no chart ({exc}); pip install -r requirements/dev.txt", file=sys.stderr)
        return None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped, database dropped", file=sys.stderr)
        sys.exit(130)
