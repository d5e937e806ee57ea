"""`python -m bench [--quick | --full] [--only api,deep]`: benchmark the service on this machine.

Creates the `kinetic_bench` database fresh, starts gunicorn on a free 127.0.0.1 port with
`bench.settings`, runs the chosen workloads with wrk, prints a table, rewrites
`docs/benchmarks.md` (full runs), and prints one JSON object of figures as the last line.
Gunicorn is stopped and the database dropped however the run ends.
"""

import argparse
import datetime as dt
import os
import shlex
import signal
import sys
import time
from types import FrameType

from bench.config import SETTINGS_MODULE, BenchError

DEEP_ENDPOINTS = 100_000
DEEP_ENDPOINTS_QUICK = 10_000
DEEP_ENDPOINTS_FULL = 1_000_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help=f"short runs and {DEEP_ENDPOINTS_QUICK:,} deep endpoints (a smoke test; "
        "does not rewrite docs/benchmarks.md)",
    )
    size.add_argument(
        "--full",
        action="store_true",
        help=f"{DEEP_ENDPOINTS_FULL:,} endpoints for the deep-page workload",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated workloads: api, deep, gunicorn (default: api,deep)",
    )
    parser.add_argument(
        "--keep-db", action="store_true", help="leave the kinetic_bench database for inspection"
    )
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--docs", dest="docs", action="store_true", default=None)
    docs.add_argument(
        "--no-docs",
        dest="docs",
        action="store_false",
        help="(do not) rewrite docs/benchmarks.md; by default only full-length runs do",
    )
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the context managers: cleanup runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench import wrk

    try:
        wrk_version = wrk.wrk_version()
    except wrk.WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    # Forced, not defaulted: a shell pointing at another settings module must not matter.
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    import warnings

    import django

    # WhiteNoise warns that collectstatic has not run; the bench serves no static files.
    warnings.filterwarnings("ignore", message="No directory at")
    django.setup()

    from bench import report, stack
    from bench.config import database_config
    from bench.workloads import DEFAULT, Context, registry

    workloads = registry()
    chosen = [w.strip() for w in (args.only or ",".join(DEFAULT)).split(",") if w.strip()]
    unknown = [w for w in chosen if w not in workloads]
    if unknown or not chosen:
        known = ", ".join(sorted(workloads))
        print(f"bench: unknown workload(s) {unknown}; choose from {known}", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    mode = "quick" if args.quick else "full size" if args.full else "default"
    deep_endpoints = (
        DEEP_ENDPOINTS_QUICK if args.quick else DEEP_ENDPOINTS_FULL if args.full else DEEP_ENDPOINTS
    )
    load = wrk.Load()
    warmup_s, measure_s, deep_s = (1.0, 3.0, 2.0) if args.quick else (2.0, 10.0, 5.0)
    command = shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])])
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"bench: warning: load average {load_before[0]:.2f} before starting; other "
            "processes are using the CPUs and the figures will be lower and noisier",
            file=sys.stderr,
        )
    run: report.Run | None = None
    print(f"bench: {mode} run of {', '.join(chosen)}", flush=True)
    with (
        stack.bench_database(database_config(), keep=args.keep_db),
        stack.gunicorn(stack.DEFAULT_GUNICORN) as server,
    ):
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
        )
        run = report.Run(
            command=command,
            mode=mode,
            started=started,
            machine=report.machine_info(postgres_version, wrk_version),
            setup={
                "server": f"gunicorn {stack.DEFAULT_GUNICORN.label} on 127.0.0.1 "
                f"(bench.settings, database {connection.settings_dict['NAME']})",
                "load": f"wrk -t {load.threads} -c {load.connections} --latency; "
                f"{warmup_s:.0f} s warm-up, then {measure_s:.0f} s per API workload and "
                f"{deep_s:.0f} s per deep-page URL",
                "load average before the run": " ".join(f"{x:.2f}" for x in load_before),
            },
        )
        for name in chosen:
            print(f"bench: {name}...", flush=True)
            run.sections.append(workloads[name](ctx))
        run.metrics = ctx.metrics

    run.elapsed_s = time.monotonic() - t0
    report.print_report(run)
    write_docs = args.docs if args.docs is not None else not args.quick
    if write_docs:
        print(f"wrote {report.write_docs(run)}")
    errors = sum(section.errors for section in run.sections)
    if errors:
        print(f"bench: {errors} failed requests (see the errors column)", file=sys.stderr)
    print(report.summary_line(run.metrics), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped, database dropped", file=sys.stderr)
        sys.exit(130)
