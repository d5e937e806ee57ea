"""The API bench's peer (bench.urls) answers the same list and retrieve as the API, so the two do
the same work. An endpoint field added to the API and not to the peer stopped every full run of
`python -m bench` at its first check, unseen from issue 16 until a full run was tried."""

import pytest

from bench import seed
from bench.workloads import api as api_workload
from tests import factories


@pytest.mark.django_db(transaction=True)
def test_the_drf_peer_answers_what_the_api_answers_for_every_field(live_server, settings):
    settings.ROOT_URLCONF = "bench.urls"
    tenant = seed.tenant("bench-api")
    seed.endpoints(tenant.environment, 30)
    # The newest, so on the first page: every delivery control field set, a secret header.
    factories.api_client(tenant.environment).create_endpoint(
        "https://example.com/hook",
        description="billing",
        metadata={"team": "payments"},
        headers={"X-Api-Key": "k-secret", "X-Route": "eu"},
        rate_limit=20,
        delivery_order="ordered",
    )
    requests = api_workload.requests_for(tenant)

    api_workload.check_answers(live_server.url, requests)  # raises BenchError on a difference
