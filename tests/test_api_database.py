"""What an API request asks of PostgreSQL: few queries, no writes on reads, and no failure when
the connection kept from an earlier request has died meanwhile."""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connection, connections
from django.test.utils import CaptureQueriesContext

from accounts import scopes
from tests import factories
from webhooks.models import WebhookEndpoint


def test_list_and_retrieve_run_one_query_and_write_nothing(api):
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    api.get("/v1/webhook_endpoints")  # the key's last use is recorded (at most once a minute)
    for path in ("/v1/webhook_endpoints?limit=20", f"/v1/webhook_endpoints/{endpoint_id}"):
        with CaptureQueriesContext(connection) as queries:
            assert api.get(path).status_code == 200
        statements = [q["sql"].lstrip().upper() for q in queries.captured_queries]
        # The key check, with the endpoint or the page read in the key's environment.
        assert len(statements) == 1, statements
        assert statements[0].startswith("WITH CALLER AS MATERIALIZED (\n"), statements
        assert not {"INSERT", "UPDATE", "DELETE"} & set(statements[0].split()), statements


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
def test_a_page_past_a_cursor_runs_two_queries(api, cursor):
    ids = [api.create_endpoint()["webhook_endpoint_id"] for _ in range(3)]
    api.get("/v1/webhook_endpoints")  # the key's last use is recorded (at most once a minute)
    with CaptureQueriesContext(connection) as queries:
        page = api.get(f"/v1/webhook_endpoints?limit=1&{cursor}={ids[1]}").json()
    # The key check with the cursor's endpoint, then the page after (or before) it.
    assert len(queries.captured_queries) == 2, [q["sql"] for q in queries.captured_queries]
    expected = ids[0] if cursor == "starting_after" else ids[2]  # newest first
    assert [e["webhook_endpoint_id"] for e in page["data"]] == [expected]


def test_reads_by_id_ride_on_the_key_check(api):
    """The event of /v1/events/{id}, the endpoint of /v1/webhook_endpoints/{id}/deliveries,
    the first page of events and an events page's cursor are read with the key check
    (ApiViewSet.first_read)."""
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    events = [api.post("/v1/events", {"type": "packet.created"}).json()["event_id"] for _ in "ab"]
    api.get("/v1/events")  # the key's last use is recorded (at most once a minute)
    expected = {
        # key check with the event, the delivery counts, the newest deliveries
        f"/v1/events/{events[0]}": 3,
        # key check with the page, the page's delivery counts
        "/v1/events": 2,
        # key check with the cursor's event, the page, the page's delivery counts
        f"/v1/events?starting_after={events[1]}": 3,
        # key check with the endpoint, the page (empty: no attempts to load)
        f"/v1/webhook_endpoints/{endpoint_id}/deliveries": 2,
    }
    for path, count in expected.items():
        with CaptureQueriesContext(connection) as queries:
            assert api.get(path).status_code == 200
        statements = [q["sql"] for q in queries.captured_queries]
        assert len(statements) == count, statements
        assert statements[0].lstrip().startswith("WITH caller AS MATERIALIZED"), statements


def test_a_refused_request_hands_what_its_key_check_read_to_no_other(sandbox):
    """A retrieve's endpoint is read with the key check, before the scope check refuses it;
    those rows are the request's own, not a later request's that makes the same read."""
    writer = factories.api_client(sandbox, scopes=[scopes.WEBHOOK_ENDPOINTS_WRITE])
    endpoint_id = writer.create_endpoint("https://example.com/before")["webhook_endpoint_id"]
    path = f"/v1/webhook_endpoints/{endpoint_id}"
    assert writer.get(path).status_code == 403  # no read scope: the endpoint read is unused
    WebhookEndpoint.objects.filter(public_id=endpoint_id).update(url="https://example.com/after")

    updated = writer.patch(path, {"status": "disabled"})  # its own read, by a later request

    assert updated.status_code == 200, updated.content
    assert updated.json()["url"] == "https://example.com/after"
    assert WebhookEndpoint.objects.get(public_id=endpoint_id).url == "https://example.com/after"


@contextmanager
def connection_settings_of_the_service() -> Iterator[None]:
    """`config.settings.base`'s: a connection kept between requests (the tests' are closed
    after each one), health-checked at the first query of each request."""
    service = {"CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True}
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
def test_statements_the_server_forgot_are_prepared_again(api):
    """A pooler resetting the session (DISCARD ALL) drops the statements api.sql prepared on
    the connection: the next request prepares them again instead of failing."""
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


def test_times_load_through_psycopgs_c_loader_with_djangos_values(api):
    """api.postgres: psycopg's C loader stands in for Django's Python one and loads the same
    values (aware, `datetime.timezone.utc`, microseconds kept), whatever zone a time was
    written in."""
    from datetime import UTC

    from django.db.backends.postgresql.psycopg_any import BaseTzLoader, register_tzloader

    fresh = connections.create_connection(DEFAULT_DB_ALIAS)  # connection_created runs
    fresh.ensure_connection()
    try:
        loader = fresh.connection.adapters.get_loader(1184, psycopg.pq.Format.TEXT)
        assert not issubclass(loader, BaseTzLoader), loader  # not Django's Python loader
        texts = [
            "2026-06-12 18:40:00.123456+00",
            "2026-03-29 02:30:00+02",  # inside Europe's DST gap
            "1969-12-31 23:59:59.999999-08",
            "0001-01-02 00:00:00+00",
            "9999-12-30 23:59:59+00",
        ]
        select = "SELECT " + ", ".join(["%s::timestamptz"] * len(texts)) + ", NULL::timestamptz"
        with fresh.cursor() as cursor:
            cursor.execute(select, texts)
            ours = cursor.fetchone()
        with fresh.connection.cursor() as djangos:
            register_tzloader(UTC, djangos)  # Django's own loader, as Django registers it
            djangos.execute(select, texts)
            expected = djangos.fetchone()
    finally:
        fresh.close()
    assert ours == expected
    assert [value.tzinfo for value in ours[:-1]] == [UTC] * len(texts)


@pytest.mark.django_db(transaction=True)
def test_the_api_statements_are_planned_once_per_connection(api):
    """Left to its default, PostgreSQL plans a prepared statement again at each execution while
    it guesses the generic plan dearer: the page after a cursor did so on every request in a
    big environment. The API's statements run on their generic plan from the first."""
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
            cursor.execute(
                "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE name LIKE 'kinetic_api_%%'"
            )
            plans = cursor.fetchall()
    assert len(plans) >= 3, plans
    assert all(custom == 0 and generic > 0 for _, generic, custom in plans), plans
