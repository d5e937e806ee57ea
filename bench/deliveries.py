"""Delivery workloads on the real stack: PostgreSQL, Redis, Celery worker and beat, a receiver.

    python -m bench.deliveries [--quick] [--workers N]

Starts a private redis-server, a fast receiver (bench/receiver.py, which verifies every
signature), `celery worker` processes and `celery beat` with the bench settings on a fresh
bench database, then measures, after a warm-up:
- throughput: EVENTS events x 10 endpoints published as fast as one producer can, until every
  delivery is recorded as succeeded in PostgreSQL; beside it, a bare requests.Session loop
  posting the same signed bodies with the same concurrency, in two processes;
- latency at rest: publish-to-receipt p50/p99 at half the 1,000/s target (50 events/s x 10);
- fan-out: one event to FANOUT endpoints, seconds to the last receipt, against the same number
  of independent deliveries;
- a dead endpoint: 20 endpoints, one never answering: healthy deliveries' p99, against the same
  run without it.
Prints a table and, last, one JSON object.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.config import REPO_ROOT, SETTINGS_MODULE, BenchError

RECEIVER_PORT_ENV = "BENCH_RECEIVER_PORT"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.3)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


class Receiver:
    def __init__(
        self, workdir: Path, secrets: dict[str, str], dead: list[str], port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / f"receiver-{self.port}.json"
        self.out = workdir / f"received-{self.port}.json"
        self.config.write_text(json.dumps({"secrets": secrets, "dead_paths": dead}))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", str(self.port), str(self.config),
             str(self.out)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)

    def finish(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        return dict(json.loads(self.out.read_text()))


class Celery:
    """`celery worker` processes (and beat) with the bench settings."""

    def __init__(self, env: dict[str, str], workers: int, workdir: Path) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log = (workdir / "celery.log").open("ab")
        for i in range(workers):
            worker = ["worker", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
            self._spawn(env, [*worker, "--hostname", f"bench{i}@%h"])
        self._spawn(env, ["beat", "--loglevel", "WARNING", "-s", str(workdir / "beat-schedule")])
        time.sleep(4)

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

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.log.close()


def make_endpoints(environment: Any, port: int, count: int, prefix: str) -> dict[str, str]:
    """`count` endpoints at http://127.0.0.1:port/<prefix><i>; returns path -> secret."""
    from webhooks.services import endpoint_create

    secrets = {}
    for i in range(count):
        path = f"/{prefix}{i}"
        created = endpoint_create(environment=environment, url=f"http://127.0.0.1:{port}{path}")
        secrets[path] = created.signing_secret
    return secrets


def receiver_for(
    workdir: Path, environment: Any, count: int, prefix: str, dead: list[str] | None = None
) -> tuple["Receiver", dict[str, str]]:
    """Endpoints in `environment` and the receiver (knowing their secrets) they point at."""
    port = free_port()
    secrets = make_endpoints(environment, port, count, prefix)
    return Receiver(workdir, secrets, dead or [], port=port), secrets


def publish(environment: Any, count: int, rate: float | None = None) -> dict[str, float]:
    """Publishes `count` events (each in its own transaction); event id -> publish time."""
    from django.db import transaction

    from deliveries.services import event_publish

    published: dict[str, float] = {}
    started = time.monotonic()
    for i in range(count):
        if rate:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        with transaction.atomic():
            event = event_publish(environment=environment, type="judgment.created", data={"i": i})
        published[event.public_id] = time.time()
    return published


def wait_recorded(environment: Any, expected: int, timeout: float) -> float:
    """Waits until `expected` deliveries of the environment are recorded as succeeded."""
    from deliveries.models import Delivery

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = Delivery.objects.filter(
            endpoint__environment=environment, status=Delivery.Status.SUCCEEDED
        ).count()
        if done >= expected:
            return time.time()
        time.sleep(0.05)
    raise BenchError(f"only {done} of {expected} deliveries recorded after {timeout:.0f} s")


def new_environment(slug: str) -> Any:
    from accounts.services import organization_create

    return organization_create(slug=slug).environments.get(name="sandbox")


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
    for child in children:
        child.wait()
    total = len(json.loads(bodies_file.read_text()))
    return total / (time.monotonic() - started)


def signed_bodies(receiver: Receiver, secrets: dict[str, str], events: int) -> list[Any]:
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
            items.append((f"{receiver.url}{path}", body.decode(), headers))
    return items


def run(args: argparse.Namespace) -> dict[str, float]:
    scale = 10 if args.quick else 1
    events = 1000 // scale
    fanout = 10_000 // scale
    workdir = Path(tempfile.mkdtemp(prefix="kinetic-bench-"))
    results: dict[str, float] = {}
    try:
        with redis_server(workdir) as broker:
            os.environ["BENCH_CELERY_BROKER_URL"] = broker
            os.environ["WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS"] = "true"
            os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
            import django

            django.setup()
            from django.conf import settings

            settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
            from bench import stack
            from bench.config import database_config

            env = dict(os.environ)
            with stack.bench_database(database_config()):
                celery = Celery(env, args.workers, workdir)
                try:
                    results.update(_measure(workdir, events, fanout, celery))
                finally:
                    celery.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _measure(workdir: Path, events: int, fanout: int, celery: Celery) -> dict[str, float]:
    results: dict[str, float] = {}
    # Throughput: events x 10 endpoints, as fast as one producer publishes.
    warm = new_environment("warmup")
    receiver, _ = receiver_for(workdir, warm, 10, "w")
    publish(warm, 20)
    wait_recorded(warm, 200, 60)
    receiver.finish()
    environment = new_environment("throughput")
    receiver, secrets = receiver_for(workdir, environment, 10, "e")
    started = time.time()
    published = publish(environment, events)
    finished = wait_recorded(environment, events * 10, 600)
    got = receiver.finish()
    results["deliveries_per_s"] = events * 10 / (finished - started)
    results["publish_per_s"] = events / (max(published.values()) - started)
    results["invalid_signatures"] = got["invalid"]

    # The ceiling, same bodies and concurrency, one process and two.
    receiver = Receiver(workdir, secrets, [], port=receiver.port)
    bodies = signed_bodies(receiver, secrets, events)
    bodies_file = workdir / "bodies.json"
    bodies_file.write_text(json.dumps(bodies))
    threads = int(os.environ.get("WEBHOOKS_SEND_THREADS", "64"))
    results["bare_loop_1proc_per_s"] = bare_loop_processes(bodies_file, 1, threads)
    results["bare_loop_per_s"] = bare_loop_processes(bodies_file, 2, threads // 2)
    receiver.finish()

    # Publish-to-receipt latency at half the target rate, and at rest (50 deliveries/s).
    p50, p99 = _latency(workdir, "latency", max(50, events // 5), rate=50)
    results["delivery_p50_ms"], results["delivery_p99_ms"] = p50, p99
    p50, p99 = _latency(workdir, "rest", 50, rate=5)
    results["rest_50_per_s_p50_ms"], results["rest_50_per_s_p99_ms"] = p50, p99

    # Fan-out: one event to `fanout` endpoints.
    from deliveries.models import Delivery

    fan_env = new_environment("fanout")
    receiver, _ = receiver_for(workdir, fan_env, fanout, "f")
    started = time.time()
    publish(fan_env, 1)
    wait_recorded(fan_env, fanout, 600)
    got = receiver.finish()
    last = max(t for _, _, t in got["received"])
    results["fanout_seconds"] = last - started
    independent = fanout / results["deliveries_per_s"]
    results["fanout_ratio"] = results["fanout_seconds"] / independent
    del Delivery

    # A dead endpoint among 20, against none.
    p99 = {}
    for label, dead in (("without", False), ("with", True)):
        slow_env = new_environment(f"slow-{label}")
        receiver, _ = receiver_for(workdir, slow_env, 20, "s", ["/s0"] if dead else [])
        published = publish(slow_env, max(30, events // 10), rate=10)
        time.sleep(3)
        got = receiver.finish()
        healthy = [(t - published[e]) * 1000 for e, p, t in got["received"] if e in published]
        p99[label] = percentile(healthy, 0.99)
    results["healthy_p99_ms_without_dead"] = p99["without"]
    results["healthy_p99_ms_with_dead"] = p99["with"]
    results["slow_endpoint_p99_ratio"] = p99["with"] / p99["without"]
    return results


def _latency(workdir: Path, name: str, events: int, rate: float) -> tuple[float, float]:
    """p50 and p99 publish-to-receipt (ms) of `events` events x 10 endpoints at `rate`/s."""
    environment = new_environment(name)
    receiver, _ = receiver_for(workdir, environment, 10, name[0])
    published = publish(environment, events, rate=rate)
    wait_recorded(environment, len(published) * 10, 300)
    got = receiver.finish()
    latencies = [(t - published[e]) * 1000 for e, _, t in got["received"] if e in published]
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


def _bare_loop_child(bodies_file: str, index: int, processes: int, threads: int) -> None:
    items = json.loads(Path(bodies_file).read_text())[index::processes]
    bare_loop([(u, b.encode(), h) for u, b, h in items], threads)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--bare-loop":
        _bare_loop_child(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.deliveries")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="celery worker processes")
    args = parser.parse_args(argv)
    results = run(args)
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:,.1f}")
    print(json.dumps({k: round(v, 2) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
