"""`GET /v1/webhook_endpoints/{id}/deliveries?status=…`: only the deliveries in that status,
newest first, paged by the same cursors.

Deliveries get their statuses the way production gives them: sent in this process to a real
receiver on 127.0.0.1 (200: succeeded; 500 with no retries left: failed), cancelled by disabling
the endpoint, or published and not sent yet (pending).
"""

from dataclasses import dataclass

import pytest

from deliveries.models import Delivery, Event
from deliveries.services import event_fan_out
from tests import factories
from tests.servers import Reply
from tests.test_auth import assert_error
from tests.test_openapi import assert_documented

pytestmark = pytest.mark.django_db

PATH = "/v1/webhook_endpoints/{webhook_endpoint_id}/deliveries"


@dataclass
class Log:
    path: str  # the endpoint's deliveries
    oldest_first: list[str]  # every delivery id
    by_status: dict[str, list[str]]  # the ids in each status, oldest first


@pytest.fixture
def log(api, receiver, settings) -> Log:
    """An endpoint with deliveries in every status."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    settings.WEBHOOKS_RETRY_SCHEDULE = []  # a failed attempt is the last one
    endpoint = api.create_endpoint(f"{receiver.url}/hook")
    item = f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}"
    receiver.script("/hook", Reply(200), Reply(500), Reply(200), Reply(500), Reply(200))
    for _ in range(5):
        factories.deliver_here(api.environment)  # succeeded, failed, succeeded, failed, ...

    def publish_unsent() -> None:
        for _ in range(2):
            event_id = api.post("/v1/events", {"type": "packet.created"}).json()["event_id"]
            event_fan_out(event_id=Event.objects.get(public_id=event_id).pk)

    publish_unsent()
    api.patch(item, {"status": "disabled"})  # cancels those two
    api.patch(item, {"status": "enabled"})
    publish_unsent()  # pending
    rows = Delivery.objects.filter(endpoint__public_id=endpoint["webhook_endpoint_id"])
    listed = list(rows.order_by("created_at", "id").values_list("public_id", "status"))
    by_status: dict[str, list[str]] = {}
    for public_id, status in listed:
        by_status.setdefault(status, []).append(public_id)
    counts = {status: len(ids) for status, ids in by_status.items()}
    assert counts == {"succeeded": 3, "failed": 2, "cancelled": 2, "pending": 2}
    return Log(f"{item}/deliveries", [public_id for public_id, _ in listed], by_status)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [d["delivery_id"] for d in response.json()["data"]]


@pytest.mark.parametrize("status", ["pending", "succeeded", "failed", "cancelled"])
def test_each_status_lists_only_its_deliveries_newest_first(api, log, status):
    path, by_status = log.path, log.by_status
    schema = api.get("/v1/openapi.json").json()
    response = api.get(f"{path}?status={status}")
    body = assert_documented(schema, "get", PATH, response)
    assert [d["delivery_id"] for d in body["data"]] == by_status[status][::-1]
    assert {d["status"] for d in body["data"]} == {status}
    assert body["has_more"] is False


def test_no_status_lists_them_all(api, log):
    path, by_status = log.path, log.by_status
    assert len(ids(api.get(path))) == sum(len(v) for v in by_status.values())


def test_cursors_page_through_the_filtered_deliveries(api, log):
    path, by_status = log.path, log.by_status
    succeeded = by_status["succeeded"][::-1]  # newest first
    first = api.get(f"{path}?status=succeeded&limit=2").json()
    assert [d["delivery_id"] for d in first["data"]] == succeeded[:2]
    assert first["has_more"] is True
    rest = api.get(f"{path}?status=succeeded&limit=2&starting_after={succeeded[1]}").json()
    assert [d["delivery_id"] for d in rest["data"]] == succeeded[2:]
    assert rest["has_more"] is False
    back = api.get(f"{path}?status=succeeded&limit=1&ending_before={succeeded[2]}").json()
    assert [d["delivery_id"] for d in back["data"]] == [succeeded[1]]
    assert back["has_more"] is True


def test_a_cursor_in_another_status_still_marks_the_place(api, log):
    """A delivery whose status changed since the page was read (or any of the endpoint's) is
    a position in the list, not a filter: the page starts after it."""
    path, by_status = log.path, log.by_status
    newest_failed = by_status["failed"][-1]
    before = log.oldest_first[: log.oldest_first.index(newest_failed)]
    older = [i for i in before if i in by_status["succeeded"]]
    assert ids(api.get(f"{path}?status=succeeded&starting_after={newest_failed}")) == older[::-1]


@pytest.mark.parametrize("value", ["", "SUCCEEDED", "done", "pending,failed", "x" * 300])
def test_an_unknown_status_is_a_400_naming_it(api, log, value):
    path = log.path
    assert_error(api.get(f"{path}?status={value}"), 400, "parameter_invalid", param="status")


def test_status_given_twice_is_a_400(api, log):
    path = log.path
    assert_error(
        api.get(f"{path}?status=failed&status=pending"), 400, "parameter_invalid", param="status"
    )


def test_the_filter_stays_in_the_tenant(api, log):
    path = log.path
    other = factories.api_client(factories.environment())
    assert_error(other.get(f"{path}?status=failed"), 404, "not_found", "webhook_endpoint_id")
