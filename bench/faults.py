"""`python -m bench.faults [--events N] [--quick]`: faults injected while events are published.

Starts everything on servers of its own: a private PostgreSQL cluster (fsync and
synchronous_commit on, as in production), a private redis-server, gunicorn (2 sync workers),
2 `celery worker` processes and `celery beat`, all with the production settings
(bench/settings.py), each Celery process started again when it exits, as a supervisor would.
Five endpoints, made through the API, point at one receiver on 127.0.0.1 (bench/receiver.py,
which checks every signature and timestamp with the endpoint's secret): /a0 and /a1 get
every event, /j0 only `judgment.created`, /f0 answers 503 for a while (twice), /o0 is ordered.

PUBLISHERS threads publish EVENTS events through `POST /v1/events` at a steady rate, half
`judgment.created`, half `packet.created`, retrying a 5xx, 409, 429 or a connection error with
the same Idempotency-Key, while the run injects, one after another: /f0 failing, a worker
`kill -9`, Redis FLUSHALL then `kill -9`, a PostgreSQL restart in fast mode, one in immediate
mode, and beat `kill -9` (with /f0 failing while beat is down). Then it waits until PostgreSQL
records every expected delivery as succeeded (or nothing moves for STALL_SECONDS), stops the
receiver and counts from what it got. Writes docs/reliability.json and docs/reliability.md.
"""

import argparse
import bisect
import contextlib
import datetime as dt
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import deliveries as d
from bench.config import BENCH_DB_NAME, REPO_ROOT, SETTINGS_MODULE, BenchError
from tests.servers import PrivatePostgres, PrivateRedis

DOCS_DIR = REPO_ROOT / "docs"
DATABASE = f"{BENCH_DB_NAME}_faults"
EVENTS = 10_000
QUICK_EVENTS = 1_000
TYPES = ("judgment.created", "packet.created")
PUBLISHERS = 8  # a few publishes stuck in retries must not hold up the steady rate
# A careful client gives up on one publish after this long (beyond a 300 s key lock, so that a
# key held after a 5xx shows as 409s rather than as an abandoned event).
GIVE_UP_SECONDS = 360.0
RETRIED_STATUSES = {409, 429}  # and every 5xx
RESTART_DELAY = 1.0  # seconds a supervisor waits before starting an exited process again
REDIS_DOWN_SECONDS = 2.0
SETTLE_SECONDS = 10.0  # API responses are counted from a fault's start to this long after it
STALL_SECONDS = 240.0  # longer than a claim's lease and the re-enqueue delay together
DRAIN_TIMEOUT = 1800.0
# Production's schedule is 5 s, 5 min, 30 min, ...: an endpoint failing for 30 s would leave
# retries due minutes after the run. The same first step, doubling, keeps them in the run.
RETRY_SCHEDULE = "5,10,20,40,80,160,320,640,1280"


@dataclass(frozen=True)
class Endpoint:
    path: str
    delivery_order: str = "unordered"
    enabled_events: tuple[str, ...] | None = None  # None: every event ("*")


ENDPOINTS = (
    Endpoint("/a0"),
    Endpoint("/a1"),
    Endpoint("/j0", enabled_events=("judgment.created",)),
    Endpoint("/f0"),
    Endpoint("/o0", delivery_order="ordered"),
)
FAILING_PATH = "/f0"
ORDERED_PATH = "/o0"


@dataclass(frozen=True)
class Plan:
    """When things happen, in seconds from the first publish."""

    first_at: float  # /f0 starts failing
    spacing: float  # between one fault's start and the next one's
    failing_for: float
    beat_down_for: float
    tail: float  # publishing goes on this long after the last fault starts

    @classmethod
    def of(cls, quick: bool) -> "Plan":
        if quick:
            return cls(first_at=10, spacing=40, failing_for=10, beat_down_for=20, tail=25)
        return cls(first_at=15, spacing=90, failing_for=30, beat_down_for=30, tail=45)

    def fault_at(self, index: int) -> float:
        return self.first_at + index * self.spacing

    @property
    def publishing_seconds(self) -> float:
        return self.fault_at(len(FAULT_NAMES) - 1) + self.tail


FAULT_NAMES = (
    "endpoint /f0 answers 503",
    "worker kill -9",
    "Redis FLUSHALL, kill -9",
    "PostgreSQL restart, fast",
    "PostgreSQL restart, immediate",
    "beat kill -9 (/f0 answers 503 meanwhile)",
)


# --- counting (pure: no servers, no Django) --------------------------------------------------


@dataclass(frozen=True)
class Publish:
    """One event the API confirmed (201)."""

    event_id: str
    type: str
    started: float  # the publish call's first attempt (unix time)
    returned: float  # its 201


@dataclass(frozen=True)
class Receipt:
    event_id: str
    path: str
    at: float
    verdict: str = "ok"  # "ok", "bad_signature" or "stale" (bench/receiver.py)


Pair = tuple[str, str]  # (event id, endpoint path)


@dataclass
class Counts:
    published: int
    expected_pairs: int
    received_pairs: int  # expected pairs received at least once with a valid signature
    missing_pairs: int
    duplicate_pairs: int  # pairs received (validly) more than once
    extra_receipts: int  # valid receipts beyond each pair's first
    unexpected_pairs: int  # valid receipts of pairs that were not expected
    invalid_signatures: int
    stale_timestamps: int
    order_violations: int


def expected_pairs(
    published: Iterable[Publish], subscriptions: Mapping[str, tuple[str, ...] | None]
) -> dict[Pair, float]:
    """Each (event, endpoint) whose endpoint subscribes to the event's type -> when its
    publish returned."""
    return {
        (p.event_id, path): p.returned
        for p in published
        for path, types in subscriptions.items()
        if types is None or p.type in types
    }


def first_receipts(receipts: Iterable[Receipt]) -> dict[Pair, float]:
    """The first receipt with a valid signature of each pair."""
    firsts: dict[Pair, float] = {}
    for r in receipts:
        if r.verdict == "ok":
            pair = (r.event_id, r.path)
            firsts[pair] = min(r.at, firsts.get(pair, r.at))
    return firsts


def order_violations(published: Iterable[Publish], firsts: Mapping[str, float]) -> int:
    """Events first received before some event whose publish call returned before theirs
    started (the contract's order); events never received are counted as missing instead."""
    received = [p for p in published if p.event_id in firsts]
    by_return = sorted(received, key=lambda p: p.returned)
    returns = [p.returned for p in by_return]
    latest = list(itertools.accumulate((firsts[p.event_id] for p in by_return), max))
    violations = 0
    for p in received:
        before = bisect.bisect_left(returns, p.started)  # those that returned before p started
        if before and latest[before - 1] > firsts[p.event_id]:
            violations += 1
    return violations


def count(
    published: list[Publish],
    subscriptions: Mapping[str, tuple[str, ...] | None],
    receipts: list[Receipt],
    ordered_path: str,
) -> Counts:
    expected = expected_pairs(published, subscriptions)
    firsts = first_receipts(receipts)
    valid = Counter((r.event_id, r.path) for r in receipts if r.verdict == "ok")
    ordered = [p for p in published if (p.event_id, ordered_path) in expected]
    ordered_firsts = {e: at for (e, path), at in firsts.items() if path == ordered_path}
    received = sum(1 for pair in expected if pair in firsts)
    return Counts(
        published=len(published),
        expected_pairs=len(expected),
        received_pairs=received,
        missing_pairs=len(expected) - received,
        duplicate_pairs=sum(1 for n in valid.values() if n > 1),
        extra_receipts=sum(n - 1 for n in valid.values()),
        unexpected_pairs=sum(1 for pair in valid if pair not in expected),
        invalid_signatures=sum(1 for r in receipts if r.verdict == "bad_signature"),
        stale_timestamps=sum(1 for r in receipts if r.verdict == "stale"),
        order_violations=order_violations(ordered, ordered_firsts),
    )


def drain_seconds(
    expected: Mapping[Pair, float], firsts: Mapping[Pair, float], end: float
) -> float:
    """From `end` until every pair published (returned) before it was first received; inf if
    one never was."""
    last = end
    for pair, returned in expected.items():
        if returned < end:
            last = max(last, firsts.get(pair, float("inf")))
    return last - end


def retries_received(
    receipts: Iterable[Receipt], refused: Iterable[Receipt], start: float, end: float
) -> int:
    """Valid receipts in [start, end] of pairs the receiver had refused before: retries that
    got through in that window."""
    first_refused: dict[Pair, float] = {}
    for r in refused:
        pair = (r.event_id, r.path)
        first_refused[pair] = min(r.at, first_refused.get(pair, r.at))
    return sum(
        1
        for r in receipts
        if r.verdict == "ok"
        and start <= r.at <= end
        and first_refused.get((r.event_id, r.path), r.at) < r.at
    )


def statuses_between(responses: Iterable[tuple[float, str]], start: float, end: float) -> dict:
    """API responses (status code, or "error" for no response) answered in [start, end]."""
    return dict(sorted(Counter(s for at, s in responses if start <= at <= end).items()))


# --- the publisher ---------------------------------------------------------------------------


class Publisher:
    """`count` events at `rate`/s from PUBLISHERS threads, each retried with its own
    Idempotency-Key until the API confirms it, as a careful client would through an outage."""

    def __init__(self, url: str, key: str, count: int, rate: float, run_id: str) -> None:
        self.url, self.key, self.count, self.rate, self.run_id = url, key, count, rate, run_id
        self.published: list[Publish] = []
        self.responses: list[tuple[float, str]] = []  # (time answered, status or "error")
        self.abandoned: list[int] = []
        self.started = 0.0
        self._indices = itertools.count()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"publisher-{n}", daemon=True)
            for n in range(PUBLISHERS)
        ]

    def start(self) -> None:
        self.started = time.time()
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        import requests

        with requests.Session() as session:
            while True:
                with self._lock:
                    i = next(self._indices)
                if i >= self.count:
                    return
                time.sleep(max(0.0, self.started + i / self.rate - time.time()))
                self._publish(session, i)

    def _publish(self, session: Any, i: int) -> None:
        import requests

        type_ = TYPES[i % len(TYPES)]
        headers = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": f"{self.run_id}-{i}"}
        started = time.time()
        while time.time() < started + GIVE_UP_SECONDS:
            try:
                response = session.post(
                    f"{self.url}/v1/events",
                    json={"type": type_, "data": {"i": i}},
                    headers=headers,
                    timeout=15,
                )
            except requests.RequestException:
                self.responses.append((time.time(), "error"))
                time.sleep(0.5)
                continue
            self.responses.append((time.time(), str(response.status_code)))
            if response.status_code == 201:
                event_id = response.json()["event_id"]
                self.published.append(Publish(event_id, type_, started, time.time()))
                return
            if response.status_code < 500 and response.status_code not in RETRIED_STATUSES:
                break  # the request itself is wrong: retrying changes nothing
            retry_after = response.headers.get("Retry-After", "")
            time.sleep(min(float(retry_after), 5.0) if retry_after.isdigit() else 0.5)
        self.abandoned.append(i)


# --- processes -------------------------------------------------------------------------------


class Supervised:
    """A process started again RESTART_DELAY after it exits, as compose's `restart:` or
    systemd's `Restart=always` would; `kill()` is the fault, SIGKILL to its process group."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.restarts = 0
        self.killed = 0
        self._down_until = 0.0
        self._stopping = threading.Event()
        self.process = self._spawn()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _watch(self) -> None:
        while not self._stopping.wait(0.1):
            if self.process.poll() is None:
                continue
            time.sleep(max(RESTART_DELAY, self._down_until - time.time()))
            if not self._stopping.is_set():
                self.process = self._spawn()
                self.restarts += 1

    def kill(self, down_for: float = 0.0) -> float:
        """SIGKILL; returns when the supervisor has started it again (at least `down_for`
        seconds later)."""
        restarts = self.restarts
        self._down_until = time.time() + down_for
        self.killed += 1
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + down_for + 60
        while self.restarts == restarts:
            if time.monotonic() > deadline:
                raise BenchError(f"{shlex.join(self.argv[2:])} did not start again")
            time.sleep(0.05)
        return time.time()

    @property
    def unprompted_restarts(self) -> int:
        return self.restarts - self.killed

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        process = self.process
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def celery(args: list[str], env: dict[str, str], log: Path) -> Supervised:
    return Supervised([sys.executable, "-m", "celery", "-A", "config", *args], env, log)


def stop_postgres(postgres: PrivatePostgres, mode: str) -> None:
    """`pg_ctl stop -m fast|immediate` on the private cluster (the machine's is never touched)."""
    subprocess.run(
        [*postgres.as_owner, str(postgres.bin / "pg_ctl"), "-D", str(postgres.data),
         "-m", mode, "-w", "stop"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@dataclass
class Fault:
    name: str
    start: float
    end: float  # the component is back (restarted, or the endpoint answers 2xx again)


@dataclass
class Stack:
    workdir: Path
    postgres: PrivatePostgres
    redis: PrivateRedis
    workers: list[Supervised] = field(default_factory=list)
    beat: Supervised | None = None

    def processes(self) -> list[Supervised]:
        return [*self.workers, *([self.beat] if self.beat else [])]


def inject(stack: Stack, receiver: d.Receiver, plan: Plan, t0: float) -> list[Fault]:
    """Every fault in turn, each at its planned time from `t0`."""

    def at(index: int) -> float:
        time.sleep(max(0.0, t0 + plan.fault_at(index) - time.time()))
        print(f"bench.faults: {FAULT_NAMES[index]}", flush=True)
        return time.time()

    def worker_kill() -> float:
        return stack.workers[0].kill()

    def redis_loss() -> float:
        stack.redis.command("FLUSHALL")
        assert stack.redis.process is not None
        stack.redis.process.kill()
        stack.redis.process.wait(10)
        time.sleep(REDIS_DOWN_SECONDS)
        stack.redis.start()
        return time.time()

    def postgres_restart(mode: str) -> Callable[[], float]:
        def restart() -> float:
            stop_postgres(stack.postgres, mode)
            stack.postgres.start()
            return time.time()

        return restart

    def beat_kill() -> float:
        assert stack.beat is not None
        # /f0 fails from 2 s after the kill until 10 s before beat is back: its retries fall
        # due while no beat runs.
        failing = threading.Timer(2.0, receiver.toggle_failing)
        recovered = threading.Timer(plan.beat_down_for - 10.0, receiver.toggle_failing)
        failing.start()
        recovered.start()
        return stack.beat.kill(down_for=plan.beat_down_for)

    def endpoint_failing() -> float:
        receiver.toggle_failing()
        time.sleep(plan.failing_for)
        receiver.toggle_failing()
        return time.time()

    actions = [
        endpoint_failing,
        worker_kill,
        redis_loss,
        postgres_restart("fast"),
        postgres_restart("immediate"),
        beat_kill,
    ]
    faults = []
    for index, action in enumerate(actions):
        start = at(index)
        faults.append(Fault(FAULT_NAMES[index], start, action()))
    return faults


# --- the run ---------------------------------------------------------------------------------


@contextlib.contextmanager
def private_servers(workdir: Path) -> Iterator[Stack]:
    # Durable commits, as a production server has them (the test cluster's defaults are off).
    postgres = PrivatePostgres(fsync="on", synchronous_commit="on", full_page_writes="on")
    try:
        redis = PrivateRedis()
        try:
            yield Stack(workdir, postgres, redis)
        finally:
            redis.destroy()
    finally:
        postgres.destroy()


def configure(stack: Stack) -> dict[str, str]:
    """The environment every process of the run reads, set before Django starts here."""
    settings = {
        "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
        "BENCH_DATABASE_URL": stack.postgres.url(DATABASE),
        "BENCH_CELERY_BROKER_URL": stack.redis.url,
        # The receivers are on 127.0.0.1; the endpoints are sandbox ones.
        "WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS": "true",
        "WEBHOOKS_RETRY_SCHEDULE": RETRY_SCHEDULE,
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(settings)
    return settings


def make_endpoints(url: str, key: str, port: int) -> dict[str, str]:
    """The ENDPOINTS through the API; path -> signing secret."""
    import requests

    secrets = {}
    for endpoint in ENDPOINTS:
        body: dict[str, Any] = {
            "url": f"http://127.0.0.1:{port}{endpoint.path}",
            "delivery_order": endpoint.delivery_order,
        }
        if endpoint.enabled_events is not None:
            body["enabled_events"] = list(endpoint.enabled_events)
        response = requests.post(
            f"{url}/v1/webhook_endpoints",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=15,
        )
        if response.status_code != 201:
            raise BenchError(f"creating {endpoint.path}: {response.status_code} {response.text}")
        secrets[endpoint.path] = response.json()["signing_secret"]
    return secrets


def run(events: int, plan: Plan) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="kinetic-bench-faults-"))
    try:
        with private_servers(workdir) as stack:
            env = {**os.environ, **configure(stack)}
            # On the run's own cluster, destroyed after it: nothing to drop.
            stack.postgres.create_database(DATABASE)
            import django

            django.setup()
            from django.core.management import call_command
            from django.db import connections

            call_command("migrate", interactive=False, verbosity=0)
            try:
                return _run_on(stack, env, events, plan)
            finally:
                connections.close_all()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_on(stack: Stack, env: dict[str, str], events: int, plan: Plan) -> dict[str, Any]:
    from django.db import connections

    from accounts import scopes
    from accounts.services import api_key_create, organization_create
    from bench import stack as servers

    organization = organization_create(slug="faults")
    environment = organization.environments.get(name="sandbox")
    _, key = api_key_create(
        environment=environment,
        scopes=[scopes.WEBHOOK_ENDPOINTS_WRITE, scopes.EVENTS_WRITE],
        name="faults",
    )
    connections.close_all()  # the database restarts under it; a new connection after
    log = stack.workdir / "celery.log"
    receiver = None
    with servers.gunicorn(servers.GunicornConfig("sync", workers=2)) as web:
        try:
            port = d.free_port()
            secrets = make_endpoints(web.base_url, key, port)
            receiver = d.Receiver(
                stack.workdir, secrets, [], port=port, failing_paths=[FAILING_PATH]
            )
            stack.workers = [
                celery(["worker", "--loglevel", "WARNING", "--hostname", f"faults{i}@%h"], env, log)
                for i in range(2)
            ]
            schedule = str(stack.workdir / "beat-schedule")
            stack.beat = celery(["beat", "--loglevel", "WARNING", "-s", schedule], env, log)
            time.sleep(5)  # the workers connect and declare their queues
            rate = events / plan.publishing_seconds
            publisher = Publisher(web.base_url, key, events, rate, f"faults-{int(time.time())}")
            print(f"bench.faults: publishing {events:,} events at {rate:.1f}/s", flush=True)
            publisher.start()
            faults = inject(stack, receiver, plan, publisher.started)
            publisher.join()
            published_at = time.time()
            subscriptions = {e.path: e.enabled_events for e in ENDPOINTS}
            expected = expected_pairs(publisher.published, subscriptions)
            print(f"bench.faults: published; waiting for {len(expected):,} deliveries", flush=True)
            drained = True
            try:
                d.wait_recorded(
                    environment, len(expected), DRAIN_TIMEOUT, stalled_after=STALL_SECONDS
                )
            except BenchError as exc:
                drained = False
                print(f"bench.faults: {exc}", flush=True)
            finished = time.time()
            time.sleep(3)  # a late duplicate still counts
            logs = web.log_path.read_bytes() if web.log_path else b""
        finally:
            for process in stack.processes():
                process.stop()
            got = receiver.finish() if receiver is not None else {}
    logs += log.read_bytes() if log.exists() else b""
    receipts = [
        Receipt(e, p, at, v) for (e, p, at), v in zip(got["received"], got["verdicts"], strict=True)
    ]
    return {
        "publisher": publisher,
        "faults": faults,
        "receipts": receipts,
        "refused": [Receipt(e, p, at, "refused") for e, p, at in got["refused"]],
        "expected": expected,
        "subscriptions": subscriptions,
        "drained": drained,
        "published_at": published_at,
        "drain_seen_at": finished,
        "stack": stack,
        "secrets_in_logs": sum(logs.count(s.encode()) for s in secrets.values()),
        "log_bytes": len(logs),
        "postgres_version": _postgres_version(),
        "engine_settings": _engine_settings(),
    }


def _engine_settings() -> dict[str, Any]:
    """The settings that decide how soon a delivery lost by a fault is sent again."""
    from django.conf import settings

    names = (
        "WEBHOOKS_RETRY_SCHEDULE",
        "WEBHOOKS_DELIVERY_TIMEOUT",
        "WEBHOOKS_CLAIM_LEASE_MARGIN",
        "WEBHOOKS_REENQUEUE_AFTER",
        "WEBHOOKS_SWEEP_INTERVAL",
        "WEBHOOKS_DATABASE_RETRY_SECONDS",
    )
    return {name: getattr(settings, name) for name in names}


def _postgres_version() -> str:
    """The server's version, and the durability settings it really ran with."""
    from django.db import connection

    with connection.cursor() as cursor:
        shown = []
        for name in ("server_version", "fsync", "synchronous_commit"):
            cursor.execute(f"SHOW {name}")
            shown.append(str(cursor.fetchone()[0]))
    return f"{shown[0]} (fsync {shown[1]}, synchronous_commit {shown[2]})"


def figures_of(result: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Everything the report says, from one run."""
    publisher: Publisher = result["publisher"]
    receipts: list[Receipt] = result["receipts"]
    expected: dict[Pair, float] = result["expected"]
    counts = count(publisher.published, result["subscriptions"], receipts, ORDERED_PATH)
    firsts = first_receipts(receipts)
    t0 = publisher.started
    statuses = Counter(s for _, s in publisher.responses)
    stack: Stack = result["stack"]
    by_endpoint = {
        e.path: {pair: at for pair, at in expected.items() if pair[1] == e.path} for e in ENDPOINTS
    }
    faults = [
        {
            "fault": f.name,
            "at_s": round(f.start - t0, 1),
            "down_s": round(f.end - f.start, 1),
            "api_responses": statuses_between(publisher.responses, f.start, f.end + SETTLE_SECONDS),
            "drain_s": _rounded(drain_seconds(expected, firsts, f.end)),
            "retries_received_while_down": retries_received(
                receipts, result["refused"], f.start, f.end
            ),
            "drain_s_by_endpoint": {
                path: _rounded(drain_seconds(pairs, firsts, f.end))
                for path, pairs in by_endpoint.items()
            },
        }
        for f in result["faults"]
    ]
    return {
        "counts": asdict(counts),
        "publish": {
            "events_requested": publisher.count,
            "rate_per_s": round(publisher.count / plan.publishing_seconds, 1),
            "achieved_per_s": round(len(publisher.published) / (result["published_at"] - t0), 1),
            "publish_seconds": round(result["published_at"] - t0, 1),
            "abandoned": len(publisher.abandoned),
            "responses": dict(sorted(statuses.items())),
            "responses_500": statuses.get("500", 0),
            "retried_attempts": sum(n for s, n in statuses.items() if s != "201"),
        },
        "drain": {
            "complete": result["drained"],
            "seconds_after_last_publish": round(
                result["drain_seen_at"] - result["published_at"], 1
            ),
        },
        "faults": faults,
        "receiver_refused_503": len(result["refused"]),
        "engine_settings": result["engine_settings"],
        "unprompted_restarts": {
            "workers": sum(w.unprompted_restarts for w in stack.workers),
            "beat": stack.beat.unprompted_restarts if stack.beat else 0,
        },
        "logs": {
            "bytes_searched": result["log_bytes"],
            "signing_secrets_found": result["secrets_in_logs"],
        },
        "endpoints": [
            {
                "path": e.path,
                "delivery_order": e.delivery_order,
                "enabled_events": list(e.enabled_events or ["*"]),
            }
            for e in ENDPOINTS
        ],
    }


def _rounded(seconds: float) -> float | None:
    return None if seconds == float("inf") else round(seconds, 1)


# --- the report ------------------------------------------------------------------------------


def verdicts(figures: dict[str, Any]) -> list[tuple[str, int, bool]]:
    """The issue's "what must hold", each with what the run saw (every one must be 0)."""
    c, p = figures["counts"], figures["publish"]
    seen = {
        "missing pairs": c["missing_pairs"],
        "order violations on the ordered endpoint": c["order_violations"],
        "API responses 500": p["responses_500"],
        "invalid signatures": c["invalid_signatures"],
        "publishes abandoned": p["abandoned"],
        "deliveries of events never confirmed": c["unexpected_pairs"],
        "signing secrets in the logs": figures["logs"]["signing_secrets_found"],
    }
    return [(name, value, value == 0) for name, value in seen.items()]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"
    return [
        "| " + " | ".join(header) + " |",
        align,
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _statuses(responses: dict[str, int]) -> str:
    return ", ".join(f"{s}: {n:,}" for s, n in responses.items()) or "none"


def markdown(figures: dict[str, Any]) -> str:
    c, p = figures["counts"], figures["publish"]
    m = figures["machine"]
    lines = [
        "# Reliability under faults",
        "",
        "Written by `python -m bench.faults` from one run; every figure below comes from that "
        "run (raw figures: `docs/reliability.json`). Counted from what the receiver got, each "
        "request checked with its endpoint's signing secret and timestamp as a receiver would.",
        "",
        f"- Command: `{figures['command']}`",
        f"- Date: {figures['date']}",
        f"- Machine: {m['nproc']} vCPU {m['cpu']}, {m['memory']}, {m['kernel']}; Python "
        f"{m['python']}, Django {m['django']}, gunicorn {m['gunicorn']}, psycopg "
        f"{m['psycopg']}, PostgreSQL {m['postgresql']}, Redis {figures['redis_version']}",
        f"- Load average (1, 5, 15 min) before: {_load(figures['load_before'])}, after: "
        f"{_load(figures['load_after'])}; highest 1-minute average during the run: "
        f"{figures['load_max_during']:.2f} (the machine is shared; other processes ran too)",
        f"- Stack: {figures['stack']}",
        f"- Endpoints: {_endpoints(figures['endpoints'])}",
        "",
        "## Totals",
        "",
        *_table(
            ["figure", "value"],
            [
                ["events published (201)", f"{c['published']:,}"],
                ["publish rate, target", f"{p['rate_per_s']}/s"],
                [
                    "publish rate, achieved",
                    f"{p['achieved_per_s']}/s over {p['publish_seconds']} s",
                ],
                ["expected (event, endpoint) pairs", f"{c['expected_pairs']:,}"],
                ["pairs received with a valid signature", f"{c['received_pairs']:,}"],
                ["missing pairs", f"{c['missing_pairs']:,}"],
                ["duplicate pairs (received validly more than once)", f"{c['duplicate_pairs']:,}"],
                ["receipts beyond each pair's first", f"{c['extra_receipts']:,}"],
                [
                    "receipts of pairs never confirmed or not subscribed",
                    f"{c['unexpected_pairs']:,}",
                ],
                ["invalid signatures", f"{c['invalid_signatures']:,}"],
                ["timestamps more than 5 minutes off", f"{c['stale_timestamps']:,}"],
                ["order violations on the ordered endpoint", f"{c['order_violations']:,}"],
                ["API responses, all attempts", _statuses(p["responses"])],
                ["API responses 500 (a contract failure)", f"{p['responses_500']:,}"],
                ["publish attempts retried (same Idempotency-Key)", f"{p['retried_attempts']:,}"],
                ["publishes abandoned after 360 s of retries", f"{p['abandoned']:,}"],
                ["requests /f0 answered 503", f"{figures['receiver_refused_503']:,}"],
                [
                    "Celery restarts nobody asked for (workers, beat)",
                    f"{figures['unprompted_restarts']['workers']}, "
                    f"{figures['unprompted_restarts']['beat']}",
                ],
                [
                    "drain complete (PostgreSQL: every expected delivery succeeded)",
                    f"{'yes' if figures['drain']['complete'] else 'NO'}, "
                    f"{figures['drain']['seconds_after_last_publish']} s after the last publish",
                ],
                [
                    "signing secrets found in the logs",
                    f"{figures['logs']['signing_secrets_found']} in "
                    f"{figures['logs']['bytes_searched'] / 1e6:.1f} MB",
                ],
            ],
        ),
        "",
        "## Per fault",
        "",
        "At: seconds after the first publish. Down: from the injection until the component was "
        "back (restarted and accepting, or answering 2xx again). API responses: every publish "
        f"attempt answered from the injection until {SETTLE_SECONDS:.0f} s after the end. "
        "Drain: from the end until every pair whose publish returned before the end had been "
        "received (0: nothing was waiting; `never`: a pair is missing); the same for each "
        "endpoint's pairs alone, slowest first. Retries received while down: deliveries accepted "
        "between the injection and the end whose pair /f0 had refused before (with beat "
        "down: retries that did not wait for beat).",
        "",
        "The settings that decide how soon a delivery a fault interrupted is sent again: "
        + ", ".join(f"{name} {value}" for name, value in figures["engine_settings"].items())
        + " (seconds).",
        "",
        *_table(
            [
                "fault",
                "at (s)",
                "down (s)",
                "API responses",
                "retries received while down",
                "drain (s)",
                "drain by endpoint (s)",
            ],
            [
                [
                    f["fault"],
                    f"{f['at_s']}",
                    f"{f['down_s']}",
                    _statuses(f["api_responses"]),
                    f"{f['retries_received_while_down']:,}",
                    _seconds(f["drain_s"]),
                    _slowest(f["drain_s_by_endpoint"]),
                ]
                for f in figures["faults"]
            ],
        ),
        "",
        "An ordered endpoint sends one delivery at a time: whatever holds its head back holds "
        "back every event published after it, and that backlog then goes out one round trip "
        "at a time, so its drain is the longest whenever a fault catches its head in flight.",
        "",
        "## What must hold (issue 17)",
        "",
        *_table(
            ["", "seen", "holds"],
            [
                [f"0 {name}", f"{seen:,}", "yes" if ok else "**no**"]
                for name, seen, ok in verdicts(figures)
            ],
        ),
        "",
        "## What this does not measure",
        "",
        *NOT_MEASURED,
    ]
    return "\n".join(_wrapped(lines)) + "\n"


def _wrapped(lines: list[str], width: int = 95) -> Iterator[str]:
    """Prose and list items folded to `width`, as the other docs are; tables left whole."""
    for line in lines:
        if line.startswith(("|", "#")) or len(line) <= width:
            yield line
        else:
            indent = "  " if line.startswith("- ") else ""
            yield from textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False)


NOT_MEASURED = [
    "- **One machine, loopback only.** No network between the service, its servers and the "
    "receiver: no latency, loss, partitions, TLS or DNS. Every process shares the same CPUs "
    "with the load given above.",
    "- **Clean process deaths, not machine deaths.** `kill -9` and PostgreSQL's immediate "
    "stop lose what was in memory; the operating system, its page cache and the disks stay up. "
    "A power loss, a full disk, a failover to a replica or a restored backup were not tried.",
    "- **Not every process.** gunicorn and the receiver were not killed; one of the two "
    "workers was killed once; Redis lost everything once (no persistence) but was never slow "
    "or partitioned; PostgreSQL was restarted, never starved of connections or disk.",
    "- **Compressed retries.** The retry schedule is "
    f"{RETRY_SCHEDULE.replace(',', ', ')} s (production: 5 s, 5 min, 30 min, ...), so that "
    "an endpoint failing for 30 s drains within the run. Claim leases, the re-enqueue delay "
    "and the sweep keep their production defaults, so drain times are production's.",
    "- **Sandbox endpoints on 127.0.0.1**, allowed by WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS: "
    "the outbound address policy is not exercised. The API rate limit is off (one key "
    "publishes everything).",
    "- **A kind receiver.** It answers at once (or 503 while failing); slow answers, "
    "timeouts, redirects and 410 were not tried; duplicates count only receipts it accepted.",
    "- **Order, as the contract defines it, for one producer's non-overlapping calls.** With "
    f"{PUBLISHERS} publishing threads, two calls in flight at once have no order; only an "
    "event whose publish call returned before another's started must be received first. "
    "Missing events are counted as missing, not as order violations.",
    "- **Minutes, not days.** Auto-disabling, retention, secret rotation and recovery were "
    "not exercised; nothing here says how the service behaves after hours under load.",
]


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value}"


def _slowest(drains: dict[str, float | None]) -> str:
    """Each endpoint's drain, slowest first (ties in path order)."""
    ordered = sorted(drains.items(), key=lambda item: -(item[1] if item[1] is not None else 1e18))
    return ", ".join(f"`{path}` {_seconds(value)}" for path, value in ordered)


def _load(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _endpoints(endpoints: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"`{e['path']}` {e['delivery_order']}, `{'`, `'.join(e['enabled_events'])}`"
        for e in endpoints
    )


class LoadPeak(threading.Thread):
    """The highest 1-minute load average seen, every 5 s, while the run lasts."""

    def __init__(self) -> None:
        super().__init__(name="load-peak", daemon=True)
        self.peak = os.getloadavg()[0]
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(5):
            self.peak = max(self.peak, os.getloadavg()[0])

    def __enter__(self) -> "LoadPeak":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()


def _redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return next((w.split("=")[1] for w in out.split() if w.startswith("v=")), "unknown")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--events", type=int, help=f"events to publish (default {EVENTS:,})")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_EVENTS:,} events, faults 40 s apart"
    )
    parser.add_argument("--out-dir", type=Path, default=DOCS_DIR, help="for reliability.md/.json")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="no run: write reliability.md again from a run's reliability.json",
    )
    args = parser.parse_args(argv)
    if args.render:
        figures = json.loads(args.render.read_text())
        (args.render.parent / "reliability.md").write_text(markdown(figures))
        return 0
    events = args.events or (QUICK_EVENTS if args.quick else EVENTS)
    plan = Plan.of(args.quick)
    from bench import report

    signal.signal(signal.SIGTERM, d._stop_on_sigterm)
    given = sys.argv[1:] if argv is None else argv
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    try:
        with LoadPeak() as load:
            result = run(events, plan)
    except BenchError as exc:
        print(f"bench.faults: {exc}", file=sys.stderr)
        return 1
    machine = report.machine_info(result["postgres_version"], "")
    machine.pop("wrk", None)
    figures = {
        "command": shlex.join(["python", "-m", "bench.faults", *given]),
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "load_max_during": round(load.peak, 2),
        "machine": machine,
        "redis_version": _redis_version(),
        "stack": "private PostgreSQL (fsync, synchronous_commit on) and redis-server; gunicorn "
        "2 sync workers; 2 celery worker processes (threads, 16) and celery beat, restarted "
        f"{RESTART_DELAY:.0f} s after they exit; production settings (bench/settings.py)",
        **figures_of(result, plan),
    }
    text = markdown(figures)
    print(text)
    if not args.no_docs:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "reliability.json").write_text(json.dumps(figures, indent=2) + "\n")
        (args.out_dir / "reliability.md").write_text(text)
        print(f"wrote {args.out_dir / 'reliability.md'} and reliability.json")
    held = all(ok for _, _, ok in verdicts(figures))
    return 0 if held else 3


if __name__ == "__main__":
    raise SystemExit(main())
