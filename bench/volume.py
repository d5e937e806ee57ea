"""`python -m bench.volume [--scale S] [--rounds N] [--keep] [--fill-only | --measure-only |
--week]`: the service with a month of history, against the same service nearly empty.

Fills two bench databases with bench.volume_fill (PostgreSQL makes the rows): `--database`
at `--scale` (1 = 2 M events, 20 M deliveries, ~29 M attempts over 30 days) and its `_empty`
twin at EMPTY_SCALE (the same shapes, ~60,000 deliveries). Then, in `--rounds` rounds that
alternate the two databases, each in a process of its own with its own private redis, Celery
worker(s) and beat, it measures: delivery throughput and publish-to-receipt p99 end to end,
the sweep's and the claim's statements (the product's own functions, timed, and EXPLAIN
ANALYZE of the SQL they ran). Then the round's reads, a gunicorn on each database and each
figure's requests alternated between the two (bench.volume_reads): an endpoint's deliveries
page 1 and a deep page through the HTTP API, an event with 10,000 deliveries, and the admin's
lists. Once, on the filled database, one retention pass over its oldest day (rolled back, so
the database stays as filled). Prints a table with the medians and their ratio, the tables'
and indexes' sizes, rewrites `docs/volume.md` and `docs/volume.json` (full-size runs; `--docs`
forces it), and prints one JSON object last. The databases are dropped at the end unless
`--keep` (`--measure-only` measures databases a `--keep` run left, and keeps them).

`--week` is a step of its own (bench.volume_week): it fills `--database` (default
WEEK_DATABASE) at `--scale` (default WEEK_SCALE), simulates a week of writes plus retention on
it, and writes its figures under the "week" key of `docs/volume.json`, keeping the rest, then
renders `docs/volume.md` again from that JSON; a full run keeps the "week" key the same way.
"""

import argparse
import datetime as dt
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from bench import volume_reads
from bench.config import REPO_ROOT, SETTINGS_MODULE, BenchError, check_database_name
from bench.volume_config import TABLE_SIZE_SQL

DATABASE = "kinetic_bench_volume"
WEEK_DATABASE = "kinetic_bench_week"
WEEK_SCALE = 0.05  # 100,000 events, 1 M deliveries over the month: the week in minutes
EMPTY_SCALE = 0.0025  # 5,000 events over the month (a full page of the huge endpoint's failed
# deliveries), and the 10,000-delivery event
ROUNDS = 3
DOCS = REPO_ROOT / "docs" / "volume.md"
DOCS_JSON = REPO_ROOT / "docs" / "volume.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.volume", description=__doc__)
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="size of the filled database (1: 20 M deliveries; 0.05 for a quick run); "
        f"default 1, or {WEEK_SCALE} with --week",
    )
    parser.add_argument(
        "--database",
        default=None,
        help=f"the filled database's name (kinetic_bench*; default {DATABASE}, or "
        f"{WEEK_DATABASE} with --week); the nearly empty one is named after it, with _empty",
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per database")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true", help="keep both databases")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fill-only", action="store_true", help="fill both databases, keep them")
    mode.add_argument(
        "--measure-only", action="store_true", help="measure the databases a --keep run left"
    )
    mode.add_argument(
        "--week",
        action="store_true",
        help="a simulated week of writes plus retention on a database of its own (no _empty)",
    )
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--docs", dest="docs", action="store_true", default=None)
    docs.add_argument("--no-docs", dest="docs", action="store_false")
    # One database's part of the run, in a process of its own (Django is set up for one).
    parser.add_argument(
        "--child", choices=("fill", "measure", "retention", "week"), help=argparse.SUPPRESS
    )
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--explain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--without-live-set", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale is None:
        args.scale = WEEK_SCALE if args.week else 1.0
    if args.database is None:
        args.database = WEEK_DATABASE if args.week else DATABASE
    return args


# --- the parent: databases, rounds, report ---------------------------------------------------


def database_url(name: str) -> str:
    """The bench's database URL (BENCH_DATABASE_URL or its default) naming `name` instead."""
    from bench.config import database_url as bench_url

    check_database_name(name)
    return urlsplit(bench_url())._replace(path=f"/{name}").geturl()


def child(mode: str, database: str, args: argparse.Namespace, **extra: str) -> dict[str, Any]:
    """Runs `mode` for `database` in a process of its own; what it wrote."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = Path(out.name)
    argv = [sys.executable, "-m", "bench.volume", "--child", mode, "--out", str(path)]
    argv += ["--scale", str(extra.get("scale", args.scale)), "--workers", str(args.workers)]
    if extra.get("explain"):
        argv.append("--explain")
    if mode == "fill" and args.week:  # the week makes its own survivors (bench.volume_week)
        argv.append("--without-live-set")
    env = {**os.environ, "BENCH_DATABASE_URL": database_url(database)}
    try:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env)
        try:
            code = process.wait()
        except BaseException:
            process.terminate()  # it unwinds: its servers stop
            process.wait(60)
            raise
        if code != 0:
            raise BenchError(f"{mode} on {database} exited with {code}")
        return dict(json.loads(path.read_text()))
    finally:
        path.unlink(missing_ok=True)


def connect(dbname: str) -> psycopg.Connection:
    from bench.config import database_config
    from bench.stack import connect

    return connect(database_config(), dbname)


def drop(name: str) -> None:
    check_database_name(name)
    with connect("postgres") as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def exists(name: str) -> bool:
    with connect("postgres") as conn:
        return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone())


# A table's indexes, each with its partitions' indexes (a plain table has no partition tree).
_INDEX_SIZES = """
SELECT i.indexrelid::regclass::text, (
    SELECT sum(pg_relation_size(relid)) FROM (SELECT i.indexrelid AS relid
    UNION SELECT relid FROM pg_partition_tree(i.indexrelid)) tree
)
FROM pg_index i WHERE i.indrelid = %s::regclass ORDER BY 2 DESC
"""


def sizes(name: str) -> dict[str, Any]:
    """Bytes per table (with its indexes and TOAST), its indexes together, and each index;
    partitions counted into their parent."""
    tables = ("deliveries_event", "deliveries_delivery", "deliveries_deliveryattempt",
              "webhooks_webhookendpoint")  # fmt: skip
    result: dict[str, Any] = {}
    with connect(name) as conn:
        for table in tables:
            row = conn.execute(TABLE_SIZE_SQL, [table, table]).fetchone()
            total, heap, indexes = row if row else (0, 0, 0)
            per_index = conn.execute(_INDEX_SIZES, [table]).fetchall()
            result[table] = {
                "total": int(total or 0),
                "heap": int(heap or 0),
                "indexes": int(indexes or 0),
                "index": {index: int(size or 0) for index, size in per_index},
            }
    return result


def median_figures(rounds: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in rounds[0] if isinstance(rounds[0][k], int | float)]
    return {k: statistics.median(r[k] for r in rounds if k in r) for k in keys}


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    filled_db, empty_db = args.database, f"{args.database}_empty"
    started = dt.datetime.now(dt.UTC)
    uptime_before = _uptime()
    fills: dict[str, Any] = {}
    if not args.measure_only:
        for name, scale in ((empty_db, EMPTY_SCALE), (filled_db, args.scale)):
            print(f"bench.volume: filling {name} (scale {scale})", flush=True)
            fills[name] = child("fill", name, args, scale=str(scale))
    elif not (exists(filled_db) and exists(empty_db)):
        raise BenchError(f"--measure-only needs {filled_db} and {empty_db} (run with --keep)")
    if args.fill_only:
        return {"fills": fills}
    rounds: dict[str, list[dict[str, Any]]] = {empty_db: [], filled_db: []}
    for i in range(args.rounds):
        order = (empty_db, filled_db) if i % 2 == 0 else (filled_db, empty_db)
        for name in order:
            print(f"bench.volume: round {i + 1} of {args.rounds} on {name}", flush=True)
            last = i == args.rounds - 1
            rounds[name].append(child("measure", name, args, explain="1" if last else ""))
        print(f"bench.volume: round {i + 1} of {args.rounds}, reads side by side", flush=True)
        reads = volume_reads.paired(
            {name: rounds[name][-1]["reads"] for name in order},
            {name: {"BENCH_DATABASE_URL": database_url(name)} for name in order},
        )
        for name in order:
            rounds[name][-1]["figures"] |= reads[name]
    print("bench.volume: one retention pass on the filled database's oldest day", flush=True)
    retention = child("retention", filled_db, args)
    return {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "uptime_before": uptime_before,
        "uptime_after": _uptime(),
        "fills": fills,
        "empty": median_figures([r["figures"] for r in rounds[empty_db]]),
        "filled": median_figures([r["figures"] for r in rounds[filled_db]]),
        "rounds": {name: [r["figures"] for r in rs] for name, rs in rounds.items()},
        "filled_info": rounds[filled_db][-1]["info"],
        "empty_info": rounds[empty_db][-1]["info"],
        "plans": {
            "filled": rounds[filled_db][-1].get("plans", {}),
            "empty": rounds[empty_db][-1].get("plans", {}),
        },
        "retention": retention,
        "sizes": {"filled": sizes(filled_db), "empty": sizes(empty_db)},
        "machine": rounds[filled_db][-1]["machine"],
    }


def run_week(args: argparse.Namespace, command: str) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    uptime_before = _uptime()
    print(f"bench.volume: filling {args.database} (scale {args.scale})", flush=True)
    fill = child("fill", args.database, args)
    print(f"bench.volume: a simulated week on {args.database}", flush=True)
    week = child("week", args.database, args)
    return {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "uptime_before": uptime_before,
        "uptime_after": _uptime(),
        "fill_seconds": sum(fill["fill_seconds"].values()),
        **week,
    }


def write_docs(result: dict[str, Any]) -> None:
    """docs/volume.json with `result`'s keys, then docs/volume.md rendered from that JSON. A
    --week run (`result` is {"week": ...}) keeps everything else there; a full run keeps the
    "week" key."""
    from bench import volume_report

    previous = json.loads(DOCS_JSON.read_text()) if DOCS_JSON.exists() else {}
    kept = previous if "week" in result else {k: v for k, v in previous.items() if k == "week"}
    data = kept | result
    DOCS_JSON.write_text(json.dumps(data, indent=1, default=str) + "\n")
    DOCS.write_text(volume_report.markdown(data))
    print(f"wrote {DOCS} and {DOCS_JSON}")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.child:
        return child_main(args)
    command = shlex.join(
        ["python", "-m", "bench.volume", *(sys.argv[1:] if argv is None else argv)]
    )
    keep = args.keep or args.fill_only or args.measure_only
    try:
        result = run_week(args, command) if args.week else run(args, command)
    except BenchError as exc:
        print(f"bench.volume: {exc}", file=sys.stderr)
        return 1
    finally:
        if not keep:
            for name in (args.database, *(() if args.week else (f"{args.database}_empty",))):
                drop(name)
    if args.week:
        return _week_report(args, result)
    if args.fill_only:
        print(json.dumps(result["fills"]))
        return 0
    from bench import volume_report

    print(volume_report.table(result))
    if args.docs if args.docs is not None else args.scale >= 1:
        write_docs(result)
    print(json.dumps({"empty": result["empty"], "filled": result["filled"],
                      "retention": result["retention"]["figures"]}))  # fmt: skip
    return 0


def _week_report(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """Prints the week's table; writes it into the docs unless --no-docs (its default scale is
    the documented one)."""
    from bench import volume_report

    print("\n".join(volume_report.week_lines(result)))
    if args.docs is not False:
        write_docs({"week": result})
    print(json.dumps({"growth": result["growth"], "flat": result["flat"]}))
    return 0 if result["flat"] else 2


# --- a child: one database, Django set up for it ---------------------------------------------


def child_main(args: argparse.Namespace) -> int:
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    import warnings

    warnings.filterwarnings("ignore", message="No directory at")
    try:
        if args.child == "fill":
            result = _child_fill(args.scale, live_set=not args.without_live_set)
        elif args.child == "measure":
            result = _child_measure(args.workers, args.explain)
        elif args.child == "week":
            result = _child_week()
        else:
            result = _child_retention()
    except BenchError as exc:
        print(f"bench.volume ({args.child}): {exc}", file=sys.stderr)
        return 1
    Path(args.out).write_text(json.dumps(result, default=str))
    return 0


def _child_fill(scale: float, live_set: bool) -> dict[str, Any]:
    import django

    django.setup()
    from dataclasses import asdict

    from bench import stack, volume_fill
    from bench.config import database_config

    with stack.bench_database(database_config(), keep=True):
        started = time.perf_counter()
        filled = volume_fill.fill(scale, live_set=live_set)
        print(f"  total: {time.perf_counter() - started:.0f} s", flush=True)
    return asdict(filled)


def _child_measure(workers: int, explain: bool) -> dict[str, Any]:
    import shutil

    from bench.deliveries import broker_environment

    workdir = Path(tempfile.mkdtemp(prefix="kinetic-volume-"))
    try:
        # Before django.setup(): the settings read the broker's URL when they load.
        with broker_environment(workdir) as broker:
            import django

            django.setup()
            from bench import volume_measure

            return volume_measure.measure(workdir, broker, workers, explain)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _child_retention() -> dict[str, Any]:
    import django

    django.setup()
    from bench import volume_measure

    return volume_measure.retention()


def _child_week() -> dict[str, Any]:
    import django

    django.setup()
    from django.db import connection

    from bench import report, volume_week

    result = volume_week.week()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        result["machine"] = report.machine_info(cursor.fetchone()[0], "")
    result["machine"].pop("wrk", None)
    return result


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench.volume: interrupted", file=sys.stderr)
        sys.exit(130)
