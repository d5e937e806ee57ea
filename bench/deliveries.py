"""Delivery workloads on the real stack: PostgreSQL, Redis, Celery worker and beat, a receiver.

    python -m bench.deliveries [--quick] [--workers N]

Starts a private redis-server, a fast receiver (bench/receiver.py, which verifies every
signature), `celery worker` processes and `celery beat` with the bench settings on a fresh
bench database, then measures, after a warm-up:
- throughput: EVENTS events x 10 endpoints published as fast as PRODUCERS threads can (each
  event in its own transaction), until every delivery is recorded as succeeded in PostgreSQL;
  beside it, a bare requests.Session loop posting the same signed bodies with the same
  concurrency, in one process and in two;
- latency: publish-to-receipt p50/p99 at half the 1,000/s target (50 events/s x 10), and at
  rest (5 events/s x 10);
- fan-out: one event to FANOUT endpoints, seconds to the last receipt, against the same number
  of independent deliveries;
- a dead endpoint: 20 endpoints, one never answering: healthy deliveries' p99, against the same
  run without it.
Prints a table and, last, one JSON object. `python -m bench` runs the same workloads (by the
functions below) beside the API ones; this command runs them alone.
"""

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
from bench.config import REPO_ROOT, SETTINGS_MODULE, BenchError

ENDPOINTS_PER_EVENT = 10
WARMUP_EVENTS = 20
LATENCY_RATE = 50.0  # events/s x 10 endpoints: half the 1,000 deliveries/s target
REST_RATE = 5.0
DEAD_ENDPOINT_RATE = 10.0
DEAD_ENDPOINTS = 20  # one of them never answers
# Producer threads of the throughput run. One thread waiting on each commit and broker round
# trip in turn published 30-200 events/s on this machine (less when it was busy): too close to
# the 100 events/s that 1,000 deliveries/s needs.
PRODUCERS = 4


@dataclass(frozen=True)
class Sizes:
    """How much each workload sends; `--quick` is a tenth of it."""

    events: int  # throughput: events x 10 endpoints
    fanout: int  # endpoints of the one fan-out event
    latency_events: int
    dead_events: int

    @classmethod
    def of(cls, quick: bool) -> "Sizes":
        scale = 10 if quick else 1
        events = 1000 // scale
        return cls(
            events=events,
            fanout=10_000 // scale,
            latency_events=max(50, events // 5),
            dead_events=max(30, events // 10),
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    """Until something accepts connections on 127.0.0.1:port (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited with {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass(frozen=True)
class Broker:
    url: str
    pid: int


@contextmanager
def redis_server(workdir: Path) -> Iterator[Broker]:
    """A private redis-server on a free port, never the shared one; stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, process, "redis-server", 10)
        yield Broker(url=f"redis://127.0.0.1:{port}/0", pid=process.pid)
    finally:
        stop_process(process)


@contextmanager
def broker_environment(workdir: Path) -> Iterator[Broker]:
    """The private broker, in the environment before Django reads its settings: the bench
    process (the producer) and the Celery processes it starts then all use it."""
    with redis_server(workdir) as broker:
        previous = os.environ.get("BENCH_CELERY_BROKER_URL")
        os.environ["BENCH_CELERY_BROKER_URL"] = broker.url
        try:
            yield broker
        finally:
            if previous is None:
                os.environ.pop("BENCH_CELERY_BROKER_URL", None)
            else:
                os.environ["BENCH_CELERY_BROKER_URL"] = previous


class Receiver:
    def __init__(
        self,
        workdir: Path,
        secrets: dict[str, str],
        dead: list[str],
        port: int | None = None,
        delays: dict[str, float] | None = None,
        failing_paths: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / f"receiver-{self.port}.json"
        self.out = workdir / f"received-{self.port}.json"
        self.out.unlink(missing_ok=True)
        config = {
            "secrets": secrets,
            "dead_paths": dead,
            "delays": delays or {},
            "failing_paths": failing_paths or [],
        }
        self.config.write_text(json.dumps(config))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", str(self.port), str(self.config),
             str(self.out)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(self.port, self.process, "the receiver", 15)
        except BaseException:
            stop_process(self.process)
            raise

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def toggle_failing(self) -> None:
        """Its `failing_paths` start (or stop) answering 503."""
        self.process.send_signal(signal.SIGUSR1)

    def finish(self) -> dict[str, Any]:
        """Stops it; what it received: `{"received": [[event, path, time], ...], "invalid", ...}`
        (all of it in bench/receiver.py's docstring)."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        return dict(json.loads(self.out.read_text()))


class Celery:
    """`celery worker` processes (and beat) with the bench settings."""

    def __init__(self, env: dict[str, str], workers: int, workdir: Path) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log = (workdir / "celery.log").open("ab")
        try:
            for i in range(workers):
                worker = ["worker", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
                self._spawn(env, [*worker, "--hostname", f"bench{i}@%h"])
            schedule = workdir / "beat-schedule"
            self._spawn(env, ["beat", "--loglevel", "WARNING", "-s", str(schedule)])
            time.sleep(4)
            for process in self.processes:
                if process.poll() is not None:
                    raise BenchError(f"celery exited with {process.returncode}; see its log")
        except BaseException:
            self.stop()
            raise

    def _spawn(self, env: dict[str, str], args: list[str]) -> None:
        self.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
        )

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.processes[:-1]]

    def beat_pid(self) -> int:
        return self.processes[-1].pid

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.log.close()


_environment_numbers = itertools.count(1)


class DeliveryStack:
    """Celery and the receivers for the delivery workloads, on a broker already running.

    Celery starts on first use, with a warm-up (WARMUP_EVENTS x 10 deliveries) before any
    workload measures; `stop_celery()` frees the CPUs for the next workload and `close()`
    stops everything still running, receivers included, however the run ends.
    """

    def __init__(self, workdir: Path, broker: Broker, workers: int) -> None:
        from django.conf import settings

        self.workdir = workdir
        self.broker = broker
        self.workers = workers
        self._celery: Celery | None = None
        self._receivers: list[Receiver] = []
        # Receivers live on 127.0.0.1. Set here, not before the API workloads: gunicorn and
        # the API's URL policy keep the production rule.
        settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            "BENCH_CELERY_BROKER_URL": broker.url,
            "WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS": "true",
        }

    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = Celery(self.env, self.workers, self.workdir)
            warm_up(self)
        return self._celery

    def stop_celery(self) -> None:
        celery, self._celery = self._celery, None
        if celery is not None:
            celery.stop()

    def environment(self, name: str) -> Any:
        """A new organization's sandbox, named uniquely within the run (stacks come and go
        on one database)."""
        return new_environment(f"{name}-{next(_environment_numbers)}")

    def receiver(
        self, environment: Any, count: int, prefix: str, dead: list[str] | None = None
    ) -> tuple[Receiver, dict[str, str]]:
        """`count` endpoints in `environment` and a receiver (knowing their secrets) for them."""
        port = free_port()
        secrets = make_endpoints(environment, port, count, prefix)
        return self.start_receiver(secrets, dead or [], port), secrets

    def start_receiver(
        self,
        secrets: dict[str, str],
        dead: list[str],
        port: int,
        delays: dict[str, float] | None = None,
    ) -> Receiver:
        self._receivers = [r for r in self._receivers if r.running]
        receiver = Receiver(self.workdir, secrets, dead, port=port, delays=delays)
        self._receivers.append(receiver)
        return receiver

    def receiver_pids(self) -> list[int]:
        return [r.process.pid for r in self._receivers if r.running]

    def cpu_groups(self) -> dict[str, procs.GroupFinder]:
        """The processes a delivery run uses, by role, for `procs.CpuSampler`."""
        from django.db import connection

        celery = self.celery()
        database = connection.settings_dict["NAME"]
        return {
            "celery_workers": procs.pids_of(*celery.worker_pids()),
            "celery_beat": procs.pids_of(celery.beat_pid()),
            "postgres_backends": lambda ps: procs.postgres_backends(database, ps),
            "postgres_server": procs.postgres_server,
            "redis": procs.pids_of(self.broker.pid),
            "receiver": lambda ps: [p for r in self.receiver_pids() for p in procs.tree(r, ps)],
            # Alone: everything above is its child.
            "bench_process": procs.pids_of(os.getpid(), children=False),
        }

    def close(self) -> None:
        try:
            self.stop_celery()
        finally:
            for receiver in self._receivers:
                stop_process(receiver.process)


@contextmanager
def delivery_stack(workdir: Path, broker: Broker, workers: int) -> Iterator[DeliveryStack]:
    stack = DeliveryStack(workdir, broker, workers)
    try:
        yield stack
    finally:
        stack.close()


def make_endpoints(
    environment: Any, port: int, count: int, prefix: str, **fields: Any
) -> dict[str, str]:
    """`count` endpoints at http://127.0.0.1:port/<prefix><i>, each made with `fields` (a rate
    limit, an order, events); returns path -> secret."""
    from webhooks.services import endpoint_create

    secrets = {}
    for i in range(count):
        path = f"/{prefix}{i}"
        url = f"http://127.0.0.1:{port}{path}"
        secrets[path] = endpoint_create(environment=environment, url=url, **fields).signing_secret
    return secrets


def fanned_out_events(
    environment: Any, times: list[Any], event_type: str = "judgment.created", first: int = 0
) -> list[Any]:
    """Events of the environment, one made at each of `times`, saved in bulk and marked fanned
    out (their deliveries are the caller's to make), the k-th with data {"i": first + k}."""
    from deliveries.models import Event
    from deliveries.services import event_born_fanned_out

    events = [
        event_born_fanned_out(environment, event_type, {"i": first + k}, at)
        for k, at in enumerate(times)
    ]
    return list(Event.objects.bulk_create(events))


def publish(
    environment: Any,
    count: int,
    rate: float | None = None,
    per_transaction: int = 1,
    event_type: str = "judgment.created",
) -> dict[str, float]:
    """Publishes `count` events with the product's `event_publish`, `per_transaction` to a
    transaction (their fan-outs are queued at each commit); event id -> publish time."""
    from django.db import transaction

    from deliveries.services import event_publish

    published: dict[str, float] = {}
    started = time.monotonic()
    i = 0
    while i < count:
        if rate:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ids = []
        with transaction.atomic():
            for j in range(i, min(count, i + per_transaction)):
                data = {"i": j}
                event = event_publish(environment=environment, type=event_type, data=data)
                ids.append(event.public_id)
        now = time.time()
        published.update(dict.fromkeys(ids, now))
        i += len(ids)
    return published


def publish_concurrently(
    environment: Any, count: int, producers: int, event_type: str = "judgment.created"
) -> dict[str, float]:
    """`count` events from `producers` threads, each event in its own transaction, as
    concurrent API requests publish them: one thread waits on every commit and broker round
    trip in turn, and would cap the throughput run below what the service drains."""
    from django.db import connection

    def share(index: int) -> dict[str, float]:
        try:
            return publish(environment, len(range(index, count, producers)), event_type=event_type)
        finally:
            connection.close()  # this thread's own connection

    published: dict[str, float] = {}
    with ThreadPoolExecutor(producers, thread_name_prefix="producer") as pool:
        for part in pool.map(share, range(producers)):
            published.update(part)
    return published


def recorded(environment: Any) -> int:
    from deliveries.models import Delivery

    return Delivery.objects.filter(
        endpoint__environment=environment, status=Delivery.Status.SUCCEEDED
    ).count()


def wait_recorded(
    environment: Any,
    expected: int,
    timeout: float,
    *,
    poll: float = 0.05,
    stalled_after: float = 120.0,
    progress_every: float | None = None,
) -> float:
    """Waits until `expected` deliveries of the environment are recorded as succeeded; returns
    the time it saw them. Gives up after `timeout`, or after `stalled_after` s without one.

    The count is asked every `poll` seconds near the end, less often before (a quarter of the
    time the rate since the last count says is left, at most 0.5 s): near the end of a
    10,000-delivery run it costs PostgreSQL ~5 ms, and asked every 50 ms throughout it took
    ~5% of a core from the run it was timing. The rate since the last count, not the run's
    average: a rate-limited tail after the others have finished (bench.control) is far
    slower than the average, which had the count asked every 50 ms all through it, about 100
    counts of 15 ms each. The end is still seen within `poll`."""
    started = deadline = time.monotonic()
    deadline += timeout
    done, last_change, last_print = -1, started, started
    first: int | None = None
    last: tuple[float, int] | None = None  # the count before this one, and when
    while time.monotonic() < deadline:
        count = recorded(environment)
        now = time.monotonic()
        first = count if first is None else first
        if count != done:
            done, last_change = count, now
        if done >= expected:
            return time.time()
        if now - last_change > stalled_after:
            raise BenchError(f"deliveries stalled at {done} of {expected} for {stalled_after} s")
        if progress_every and now - last_print >= progress_every:
            rate = (done - first) / (now - started)
            print(f"    {done:,} of {expected:,} recorded ({rate:,.0f}/s)", flush=True)
            last_print = now
        rate = (done - last[1]) / (now - last[0]) if last and now > last[0] else 0.0
        if rate <= 0:  # none since the last count: the run's average, not a 50 ms poll
            rate = (done - first) / (now - started) if now > started else 0.0
        last = (now, done)
        left = (expected - done) / rate if rate > 0 else 0.0
        time.sleep(min(max(poll, left / 4), max(poll, 0.5)))
    raise BenchError(f"only {done} of {expected} deliveries recorded after {timeout:.0f} s")


def new_environment(slug: str) -> Any:
    from accounts.services import organization_create

    return organization_create(slug=slug).environments.get(name="sandbox")


def warm_up(stack: DeliveryStack) -> None:
    """Every process connected and every code path loaded before anything is measured."""
    environment = stack.environment("warmup")
    receiver, _ = stack.receiver(environment, ENDPOINTS_PER_EVENT, "w")
    publish(environment, WARMUP_EVENTS)
    wait_recorded(environment, WARMUP_EVENTS * ENDPOINTS_PER_EVENT, 120)
    receiver.finish()


# --- throughput ------------------------------------------------------------------------------


class ConnectionPeak(threading.Thread):
    """The most PostgreSQL connections open at once, to the bench database and to the whole
    server, sampled every 0.2 s on a connection of its own (opened first, so a server out of
    slots is still seen)."""

    def __init__(self) -> None:
        super().__init__(name="bench-connections", daemon=True)
        from django.db import connection

        params = connection.get_connection_params()
        self.database = connection.settings_dict["NAME"]
        self.params = {k: params[k] for k in ("host", "port", "user", "password") if k in params}
        self.bench = self.server = self.max_connections = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(dbname="postgres", autocommit=True, **self.params) as conn:
            row = conn.execute("SHOW max_connections").fetchone()
            self.max_connections = int(row[0]) if row else 0
            while not self.stopping.wait(0.2):
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE datname = %s), count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend'",
                    [self.database],
                ).fetchone()
                if row:
                    self.bench, self.server = max(self.bench, row[0]), max(self.server, row[1])

    def __enter__(self) -> "ConnectionPeak":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join(5)


@dataclass
class Throughput:
    deliveries: int
    seconds: float  # first publish to the last delivery recorded
    publish_per_s: float
    invalid_signatures: int
    cpu: procs.CpuUsage
    secrets: dict[str, str]
    receiver_port: int
    connections: ConnectionPeak

    @property
    def per_s(self) -> float:
        return self.deliveries / self.seconds


def measure_throughput(stack: DeliveryStack, events: int) -> Throughput:
    """`events` x 10 endpoints published as fast as PRODUCERS threads can; the clock runs from
    the first publish until PostgreSQL has every delivery recorded as succeeded. CPU time per
    group of processes is sampled meanwhile."""
    stack.celery()
    environment = stack.environment("throughput")
    receiver, secrets = stack.receiver(environment, ENDPOINTS_PER_EVENT, "e")
    with procs.CpuSampler(stack.cpu_groups()) as sampler, ConnectionPeak() as connections:
        started = time.time()
        published = publish_concurrently(environment, events, PRODUCERS)
        finished = wait_recorded(environment, events * ENDPOINTS_PER_EVENT, 600)
    got = receiver.finish()
    assert sampler.usage is not None
    return Throughput(
        deliveries=events * ENDPOINTS_PER_EVENT,
        seconds=finished - started,
        publish_per_s=events / max(max(published.values()) - started, 1e-6),
        invalid_signatures=int(got["invalid"]),
        cpu=sampler.usage,
        secrets=secrets,
        receiver_port=receiver.port,
        connections=connections,
    )


def measure_ceiling(stack: DeliveryStack, run: Throughput, events: int) -> tuple[float, float]:
    """The bare loop's deliveries/s in one process and in two: the same signed bodies to the
    same receiver, as many in flight as a worker sends (WEBHOOKS_SEND_THREADS)."""
    receiver = stack.start_receiver(run.secrets, [], run.receiver_port)
    bodies_file = stack.workdir / "bodies.json"
    bodies_file.write_text(json.dumps(signed_bodies(receiver.url, run.secrets, events)))
    threads = int(stack.env.get("WEBHOOKS_SEND_THREADS", "64"))
    one = bare_loop_processes(bodies_file, 1, threads)
    two = bare_loop_processes(bodies_file, 2, threads // 2)
    receiver.finish()
    return one, two


def bare_loop(url_bodies: list[tuple[str, bytes, dict[str, str]]], threads: int) -> float:
    """The ceiling: the same signed bodies from one pooled Session, `threads` at a time."""
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=threads)
    session.mount("http://", adapter)
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda item: session.post(item[0], data=item[1], headers=item[2], timeout=15),
                url_bodies,
            )
        )
    return len(url_bodies) / (time.monotonic() - started)


def bare_loop_processes(bodies_file: Path, processes: int, threads: int) -> float:
    """`processes` bare loops at once (each posting its share); deliveries per second overall."""
    started = time.monotonic()
    command = [sys.executable, "-m", "bench.deliveries", "--bare-loop", str(bodies_file)]
    children = [
        subprocess.Popen([*command, str(i), str(processes), str(threads)], cwd=REPO_ROOT)
        for i in range(processes)
    ]
    try:
        for child in children:
            if child.wait(600) != 0:
                raise BenchError(f"a bare loop exited with {child.returncode}")
    finally:
        for child in children:
            stop_process(child, 5)
    total = len(json.loads(bodies_file.read_text()))
    return total / (time.monotonic() - started)


def signed_bodies(base_url: str, secrets: dict[str, str], events: int) -> list[Any]:
    from deliveries.signature import sign

    items = []
    for i in range(events):
        body = json.dumps({"id": f"evt_bare{i}", "data": {"i": i}}).encode()
        for path, secret in secrets.items():
            headers = {
                "Content-Type": "application/json",
                "MD-Signature": sign(body, [secret]),
                "MD-Event-Id": f"evt_bare{i}",
            }
            items.append((f"{base_url}{path}", body.decode(), headers))
    return items


# --- latency, fan-out, a dead endpoint -------------------------------------------------------


def measure_latency(stack: DeliveryStack, name: str, events: int, rate: float) -> list[float]:
    """Publish-to-receipt times (ms) of `events` events x 10 endpoints published at `rate`/s."""
    stack.celery()
    environment = stack.environment(name)
    receiver, _ = stack.receiver(environment, ENDPOINTS_PER_EVENT, name[0])
    published = publish(environment, events, rate=rate)
    wait_recorded(environment, len(published) * ENDPOINTS_PER_EVENT, 300)
    got = receiver.finish()
    return [(t - published[e]) * 1000 for e, _, t in got["received"] if e in published]


def measure_fanout(stack: DeliveryStack, endpoints: int) -> float:
    """Seconds from publishing one event to the receipt of its last of `endpoints` deliveries."""
    stack.celery()
    environment = stack.environment("fanout")
    receiver, _ = stack.receiver(environment, endpoints, "f")
    started = time.time()
    publish(environment, 1)
    wait_recorded(environment, endpoints, 600)
    got = receiver.finish()
    return max(t for _, _, t in got["received"]) - started


def measure_dead_endpoint(stack: DeliveryStack, events: int) -> tuple[float, float]:
    """Healthy deliveries' p99 (ms) among 20 endpoints without, then with, one that never
    answers; `events` events at DEAD_ENDPOINT_RATE/s each time."""
    stack.celery()
    p99 = {}
    for label, dead in (("without", False), ("with", True)):
        environment = stack.environment(f"slow-{label}")
        receiver, _ = stack.receiver(environment, DEAD_ENDPOINTS, "s", ["/s0"] if dead else [])
        published = publish(environment, events, rate=DEAD_ENDPOINT_RATE)
        # Every healthy delivery, however late: a tail cut off by a deadline is no tail.
        healthy_endpoints = DEAD_ENDPOINTS - 1 if dead else DEAD_ENDPOINTS
        wait_recorded(environment, events * healthy_endpoints, 120)
        got = receiver.finish()
        healthy = [(t - published[e]) * 1000 for e, p, t in got["received"] if e in published]
        p99[label] = percentile(healthy, 0.99)
        if dead:  # its retries end here, not in the workloads after this one
            from webhooks.models import WebhookEndpoint
            from webhooks.services import endpoint_delete

            for endpoint in WebhookEndpoint.objects.filter(environment=environment):
                if endpoint.url.endswith("/s0"):
                    endpoint_delete(endpoint=endpoint)
    return p99["without"], p99["with"]


# --- python -m bench.deliveries --------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, float]:
    sizes = Sizes.of(args.quick)
    return on_a_stack(args.workers, lambda stack: measure_all(stack, sizes))


def on_a_stack(
    workers: int, measure: Callable[[DeliveryStack], dict[str, float]]
) -> dict[str, float]:
    """`measure(stack)` on a private broker, a fresh bench database and `workers` Celery
    worker processes; everything stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="kinetic-bench-"))
    try:
        with broker_environment(workdir) as broker:
            os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
            import django

            django.setup()
            from bench import stack as servers
            from bench.config import database_config

            with (
                servers.bench_database(database_config()),
                delivery_stack(workdir, broker, workers) as stack,
            ):
                return measure(stack)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure_all(stack: DeliveryStack, sizes: Sizes) -> dict[str, float]:
    results: dict[str, float] = {}
    throughput = measure_throughput(stack, sizes.events)
    results["deliveries_per_s"] = throughput.per_s
    results["publish_per_s"] = throughput.publish_per_s
    results["invalid_signatures"] = throughput.invalid_signatures
    one, two = measure_ceiling(stack, throughput, sizes.events)
    results["bare_loop_1proc_per_s"], results["bare_loop_per_s"] = one, two

    latencies = measure_latency(stack, "latency", sizes.latency_events, LATENCY_RATE)
    results["delivery_p50_ms"] = percentile(latencies, 0.5)
    results["delivery_p99_ms"] = percentile(latencies, 0.99)
    latencies = measure_latency(stack, "rest", 50, REST_RATE)
    results["rest_50_per_s_p50_ms"] = percentile(latencies, 0.5)
    results["rest_50_per_s_p99_ms"] = percentile(latencies, 0.99)

    results["fanout_seconds"] = measure_fanout(stack, sizes.fanout)
    independent = sizes.fanout / throughput.per_s
    results["fanout_ratio"] = results["fanout_seconds"] / independent

    without, with_dead = measure_dead_endpoint(stack, sizes.dead_events)
    results["healthy_p99_ms_without_dead"] = without
    results["healthy_p99_ms_with_dead"] = with_dead
    results["slow_endpoint_p99_ratio"] = with_dead / without
    return results


def _bare_loop_child(bodies_file: str, index: int, processes: int, threads: int) -> None:
    items = json.loads(Path(bodies_file).read_text())[index::processes]
    bare_loop([(u, b.encode(), h) for u, b, h in items], threads)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--bare-loop":
        _bare_loop_child(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.deliveries")
    parser.add_argument("--quick", action="store_true", help="a tenth of every workload's size")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="celery worker processes"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        results = run(args)
    except BenchError as exc:
        print(f"bench.deliveries: {exc}", file=sys.stderr)
        return 1
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:,.1f}")
    print(json.dumps({k: round(v, 2) for k, v in results.items()}))
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the context managers: cleanup runs


if __name__ == "__main__":
    raise SystemExit(main())
