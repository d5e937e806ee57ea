"""The rows bench.control's recovery workload starts from (bench/control.py): failed deliveries
made in bulk must be what the product leaves after the last retry, attempts included, or the
recovery it measures is not the product's. A change to the history's shape (its partitions by
event id) broke them once, unseen until a full run."""

import pytest

from bench.control import failed_deliveries
from deliveries.models import Delivery, DeliveryAttempt
from deliveries.schedule import max_attempts
from tests import factories


@pytest.mark.django_db
def test_failed_deliveries_are_the_products_failed_deliveries_with_their_last_attempt():
    environment = factories.environment()
    client = factories.api_client(environment)
    endpoint = client.create_endpoint("https://example.com/hook")
    made, since = failed_deliveries(environment, 7)
    endpoint_id = endpoint["webhook_endpoint_id"]
    assert made.public_id == endpoint_id

    listed = client.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries?status=failed")
    assert listed.status_code == 200, listed.content
    assert len(listed.json()["data"]) == 7
    deliveries = Delivery.objects.filter(endpoint=made)
    assert {d.attempt_count for d in deliveries} == {max_attempts()}
    assert all(d.event.created_at >= since for d in deliveries)
    attempts = DeliveryAttempt.objects.filter(delivery__in=deliveries)
    assert sorted((a.delivery_id, a.event_id) for a in attempts) == sorted(
        (d.pk, d.event_id) for d in deliveries
    )
