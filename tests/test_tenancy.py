"""An object of another organization or environment does not exist for the caller."""

import pytest

from tests import factories
from tests.test_auth import assert_error


@pytest.fixture
def tenants(db):
    org = factories.organization()
    other = factories.organization()
    return {
        "me": factories.api_client(org.environments.get(name="sandbox")),
        "my production": factories.api_client(org.environments.get(name="production")),
        "other org sandbox": factories.api_client(other.environments.get(name="sandbox")),
        "other org production": factories.api_client(other.environments.get(name="production")),
    }


@pytest.mark.parametrize("owner", ["my production", "other org sandbox", "other org production"])
def test_foreign_endpoints_are_404_for_every_operation(tenants, owner):
    me = tenants["me"]
    foreign = tenants[owner].create_endpoint("https://example.com/theirs")
    path = f"/v1/webhook_endpoints/{foreign['webhook_endpoint_id']}"
    for response in (
        me.get(path),
        me.patch(path, {"status": "disabled"}),
        me.patch(path, {"url": "https://attacker.example/steal"}),
        me.delete(path),
    ):
        error = assert_error(response, 404, "not_found", param="webhook_endpoint_id")
        assert "theirs" not in response.content.decode()
        assert error["type"] == "invalid_request_error"
    # Untouched for its owner.
    assert tenants[owner].get(path).json() == {
        k: v for k, v in foreign.items() if k != "signing_secret"
    }


def test_lists_show_only_the_callers_endpoints(tenants):
    made = {
        name: client.create_endpoint()["webhook_endpoint_id"] for name, client in tenants.items()
    }
    for name, client in tenants.items():
        listed = [
            e["webhook_endpoint_id"] for e in client.get("/v1/webhook_endpoints").json()["data"]
        ]
        assert listed == [made[name]]


def test_a_production_key_cannot_reach_sandbox_objects_of_its_own_org(tenants):
    sandbox_endpoint = tenants["me"].create_endpoint()["webhook_endpoint_id"]
    assert_error(
        tenants["my production"].get(f"/v1/webhook_endpoints/{sandbox_endpoint}"),
        404,
        "not_found",
        param="webhook_endpoint_id",
    )


def test_the_apis_written_out_reads_give_exactly_the_tenants_scope(tenants):
    """The key check, retrieve, list and the fan-out's candidates read through SQL written out
    (core.sql); what they give is what `WebhookEndpoint.objects.for_environment` gives, field
    for field (every field a list page carries, every field of a retrieved endpoint), for every
    page in both directions: live endpoints of the caller's environment only."""
    from django.forms.models import model_to_dict
    from django.utils import timezone

    from accounts.selectors import api_key_for_raw
    from core.pagination import PageRequest
    from webhooks.models import WebhookEndpoint
    from webhooks.representation import SHOWN_FIELDS
    from webhooks.selectors import enabled_endpoint_filters, endpoint_get, endpoint_page

    me = tenants["me"]
    # Every field differs from one endpoint to the next: a column read into another field's
    # place shows.
    ids = [
        me.create_endpoint(
            f"https://example.com/{i}",
            enabled_events=["*"] if i % 2 else ["packet.created"],
            description=f"endpoint {i}",
            metadata={"n": str(i)},
            headers={"X-N": str(i), "Authorization": f"Bearer {i}"},
            rate_limit=i + 1,
            delivery_order="ordered" if i % 3 == 0 else "unordered",
        )["webhook_endpoint_id"]
        for i in range(7)
    ]
    me.patch(f"/v1/webhook_endpoints/{ids[1]}", {"status": "disabled", "enabled_events": ["*"]})
    me.delete(f"/v1/webhook_endpoints/{ids[3]}")
    same_time = timezone.now()  # ties on created_at are settled by id
    WebhookEndpoint.objects.filter(public_id__in=ids[4:6]).update(created_at=same_time)
    for owner in ("my production", "other org sandbox"):
        tenants[owner].create_endpoint("https://example.com/theirs")
    environment = me.environment
    expected = list(
        WebhookEndpoint.objects.for_environment(environment.pk).order_by("-created_at", "-id")
    )

    def fields(endpoints: list[WebhookEndpoint]) -> list[dict]:
        return [{**model_to_dict(e), "id": e.pk, "created_at": e.created_at} for e in endpoints]

    listed = ("id", *SHOWN_FIELDS)

    def shown(rows: list) -> list[dict]:  # a page's records carry the fields a list shows
        return [{name: getattr(row, name) for name in listed} for row in rows]

    walked, after = [], None
    while True:
        page = endpoint_page(
            environment=environment, page=PageRequest(limit=2, starting_after=after)
        )
        walked += page.items
        if not page.has_more:
            break
        after = page.items[-1].public_id
    assert shown(walked) == shown(expected)
    backwards: list[WebhookEndpoint] = []
    before = expected[-1].public_id
    while True:
        page = endpoint_page(
            environment=environment, page=PageRequest(limit=2, ending_before=before)
        )
        backwards = page.items + backwards
        if not page.has_more:
            break
        before = page.items[0].public_id
    assert shown(backwards) == shown(expected[:-1])
    for public_id in [
        *ids,
        *WebhookEndpoint.objects.exclude(environment=environment).values_list(
            "public_id", flat=True
        ),
    ]:
        got = endpoint_get(environment=environment, public_id=public_id)
        orm = (
            WebhookEndpoint.objects.for_environment(environment.pk)
            .filter(public_id=public_id)
            .first()
        )
        assert fields([got] if got else []) == fields([orm] if orm else []), public_id
    enabled = WebhookEndpoint.objects.for_environment(environment.pk).filter(status="enabled")
    assert sorted(enabled_endpoint_filters(environment_id=environment.pk)) == sorted(
        (pk, events, order == "ordered")
        for pk, events, order in enabled.values_list("id", "enabled_events", "delivery_order")
    )
    key = api_key_for_raw(me.raw_key)
    assert key is not None and key.environment == environment
    assert model_to_dict(key) == model_to_dict(type(key).objects.get(pk=key.pk))
