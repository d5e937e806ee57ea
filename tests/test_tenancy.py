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
