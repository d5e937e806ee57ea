"""Encryption-key rotation as a worker sees it, in a module of its own.

Its test needs the only worker on the broker to be one that knows just the new key. In
test_secret_rotation.py the module's shared `worker` (started with the old key only) was
still running beside it, and when that worker took the event it could not decrypt the
re-encrypted secrets: the deliveries failed, and the test with them, in some runs.
"""

import pytest
from cryptography.fernet import Fernet

from deliveries import signature
from deliveries.models import Delivery
from tests import factories
from tests.servers import wait_for
from tests.test_secret_rotation import run


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_after_an_encryption_key_rotation_every_endpoint_delivers(
    private_worker, receiver, settings
):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    endpoints = [client.create_endpoint(f"{receiver.url}/k{i}") for i in range(3)]
    new_key = Fernet.generate_key().decode()
    settings.SIGNING_SECRET_ENCRYPTION_KEYS = [new_key, *settings.SIGNING_SECRET_ENCRYPTION_KEYS]
    run("rotate_encryption_key")
    # A worker that knows only the new key.
    private_worker(SIGNING_SECRET_ENCRYPTION_KEYS=new_key)
    event = client.post("/v1/events", {"type": "packet.created"}).json()
    wait_for(
        lambda: (
            Delivery.objects.filter(event__public_id=event["event_id"], status="succeeded").count()
            == 3
        )
    )
    for i, endpoint in enumerate(endpoints):
        [request] = receiver.received(f"/k{i}")
        signature.verify(request.body, request.headers["MD-Signature"], endpoint["signing_secret"])
