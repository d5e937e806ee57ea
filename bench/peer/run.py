"""The peer run of the delivery bench (issue 7): django-webhook on our throughput workload.

    python -m bench.peer [--quick] [--variants threads:16,prefork:2]

django-webhook (Celery + requests, one task per delivery) is the closest Python peer. It runs
in a virtualenv of its own (bench/peer/venv.py) with a minimal Django project (bench/peer/site)
on a fresh `kinetic_bench_peer` database and a private redis-server, against the same receiver
as ours (bench/receiver.py, told not to verify: the peer signs another way). Per variant (worker
pool and concurrency, with and without database connection reuse): 10 webhooks on a warm-up
model and 10 on the measured one, one `celery worker`, a warm-up of 20 saves, then EVENTS saves
(1,000; quick: 100) by one producer as fast as it can; deliveries per second from the first save
to the receiver's last receipt, once every delivery is recorded as SUCCESS by django-webhook.
Each variant gets a fresh database and broker. Prints a table and, last, one JSON object.

What the peer does differently, so the ratio is read right: it fans out in the producer (one
`fire_webhook.delay` per webhook inside post_save, not on commit: no outbox); each task opens a
new `requests.Session` (a new TCP connection, no timeout), signs `timestamp:payload` with its
own headers, and makes four queries (the webhook, its secrets, a WebhookEvent insert, then its
update); with Celery's Django fixup every task also opens a new PostgreSQL connection unless
CELERY_DB_REUSE_MAX is set (the reuse variant sets it beside CONN_MAX_AGE, which alone changes
nothing). Its retries (5, backoff from 60 s) only follow HTTP errors: a refused connection
fails the task for good (`ex.response` is None there).
"""

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psycopg
from psycopg import sql

from bench.config import REPO_ROOT, BenchError, database_config
from bench.deliveries import free_port, redis_server
from bench.peer.venv import peer_python, pinned_version
from bench.stack import connect

PEER_DB = "kinetic_bench_peer"
ENDPOINTS = 10
WARMUP_EVENTS = 20
# Held on the maintenance connection for the whole run: two peer runs would drop each other's
# database. Not the key bench/stack.py holds for `kinetic_bench`: both may run at once.
_ADVISORY_LOCK_KEY = 0x6B6265706565  # "kbepee"
# django-webhook retries a failed delivery after 60 s (its default_retry_delay): no progress
# for this long means a delivery failed (or a process hangs), not that the peer is slow.
STALL_SECONDS = 45.0
# A connection-reuse variant keeps each worker's connections for this long (CONN_MAX_AGE)...
CONN_MAX_AGE = 600
# ...and tells Celery's Django fixup, which otherwise closes every connection around every task
# whatever CONN_MAX_AGE says (celery 5.7, fixups/django.py), to leave them open.
DB_REUSE_MAX = 1_000_000


@dataclass(frozen=True)
class Variant:
    """One worker configuration of the peer."""

    pool: str
    concurrency: int
    reuse: bool = False

    @property
    def key(self) -> str:
        return f"peer_{self.pool}{self.concurrency}{'_conn_reuse' if self.reuse else ''}_per_s"

    def figure(self, name: str) -> str:
        return self.key.replace("_per_s", f"_{name}")

    @property
    def label(self) -> str:
        reuse = f"CONN_MAX_AGE={CONN_MAX_AGE}" if self.reuse else "defaults (CONN_MAX_AGE=0)"
        return f"--pool {self.pool} --concurrency {self.concurrency}, {reuse}"


def parse_variants(text: str) -> list[Variant]:
    """`threads:16,prefork:16` -> each pool without and with connection reuse."""
    pools = []
    for item in text.split(","):
        pool, _, concurrency = item.strip().partition(":")
        if pool not in ("threads", "prefork") or not concurrency.isdigit():
            raise BenchError(f"bad variant {item!r}: write POOL:CONCURRENCY, POOL threads|prefork")
        pools.append((pool, int(concurrency)))
    return [Variant(p, c, reuse) for reuse in (False, True) for p, c in pools]


# Ours runs `--pool threads --concurrency 16`: the same, then the worker django-webhook's docs
# start (`celery worker -Q celery`: prefork, one process per CPU), in case the peer does better
# with processes. (prefork with 16 processes was slower than both on this 2-CPU machine.)
DEFAULT_VARIANTS = parse_variants(f"threads:16,prefork:{os.cpu_count() or 1}")
# --quick keeps the pool that was the peer's fastest on a quiet machine (and is ours), to stay
# within the quick run's five minutes.
QUICK_VARIANTS = parse_variants("threads:16")


def run_peer(quick: bool, variants: list[Variant] | None = None) -> dict[str, float]:
    """Figures of the peer: `peer_per_s` (django-webhook's defaults, the faster pool),
    `peer_conn_reuse_per_s` (connections reused, the faster pool), and each variant's own:
    deliveries/s, the producer's events/s, PostgreSQL connections opened per delivery, and the
    1-minute load average as its measured run started (other processes share the CPUs)."""
    events = 100 if quick else 1000
    variants = variants or (QUICK_VARIANTS if quick else DEFAULT_VARIANTS)
    results: dict[str, float] = {}
    restore = _stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="kinetic-bench-peer-"))
    try:
        python = peer_python()
        with _admin_connection() as admin:
            for variant in variants:
                results.update(_run_variant(python, admin, workdir, variant, events))
    finally:
        restore()
        shutil.rmtree(workdir, ignore_errors=True)
    for reuse, key in ((False, "peer_per_s"), (True, "peer_conn_reuse_per_s")):
        rates = [results[v.key] for v in variants if v.reuse == reuse]
        if rates:
            results[key] = max(rates)
    results["peer_loadavg_1m"] = max(results[v.figure("loadavg_1m")] for v in variants)
    return results


def _stop_on_sigterm() -> Callable[[], object]:
    """SIGTERM unwinds like an exception, so every `finally` below stops what it started."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: the caller handles signals
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


# --- the database ----------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name != PEER_DB:
        raise BenchError(f"refusing to use database {name!r}: the peer run only uses {PEER_DB}")


def _connect(dbname: str) -> psycopg.Connection:
    return connect(database_config(), dbname)


@contextlib.contextmanager
def _admin_connection() -> Iterator[psycopg.Connection]:
    try:
        admin = _connect("postgres")
    except psycopg.OperationalError as exc:
        raise BenchError(f"cannot reach PostgreSQL for the peer database: {exc}") from None
    with admin:
        locked = admin.execute("SELECT pg_try_advisory_lock(%s)", [_ADVISORY_LOCK_KEY]).fetchone()
        if not (locked and locked[0]):
            raise BenchError("another peer run holds its database; wait for it to finish")
        yield admin


@contextlib.contextmanager
def _fresh_database(admin: psycopg.Connection, name: str) -> Iterator[None]:
    """Creates `name` (only ever kinetic_bench_peer) fresh and drops it afterwards."""
    _drop(admin, name)
    _check_name(name)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield
    finally:
        _drop(admin, name)


def _drop(admin: psycopg.Connection, name: str) -> None:
    _check_name(name)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _wait_recorded(db: psycopg.Connection, topic: str, expected: int, worker: "Worker") -> None:
    """Until `expected` deliveries of `topic` are recorded as SUCCESS (django-webhook's
    WebhookEvent rows, its counterpart of our Delivery rows)."""
    last, changed = -1, time.monotonic()
    query = (
        "SELECT count(*) FROM django_webhook_webhookevent WHERE topic = %s AND status = 'SUCCESS'"
    )
    while True:
        row = db.execute(query, [topic]).fetchone()
        done = int(row[0]) if row else 0
        if done >= expected:
            return
        if done != last:
            last, changed = done, time.monotonic()
        elif time.monotonic() - changed > STALL_SECONDS:
            raise BenchError(
                f"peer stalled at {done} of {expected} {topic} deliveries recorded:\n{worker.log()}"
            )
        worker.check()
        time.sleep(0.05)


# --- the processes ---------------------------------------------------------------------------


def _peer_env(broker: str, variant: Variant) -> dict[str, str]:
    """The environment of the peer's processes: its settings, our broker and database only."""
    db = database_config()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")
        and not k.startswith(("DJANGO_", "CELERY_", "PEER_"))
    }
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        DJANGO_SETTINGS_MODULE="bench.peer.site.settings",
        PEER_BROKER_URL=broker,
        PEER_DB_HOST=db["HOST"] or "127.0.0.1",
        PEER_DB_PORT=str(db["PORT"] or 5432),
        PEER_DB_USER=db["USER"] or "postgres",
        PEER_DB_PASSWORD=db["PASSWORD"] or "",
        PEER_CONN_MAX_AGE=str(CONN_MAX_AGE if variant.reuse else 0),
        # django-webhook queries the database in AppConfig.ready(); Django warns each process.
        PYTHONWARNINGS="ignore::RuntimeWarning",
    )
    if variant.reuse:
        env["PEER_DB_REUSE_MAX"] = str(DB_REUSE_MAX)
    return env


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL to its process group (its own session, so only its children)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # not reaped yet: still its group
            process.wait(10)


class Receiver:
    """bench/receiver.py, counting receipts only (it cannot verify the peer's signatures)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = workdir / f"received-{self.port}.json"
        config = workdir / f"receiver-{self.port}.json"
        config.write_text(json.dumps({"verify": False}))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", str(self.port), str(config), str(self.out)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"the receiver did not listen on {self.url}")
            time.sleep(0.05)

    def finish(self) -> list[tuple[str, str, float]]:
        """Stops it; what it received: (event id, path, unix time) per request."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        return [tuple(r) for r in json.loads(self.out.read_text())["received"]]

    def stop(self) -> None:
        _stop(self.process, 10)


class Worker:
    """One `celery worker` of the peer, with the options django-webhook's docs give (`-Q celery`)
    and our worker's pool, concurrency and quiet flags."""

    def __init__(self, python: Path, env: dict[str, str], variant: Variant, workdir: Path) -> None:
        self.log_path = workdir / f"celery-{variant.key}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(python), "-m", "celery", "-A", "bench.peer.site", "worker", "-Q", "celery",
                 "--pool", variant.pool, "--concurrency", str(variant.concurrency),
                 "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                 "--hostname", "peer@%h"],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def check(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"the peer's worker exited ({self.process.returncode}):\n{self.log()}")

    def log(self) -> str:
        return _tail(self.log_path)

    def stop(self) -> None:
        _stop(self.process, 30)


class Producer:
    """bench/peer/site/producer.py `publish`: warm-up saves, then the measured ones on "go"."""

    def __init__(self, python: Path, env: dict[str, str], events: int, workdir: Path) -> None:
        self.log_path = workdir / "peer-producer.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(python), "-m", "bench.peer.site.producer", "publish",
                 str(WARMUP_EVENTS), str(events)],
                cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True, start_new_session=True,
            )  # fmt: skip

    def read(self, timeout: float) -> dict[str, float]:
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else ""
        if not line:
            raise BenchError(f"the peer's producer said nothing:\n{_tail(self.log_path)}")
        return dict(json.loads(line))

    def finish(self) -> dict[str, float]:
        """When the measured saves started and ended; the producer has exited."""
        times = self.read(60)
        self.process.wait(30)
        return times

    def go(self) -> None:
        stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
        stdin.write("go\n")
        stdin.flush()

    def stop(self) -> None:
        _stop(self.process, 10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


# --- one variant -----------------------------------------------------------------------------


def _run_variant(
    python: Path, admin: psycopg.Connection, workdir: Path, variant: Variant, events: int
) -> dict[str, float]:
    with (
        redis_server(workdir) as broker,
        _fresh_database(admin, PEER_DB),
        contextlib.ExitStack() as stack,
    ):
        # A Broker (url, pid) now; a plain URL in older bench/deliveries.py.
        env = _peer_env(str(getattr(broker, "url", broker)), variant)
        warm = Receiver(workdir)
        stack.callback(warm.stop)
        main = Receiver(workdir)
        stack.callback(main.stop)
        prepare = subprocess.run(
            [str(python), "-m", "bench.peer.site.producer", "prepare", str(ENDPOINTS),
             warm.url, main.url],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if prepare.returncode != 0:
            raise BenchError(f"preparing the peer database failed:\n{prepare.stderr[-3000:]}")
        worker = Worker(python, env, variant, workdir)
        stack.callback(worker.stop)
        producer = Producer(python, env, events, workdir)
        stack.callback(producer.stop)
        db = stack.enter_context(_connect(PEER_DB))

        producer.read(120)
        _wait_recorded(db, "peer.Warmup/create", WARMUP_EVENTS * ENDPOINTS, worker)
        _check_received(warm.finish(), WARMUP_EVENTS, "w")
        load = os.getloadavg()[0]
        sessions = _sessions(db)
        producer.go()
        _wait_recorded(db, "peer.Order/create", events * ENDPOINTS, worker)
        received = main.finish()
        sessions = _sessions(db) - sessions
        times = producer.finish()
        _check_received(received, events, "e")
        last = max(t for _, _, t in received)
        return {
            variant.key: events * ENDPOINTS / (last - times["started"]),
            variant.figure("publish_per_s"): events / (times["published"] - times["started"]),
            variant.figure("db_connections_per_delivery"): sessions / (events * ENDPOINTS),
            variant.figure("loadavg_1m"): load,
        }


def _sessions(db: psycopg.Connection) -> int:
    """Connections PostgreSQL has opened to the peer database so far (pg_stat_database: our
    own polling connection's is long counted; a closed connection's is counted as it closes,
    an open one's within a second or so)."""
    query = "SELECT sessions FROM pg_stat_database WHERE datname = %s"
    row = db.execute(query, [PEER_DB]).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _check_received(received: list[tuple[str, str, float]], events: int, prefix: str) -> None:
    """Exactly `events` requests on each of the endpoints: none lost, none sent twice."""
    expected = {f"/{prefix}{i}": events for i in range(ENDPOINTS)}
    got = Counter(path for _, path, _ in received)
    if got != expected:
        raise BenchError(
            f"the receiver got {len(received)} requests, expected {events * ENDPOINTS} "
            f"({events} on each of {ENDPOINTS} endpoints): {dict(got)}"
        )


# --- the command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="100 events instead of 1,000")
    parser.add_argument(
        "--variants",
        default=None,
        help="worker pools to measure, POOL:CONCURRENCY,... (default threads:16,prefork:"
        f"{os.cpu_count() or 1}); each runs with django-webhook's defaults and with connections "
        "reused",
    )
    args = parser.parse_args(argv)
    variants = parse_variants(args.variants) if args.variants else None
    try:
        results = run_peer(args.quick, variants)
    except BenchError as exc:
        print(f"bench.peer: {exc}", file=sys.stderr)
        return 1
    print(f"django-webhook {pinned_version('django-webhook')}, one celery worker, "
          f"{ENDPOINTS} endpoints, {100 if args.quick else 1000} events")  # fmt: skip
    for variant in variants or (QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS):
        best = results[variant.key] == results.get(
            "peer_conn_reuse_per_s" if variant.reuse else "peer_per_s"
        )
        print(
            f"{'*' if best else ' '} {variant.label:<50}"
            f" {results[variant.key]:7,.1f} deliveries/s"
            f"  publish {results[variant.figure('publish_per_s')]:6,.0f} events/s"
            f"  {results[variant.figure('db_connections_per_delivery')]:5.2f} db conn/delivery"
            f"  load {results[variant.figure('loadavg_1m')]:.2f}"
        )
    width = max(len(k) for k in results)
    for key in ("peer_per_s", "peer_conn_reuse_per_s"):
        if key in results:
            print(f"{key:<{width}}  {results[key]:,.1f}")
    print(json.dumps({k: round(v, 2) for k, v in results.items()}))
    return 0
