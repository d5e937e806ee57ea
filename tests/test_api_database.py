"""What an API request asks of PostgreSQL: few queries, no writes on reads, and no failure when
the connection kept from an earlier request has died meanwhile."""

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext


def test_list_and_retrieve_run_two_queries_and_write_nothing(api):
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    api.get("/v1/webhook_endpoints")  # the key's last use is recorded (at most once a minute)
    for path in ("/v1/webhook_endpoints?limit=20", f"/v1/webhook_endpoints/{endpoint_id}"):
        with CaptureQueriesContext(connection) as queries:
            assert api.get(path).status_code == 200
        statements = [q["sql"].lstrip().upper() for q in queries.captured_queries]
        # The key check, then the endpoint or the page, in the key's environment.
        assert len(statements) == 2, statements
        for statement in statements:
            assert statement.startswith("SELECT "), statements
        assert '"REVOKED_AT" IS NULL' in statements[0], statements  # the key check


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
def test_a_page_past_a_cursor_runs_two_queries(api, cursor):
    ids = [api.create_endpoint()["webhook_endpoint_id"] for _ in range(3)]
    api.get("/v1/webhook_endpoints")  # the key's last use is recorded (at most once a minute)
    with CaptureQueriesContext(connection) as queries:
        page = api.get(f"/v1/webhook_endpoints?limit=1&{cursor}={ids[1]}").json()
    # The key check, then the page after (or before) the cursor, read in the same statement.
    assert len(queries.captured_queries) == 2, [q["sql"] for q in queries.captured_queries]
    expected = ids[0] if cursor == "starting_after" else ids[2]  # newest first
    assert [e["webhook_endpoint_id"] for e in page["data"]] == [expected]
    # An empty page asks for the cursor again: the end of the walk, not an unknown cursor.
    end = ids[0] if cursor == "starting_after" else ids[2]
    with CaptureQueriesContext(connection) as queries:
        page = api.get(f"/v1/webhook_endpoints?{cursor}={end}").json()
    assert page == {"object": "list", "data": [], "has_more": False}
    assert len(queries.captured_queries) == 3, [q["sql"] for q in queries.captured_queries]


def test_reads_by_id_and_pages_run_a_bounded_number_of_queries(api):
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    events = [api.post("/v1/events", {"type": "packet.created"}).json()["event_id"] for _ in "ab"]
    api.get("/v1/events")  # the key's last use is recorded (at most once a minute)
    expected = {
        # key check, the event, the delivery counts, the newest deliveries
        f"/v1/events/{events[0]}": 4,
        # key check, the page, the page's delivery counts
        "/v1/events": 3,
        # key check, the cursor's event, the page, the page's delivery counts
        f"/v1/events?starting_after={events[1]}": 4,
        # key check, the endpoint, the page (empty: no attempts to load)
        f"/v1/webhook_endpoints/{endpoint_id}/deliveries": 3,
    }
    for path, count in expected.items():
        with CaptureQueriesContext(connection) as queries:
            assert api.get(path).status_code == 200
        statements = [q["sql"] for q in queries.captured_queries]
        assert len(statements) == count, (path, statements)


@contextmanager
def connection_settings_of_the_service() -> Iterator[None]:
    """`config.settings.base`'s: a connection kept between requests (the tests' are closed
    after each one), health-checked at the first query of each request (as the tests' are)."""
    service = {"CONN_MAX_AGE": 60}
    saved = {name: connection.settings_dict[name] for name in service}
    connection.settings_dict.update(service)
    connection.close()
    try:
        yield
    finally:
        connection.settings_dict.update(saved)
        connection.close()


def terminate_backend(pid: int) -> None:
    """Ends one PostgreSQL session, ours, as a server restart would end all of them."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("prepare_threshold", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.django_db(transaction=True)
def test_a_connection_dropped_between_requests_fails_no_request(api):
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    with connection_settings_of_the_service():
        for path in ("/v1/webhook_endpoints", f"/v1/webhook_endpoints/{endpoint_id}"):
            assert api.get(path).status_code == 200
            pid = connection.connection.info.backend_pid
            terminate_backend(pid)
            # What Django does as each request starts (its test client leaves it out).
            close_old_connections()
            response = api.get(path)
            assert response.status_code == 200, response.content
            assert connection.connection.info.backend_pid != pid  # a new connection served it


@pytest.mark.django_db(transaction=True)
def test_a_session_reset_by_a_pooler_fails_no_request(api):
    """A pooler in transaction mode hands the next request a session that another client may
    have reset (DISCARD ALL): nothing the API relies on lives in the session."""
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    with connection_settings_of_the_service():
        for path in ("/v1/webhook_endpoints", f"/v1/webhook_endpoints/{endpoint_id}"):
            assert api.get(path).status_code == 200
            pid = connection.connection.info.backend_pid
            with connection.cursor() as cursor:
                cursor.execute("DISCARD ALL")
            response = api.get(path)
            assert response.status_code == 200, response.content
            assert connection.connection.info.backend_pid == pid  # the same session


@pytest.mark.django_db(transaction=True)
def test_the_api_prepares_no_statement_on_the_server(api):
    """Server-side prepared statements break behind PgBouncer in transaction mode before 1.21:
    however often the same reads run on one connection, none is prepared."""
    ids = [api.create_endpoint()["webhook_endpoint_id"] for _ in range(3)]
    with connection_settings_of_the_service():
        for _ in range(8):
            for path in (
                "/v1/webhook_endpoints?limit=2",
                f"/v1/webhook_endpoints?limit=1&starting_after={ids[2]}",
                f"/v1/webhook_endpoints/{ids[0]}",
            ):
                assert api.get(path).status_code == 200
        with connection.cursor() as cursor:
            cursor.execute("SELECT name, statement FROM pg_prepared_statements")
            prepared = cursor.fetchall()
    assert prepared == [], prepared


def test_the_service_plans_no_parallel_queries_and_compiles_none(db):
    """Its statements read a page or a batch by index: a parallel plan's workers take longer to
    start than that, and JIT longer to compile (config/settings/base.py). Set at connection
    start, for every process."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_parallel_workers_per_gather")
        assert cursor.fetchone()[0] == "0"
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"


def test_a_connection_whose_network_path_drops_fails_in_seconds(db):
    """Its socket gives up on what goes unacknowledged for 10 s, and probes an idle wait after
    10 s (config/settings/base.py): a kept connection to a database whose host or path is gone
    fails a request in time for its 503, before gunicorn kills the worker (30 s)."""
    connection.ensure_connection()
    fd = connection.connection.pgconn.socket
    with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:  # a duplicate
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 10_000
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
