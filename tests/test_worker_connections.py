"""A worker process holds a bounded number of PostgreSQL connections, and a database that
refuses connections for a while delays deliveries by that while, not by the sweep's minute.

Four worker processes once ran a PostgreSQL with max_connections = 100 out of slots: each held
a connection per task thread and one per "late recorder" thread (up to 32). Tasks refused a
connection failed and were acknowledged, so their work waited for the sweep, and attempts
already sent but not recorded were sent again once their claim lapsed.

Private servers only: a PostgreSQL cluster of the module's own, started with a low
max_connections, a Redis of its own, real Celery workers and a real receiver. The workers'
connections are told apart by their application_name (libpq's PGAPPNAME).
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
import pytest

from tests import summary
from tests.servers import (
    FAST_DELIVERY_SETTINGS,
    ROOT,
    CeleryWorker,
    PrivatePostgres,
    PrivateRedis,
    Reply,
    wait_for,
)

pytestmark = pytest.mark.slow

CONCURRENCY = 8  # CeleryWorker's --concurrency: task threads per worker process
MAX_CONNECTIONS = 20
WORKER_APP = "kinetic-test-worker"
# Long enough that neither the sweep (re-queueing what waited this long) nor a lapsed claim can
# deliver anything while a test waits: what arrives was delivered by the worker itself.
NO_RESCUE = {"WEBHOOKS_REENQUEUE_AFTER": "300", "WEBHOOKS_CLAIM_LEASE_MARGIN": "300"}

_slugs = itertools.count(1)


@dataclass
class Servers:
    postgres: PrivatePostgres
    database_url: str
    redis: PrivateRedis
    # The test's own, opened once: a server out of slots must not fail the test's reads.
    connection: psycopg.Connection | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "TEST_DATABASE_URL": self.database_url,
            "TEST_CELERY_BROKER_URL": self.redis.url,
            "PGAPPNAME": "kinetic-test-setup",
            **FAST_DELIVERY_SETTINGS,
        }

    def django(self, code: str, *args: str) -> str:
        """Runs `code` in a Django process on these servers; its standard output."""
        result = subprocess.run(
            [sys.executable, "-c", f"import django\ndjango.setup()\n{code}", *args],
            cwd=ROOT, env=self.env(), check=True, capture_output=True, text=True,
        )  # fmt: skip
        return result.stdout

    def query(self, sql: str, params: list[object]) -> object:
        if self.connection is None:
            self.connection = psycopg.connect(self.database_url, autocommit=True)
        row = self.connection.execute(sql, params).fetchone()
        return row[0] if row else None


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    postgres = PrivatePostgres(max_connections=str(MAX_CONNECTIONS))
    redis = PrivateRedis()
    try:
        servers = Servers(postgres, postgres.create_database("kinetic"), redis)
        servers.django("from django.core.management import call_command\ncall_command('migrate')")
        servers.query("SELECT 1", [])
        yield servers
        if servers.connection is not None:
            servers.connection.close()
    finally:
        redis.destroy()
        postgres.destroy()


_SETUP = """
import json, sys
from accounts.services import organization_create
from webhooks.services import endpoint_create
environment = organization_create(slug=sys.argv[1]).environments.get(name="sandbox")
for path in json.loads(sys.argv[3]):
    endpoint_create(environment=environment, url=sys.argv[2] + path)
"""
_PUBLISH = """
import sys
from accounts.models import Environment
from deliveries.services import event_publish
environment = Environment.objects.get(organization__slug=sys.argv[1], name="sandbox")
for i in range(int(sys.argv[2])):
    print(event_publish(environment=environment, type="packet.created", data={"i": i}).public_id)
"""


def endpoints(servers: Servers, base_url: str, paths: list[str]) -> str:
    """A new organization whose sandbox has an endpoint per path; its slug."""
    slug = f"conn{next(_slugs)}"
    servers.django(_SETUP, slug, base_url, json.dumps(paths))
    return slug


def publish(servers: Servers, slug: str, count: int) -> list[str]:
    """`count` events, each committed on its own (its fan-out task queued at commit)."""
    return servers.django(_PUBLISH, slug, str(count)).split()


def problems(worker: CeleryWorker, last: int = 12) -> str:
    """The worker's last errors (and the delivery engine's warnings), for a failure's message."""
    lines = [
        line
        for line in worker.output().splitlines()
        if " ERROR " in line or (" WARNING deliveries." in line)
    ]
    return "\n".join(line[:300] for line in lines[-last:])


def succeeded(servers: Servers, events: list[str]) -> int:
    """How many deliveries of these events PostgreSQL has recorded as succeeded."""
    count = servers.query(
        "SELECT count(*) FROM deliveries_delivery d JOIN deliveries_event e "
        "ON e.id = d.event_id WHERE d.status = 'succeeded' AND e.public_id = ANY(%s)",
        [events],
    )
    return int(count)  # type: ignore[call-overload]


class ConnectionCounter(threading.Thread):
    """The most connections `application_name` held at once, sampled every 10 ms."""

    def __init__(self, postgres: PrivatePostgres, application_name: str) -> None:
        super().__init__(daemon=True)
        self.url, self.application_name = postgres.url(), application_name
        self.peak = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stopping.wait(0.01):
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    [self.application_name],
                ).fetchone()
                self.peak = max(self.peak, row[0] if row else 0)

    def __enter__(self) -> "ConnectionCounter":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join(10)


@contextmanager
def every_connection_slot_taken(postgres: PrivatePostgres) -> Iterator[int]:
    """Holds connections until PostgreSQL refuses one ("too many clients already")."""
    held: list[psycopg.Connection] = []
    try:
        while True:
            try:
                held.append(psycopg.connect(postgres.url(), connect_timeout=5))
            except psycopg.OperationalError as exc:
                assert "too many clients" in str(exc), exc
                break
            assert len(held) <= MAX_CONNECTIONS, "the server accepts more than max_connections"
        yield len(held)
    finally:
        for conn in held:
            conn.close()


def test_a_worker_holds_a_connection_per_task_thread_and_one_for_late_records(
    servers, receiver, pytestconfig
):
    """Every attempt outlives the task's first wave (the endpoints answer after 0.6 to 3.3 s),
    so each task leaves its attempts to be recorded as they end: by one thread per process, on
    one connection, where it was a thread and a connection per task's stragglers, each held
    from its first result to its last (past max_connections here)."""
    paths = [f"/slow{i}" for i in range(10)]
    for i, path in enumerate(paths):
        receiver.script(path, *[Reply(delay=0.6 + 0.3 * i)] * 100)
    slug = endpoints(servers, receiver.url, paths)
    worker = CeleryWorker(
        servers.database_url,
        servers.redis.url,
        PGAPPNAME=WORKER_APP,
        # Far past the slowest answer, however late the receiver reads one of 300 requests
        # opened at once: a timeout would be retried, and its event received twice.
        WEBHOOKS_DELIVERY_TIMEOUT="60",
        # Every attempt starts at once: none is postponed for its endpoint being busy, none
        # waits for a sending thread.
        WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="1000",
        WEBHOOKS_SEND_THREADS="300",
        # Connections kept between tasks, as deployed (the tests' default closes them after
        # each task, and a closing backend lingers in pg_stat_activity beside its successor).
        TEST_DATABASE_CONN_MAX_AGE="60",
        **NO_RESCUE,
    )
    try:
        with ConnectionCounter(servers.postgres, WORKER_APP) as connections:
            events = publish(servers, slug, 30)
            expected = len(events) * len(paths)
            try:
                wait_for(lambda: succeeded(servers, events) == expected, timeout=60)
            except AssertionError:
                raise AssertionError(
                    f"{succeeded(servers, events)} of {expected} deliveries recorded after 60 s; "
                    f"the worker's last errors:\n{problems(worker)}"
                ) from None
        log = worker.output()
    finally:
        worker.stop()

    assert connections.peak <= CONCURRENCY + 1, (
        f"the worker process held {connections.peak} connections at once"
    )
    assert "too many clients" not in log
    # Nothing was sent twice (an attempt recorded late or never is made again).
    got = Counter((r.headers["MD-Event-Id"], r.path) for r in receiver.received())
    assert set(got) == {(e, p) for e in events for p in paths}
    assert max(got.values()) == 1
    # ...nor recorded as succeeded twice. (On a busy machine an attempt may fail before the
    # receiver reads it, 300 connections opening at once, and succeed when retried.)
    succeeded_attempts = servers.query(
        "SELECT count(*) FROM deliveries_deliveryattempt a JOIN deliveries_delivery d "
        "ON d.id = a.delivery_id JOIN deliveries_event e ON e.id = d.event_id "
        "WHERE a.succeeded AND e.public_id = ANY(%s)",
        [events],
    )
    assert succeeded_attempts == expected
    peak = f"worker connections at most {connections.peak} ({CONCURRENCY} task threads)"
    summary.add(pytestconfig, [peak])


def test_a_worker_shutting_down_records_the_attempts_still_in_flight(servers, receiver):
    """The recorder thread outlives the tasks: a worker told to stop (warm shutdown) records
    the attempts its tasks left behind when they end, then exits, promptly and by itself."""
    # Replies 6 s late: the check that nothing succeeded before the stop has 5 s of margin
    # for a test process starved on a loaded machine.
    receiver.script("/late", *[Reply(delay=6.0)] * 10)
    slug = endpoints(servers, receiver.url, ["/late"])
    worker = CeleryWorker(
        servers.database_url, servers.redis.url, WEBHOOKS_DELIVERY_TIMEOUT="10", **NO_RESCUE
    )
    try:
        events = publish(servers, slug, 2)
        wait_for(lambda: len(receiver.received("/late")) == 2, timeout=30)
        time.sleep(1)  # past the tasks' first wave: the attempts are the recorder's now
        assert succeeded(servers, events) == 0
        stopping = time.monotonic()
        os.killpg(worker.process.pid, signal.SIGTERM)
        worker.process.wait(30)
        took = time.monotonic() - stopping
    finally:
        worker.stop()
    assert worker.process.returncode == 0
    assert succeeded(servers, events) == 2
    # A worker that does not exit by itself hangs until the 30 s wait above gives up; well short
    # of that, on however loaded a machine, it exited by itself.
    assert took < 25, f"the worker took {took:.1f} s to exit"


@pytest.mark.parametrize(
    "retry_in_place",
    ["10", "0"],
    ids=["retried-in-place", "retried-by-celery"],
)
def test_deliveries_go_out_as_soon_as_the_database_takes_connections_again(
    servers, receiver, retry_in_place, pytestconfig
):
    """The fan-out tasks meet a PostgreSQL out of connection slots. They wait it out (in
    place, or by Celery's retry when WEBHOOKS_DATABASE_RETRY_SECONDS is 0) and deliver within
    seconds of its coming back, where a failed task would have left them to the sweep."""
    slug = endpoints(servers, receiver.url, ["/refused"])
    events = publish(servers, slug, 3)  # their fan-out tasks wait in Redis: no worker yet
    worker = None
    try:
        with every_connection_slot_taken(servers.postgres) as held:
            assert held >= MAX_CONNECTIONS - 2  # the test's own connection is one
            worker = CeleryWorker(
                servers.database_url,
                servers.redis.url,
                PGAPPNAME=WORKER_APP,
                WEBHOOKS_DATABASE_RETRY_SECONDS=retry_in_place,
                **NO_RESCUE,
            )
            wait_for(lambda: "too many clients" in worker.output(), timeout=30)
            time.sleep(2)
            assert receiver.received("/refused") == []
        released = time.monotonic()
        try:
            wait_for(lambda: succeeded(servers, events) == len(events), timeout=30)
        except AssertionError:
            raise AssertionError(
                f"{succeeded(servers, events)} of {len(events)} deliveries recorded 30 s after "
                f"PostgreSQL took connections again; the worker's last errors:\n{problems(worker)}"
            ) from None
        took = time.monotonic() - released
    finally:
        if worker is not None:
            worker.stop()
    got = Counter(r.headers["MD-Event-Id"] for r in receiver.received("/refused"))
    assert got == dict.fromkeys(events, 1)
    how = "in place" if retry_in_place != "0" else "by Celery"
    after = f"delivered {took:.1f} s after PostgreSQL took connections again (retried {how})"
    summary.add(pytestconfig, [after])
