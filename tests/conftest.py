from collections import Counter
from typing import Any

import pytest
from django.conf import settings as django_settings

from tests import factories, summary
from tests.servers import CeleryWorker, PrivateRedis, Receiver, database_url

_redis: PrivateRedis | None = None


def pytest_configure(config: pytest.Config) -> None:
    """The suite's broker is a private Redis, so tests may flush or restart it freely.

    Celery reads its settings lazily, so changing them here (before any task is sent) is
    enough for this process; worker processes get the URL in their environment.
    """
    global _redis
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # pytest-xdist's controller: its workers run the tests, each with its own
    _redis = PrivateRedis()
    django_settings.CELERY_BROKER_URL = _redis.url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Two tests with one node id would be one to pytest-xdist, which runs bin/test's suite:
    it tells tests apart by node id, and would run only one of them."""
    twice = [nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1]
    if twice:
        raise pytest.UsageError(f"tests sharing a node id: {', '.join(twice)}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: its modules' summary lines go to the controller (below)."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["summary_lines"] = summary.lines(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller, as a worker ends: keeps the summary lines it sent."""
    output = getattr(node, "workeroutput", {})
    summary.add(node.config, output.get("summary_lines", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = summary.lines(terminalreporter.config)
    if lines:
        terminalreporter.section("summaries")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _redis is not None:
        _redis.destroy()


@pytest.fixture(scope="session")
def broker() -> PrivateRedis:
    assert _redis is not None
    return _redis


@pytest.fixture
def sandbox(db):
    return factories.environment(name="sandbox")


@pytest.fixture
def production(db):
    return factories.environment(name="production")


@pytest.fixture
def api(sandbox):
    """A client with a sandbox key holding every scope."""
    return factories.api_client(sandbox)


@pytest.fixture
def live_api(production):
    return factories.api_client(production)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def worker(request, django_db_setup, django_db_blocker, broker):
    """A real Celery worker (threads pool, embedded beat) for a module of end-to-end tests,
    with the module's WORKER_SETTINGS if it has them.

    Tests using it must be `transaction=True`: the worker sees only committed data.
    """
    with django_db_blocker.unblock():
        url = database_url()
    process = CeleryWorker(url, broker.url, **getattr(request.module, "WORKER_SETTINGS", {}))
    yield process
    process.stop()


@pytest.fixture(autouse=True, scope="session")
def _flushes_outwait_deadlocks():
    """pytest-django's table flush after a transactional test (one TRUNCATE of them all)
    looks for a deadlock after 30 s, not PostgreSQL's 1 s, in its own transaction alone.

    A worker still recording (the module's `worker` outlives its tests) can deadlock with it,
    and the waiter that looks first is the one aborted: that was the flush, which waited
    first, and the test failed in teardown. The worker's transaction, aborted instead, is
    tried again (deliveries.transient); the tests' own statements keep PostgreSQL's second.
    deadlock_timeout is a superuser's setting: under another role, flushes keep the default.
    Nothing here touches the database before a flush does: a run of tests that use none
    sets none up (pytest-django), and has none to connect to."""
    from django.db import connection

    with connection.execute_wrapper(_flush_outwaits_deadlocks):
        yield


def _flush_outwaits_deadlocks(execute, sql, params, many, context):
    if not sql.lstrip().upper().startswith("TRUNCATE"):
        return execute(sql, params, many, context)
    # The server reports is_superuser as the connection starts (psycopg's ConnectionInfo).
    if context["connection"].connection.info.parameter_status("is_superuser") == "on":
        execute("SET LOCAL deadlock_timeout = '30s'", None, False, context)
    return execute(sql, params, many, context)


@pytest.fixture
def history_as_migrated(transactional_db):
    """The history tables as the migration leaves them, once the test is done: a catch-all
    `p0` partition below today's first event id, and the id sequences at 1. For a test that
    moves the days on or prunes them (retention drops p0): the volume bench's fill, in
    another module, needs p0 there and empty, whichever module ran first."""
    from django.db import connection
    from django.utils import timezone

    from bench import volume_fill
    from deliveries import partitions

    yield
    first = partitions.day_number(timezone.now()) * partitions.SPAN
    with connection.cursor() as cursor:
        for partition in partitions.partitions():
            for table in partitions.history_tables():
                cursor.execute(f"DROP TABLE {table}_{partition.suffix}")
        for table in partitions.history_tables():
            cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), 1, false)", [table])
    volume_fill.catch_all_partitions(first)


@pytest.fixture
def private_worker(django_db_setup, django_db_blocker, broker):
    """A worker of the test's own, to kill or to starve."""
    with django_db_blocker.unblock():
        url = database_url()
    processes: list[CeleryWorker] = []

    def start(**settings: str) -> CeleryWorker:
        processes.append(CeleryWorker(url, broker.url, **settings))
        return processes[-1]

    yield start
    for process in processes:
        process.stop()
