"""Cursor pages: limit, starting_after, ending_before, has_more; keyset, stable, no OFFSET."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests import factories
from tests.test_auth import assert_error
from webhooks.models import WebhookEndpoint


def make_endpoints(api, n):
    """n endpoints, newest first as the API lists them."""
    ids = [api.create_endpoint(f"https://example.com/{i}")["webhook_endpoint_id"] for i in range(n)]
    return list(reversed(ids))


def ids(response):
    assert response.status_code == 200, response.content
    return [e["webhook_endpoint_id"] for e in response.json()["data"]]


def walk_forward(api, limit):
    seen, cursor = [], None
    while True:
        query = f"?limit={limit}" + (f"&starting_after={cursor}" if cursor else "")
        body = api.get(f"/v1/webhook_endpoints{query}").json()
        seen += [e["webhook_endpoint_id"] for e in body["data"]]
        if not body["has_more"]:
            return seen
        cursor = body["data"][-1]["webhook_endpoint_id"]


def test_default_limit_is_20_newest_first(api):
    expected = make_endpoints(api, 23)
    body = api.get("/v1/webhook_endpoints").json()
    assert [e["webhook_endpoint_id"] for e in body["data"]] == expected[:20]
    assert body["has_more"] is True


def test_walk_forward_and_back_over_several_pages(api):
    expected = make_endpoints(api, 45)
    pages = []
    cursor = None
    while True:
        query = "?limit=20" + (f"&starting_after={cursor}" if cursor else "")
        body = api.get(f"/v1/webhook_endpoints{query}").json()
        pages.append(([e["webhook_endpoint_id"] for e in body["data"]], body["has_more"]))
        if not body["has_more"]:
            break
        cursor = body["data"][-1]["webhook_endpoint_id"]
    assert [len(p) for p, _ in pages] == [20, 20, 5]
    assert [more for _, more in pages] == [True, True, False]
    assert [i for p, _ in pages for i in p] == expected

    # Back from the last page: ending_before the first item of a page gives the page before it.
    back = api.get(f"/v1/webhook_endpoints?limit=20&ending_before={pages[2][0][0]}").json()
    assert [e["webhook_endpoint_id"] for e in back["data"]] == pages[1][0]
    assert back["has_more"] is True
    back = api.get(f"/v1/webhook_endpoints?limit=20&ending_before={pages[1][0][0]}").json()
    assert [e["webhook_endpoint_id"] for e in back["data"]] == pages[0][0]
    assert back["has_more"] is False
    newest = api.get(f"/v1/webhook_endpoints?ending_before={expected[0]}").json()
    assert newest == {"object": "list", "data": [], "has_more": False}
    oldest = api.get(f"/v1/webhook_endpoints?starting_after={expected[-1]}").json()
    assert oldest == {"object": "list", "data": [], "has_more": False}


@pytest.mark.parametrize("limit", ["1", "7", "100"])
def test_every_limit_walks_every_row_once(api, limit):
    expected = make_endpoints(api, 15)
    assert walk_forward(api, limit) == expected


def test_ties_on_created_at_are_broken_by_id(api):
    expected = make_endpoints(api, 9)
    same = timezone.now()
    WebhookEndpoint.objects.update(created_at=same)
    walked = walk_forward(api, 2)
    assert sorted(walked) == sorted(expected)
    assert len(set(walked)) == 9


def test_pages_are_stable_while_rows_come_and_go(api):
    expected = make_endpoints(api, 30)
    first = api.get("/v1/webhook_endpoints?limit=10").json()
    assert ids_of(first) == expected[:10]
    # New endpoints arrive and one on the next page is deleted: the walk continues after
    # the cursor without repeating or skipping what was there.
    make_endpoints(api, 5)
    api.delete(f"/v1/webhook_endpoints/{expected[12]}")
    second = api.get(f"/v1/webhook_endpoints?limit=10&starting_after={expected[9]}").json()
    assert ids_of(second) == expected[10:12] + expected[13:21]
    # The cursor itself deleted: it is no longer visible, so it is a 400, not a wrong page.
    api.delete(f"/v1/webhook_endpoints/{expected[20]}")
    assert_error(
        api.get(f"/v1/webhook_endpoints?starting_after={expected[20]}"),
        400,
        "parameter_invalid",
        param="starting_after",
    )


def ids_of(body):
    return [e["webhook_endpoint_id"] for e in body["data"]]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", "", "²", " 5", "1e1"])
def test_limit_out_of_range_is_400(api, limit):
    error = assert_error(
        api.get(f"/v1/webhook_endpoints?limit={limit}"), 400, "parameter_invalid", "limit"
    )
    assert "100" in error["message"]


def test_both_cursors_is_400(api):
    a, b = make_endpoints(api, 2)
    assert_error(
        api.get(f"/v1/webhook_endpoints?starting_after={a}&ending_before={b}"),
        400,
        "parameter_invalid",
        param="ending_before",
    )


@pytest.mark.parametrize("param", ["starting_after", "ending_before"])
def test_cursor_the_caller_cannot_see_is_400(api, param):
    other_org = factories.api_client(factories.environment())
    same_org_production = factories.api_client(
        api.environment.organization.environments.get(name="production")
    )
    for owner in (other_org, same_org_production):
        foreign = owner.create_endpoint()["webhook_endpoint_id"]
        error = assert_error(
            api.get(f"/v1/webhook_endpoints?{param}={foreign}"), 400, "parameter_invalid", param
        )
        assert foreign in error["message"]
    for junk in ("we_nope", "", "x" * 300):
        assert_error(
            api.get(f"/v1/webhook_endpoints?{param}={junk}"), 400, "parameter_invalid", param
        )


def test_list_queries_use_no_offset_and_no_count(api):
    expected = make_endpoints(api, 25)
    with CaptureQueriesContext(connection) as queries:
        api.get("/v1/webhook_endpoints?limit=10")
        api.get(f"/v1/webhook_endpoints?limit=10&starting_after={expected[9]}")
        api.get(f"/v1/webhook_endpoints?limit=10&ending_before={expected[20]}")
    sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
    assert "OFFSET" not in sql
    assert "COUNT(" not in sql
    # One query for the key (and its last use, written once), one for the page; no N+1.
    assert len(queries.captured_queries) <= 3 * 2 + 1


def test_deep_page_query_uses_the_list_index(api):
    expected = make_endpoints(api, 3)
    with CaptureQueriesContext(connection) as queries:
        api.get(f"/v1/webhook_endpoints?starting_after={expected[0]}")
    # The statement the API ran for the page past the cursor, as it ran it.
    (page,) = (q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"])
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(f"EXPLAIN {page}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = on")
    assert "webhook_endpoint_list_idx" in plan
