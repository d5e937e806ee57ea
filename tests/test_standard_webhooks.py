"""Receivers' own libraries verify real deliveries unchanged: the Standard Webhooks headers,
checked by the `standardwebhooks` package from PyPI, `svix`'s `Webhook.verify` and the
`standardwebhooks` package from npm under Node, on deliveries a running worker sent."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import standardwebhooks
import svix.webhooks

from deliveries import signature
from tests import factories
from tests.servers import Received, wait_for
from webhooks import signing_secrets

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # receivers live on 127.0.0.1


@pytest.fixture
def tenant(worker):
    return factories.api_client(factories.environment())


def python_standardwebhooks(secret: str, got: Received) -> bool:
    try:
        standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


def python_svix(secret: str, got: Received) -> bool:
    try:
        svix.webhooks.Webhook(secret).verify(got.body, got.headers)
    except svix.webhooks.WebhookVerificationError:
        return False
    return True


def node_standardwebhooks(secret: str, got: Received, tmp_path: Path) -> bool:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "standardwebhooks").is_dir():
        pytest.skip("needs Node.js and `npm ci --prefix tests/node` (.ci/run does both)")
    delivery = tmp_path / "delivery.json"
    delivery.write_text(json.dumps({"body": got.body.decode(), "headers": got.headers}))
    result = subprocess.run(
        [node, str(NODE_DIR / "verify.js"), secret, str(delivery)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode == 0 and result.stdout.strip() == "verified"


def verifiers(tmp_path: Path):
    return {
        "standardwebhooks (PyPI)": python_standardwebhooks,
        "svix (PyPI)": python_svix,
        "standardwebhooks (npm)": lambda secret, got: node_standardwebhooks(secret, got, tmp_path),
    }


def deliver(tenant, receiver, path: str) -> Received:
    event = tenant.post("/v1/events", {"type": "packet.created", "data": {"packet": {"id": 1}}})
    assert event.status_code == 201, event.content
    event_id = event.json()["event_id"]
    got = wait_for(
        lambda: [r for r in receiver.received(path) if r.headers["MD-Event-Id"] == event_id]
    )
    return got[0]


def test_every_library_verifies_a_delivery_and_refuses_a_tampered_one(tenant, receiver, tmp_path):
    endpoint = tenant.create_endpoint(f"{receiver.url}/standard")
    secret = endpoint["signing_secret"]
    got = deliver(tenant, receiver, "/standard")

    assert got.headers["webhook-id"] == got.headers["MD-Event-Id"]
    timestamp, _ = signature.parse(got.headers["MD-Signature"])
    assert got.headers["webhook-timestamp"] == str(timestamp)
    assert got.headers["webhook-signature"].startswith("v1,")
    tampered = Received(got.path, got.headers, got.body.replace(b'"id":1', b'"id":2'), got.at)
    assert tampered.body != got.body
    other_secret = signing_secrets.generate_secret()
    for name, verifies in verifiers(tmp_path).items():
        assert verifies(secret, got), name
        assert not verifies(secret, tampered), name
        assert not verifies(other_secret, got), name


def test_during_a_rotation_both_secrets_verify_with_every_library(tenant, receiver, tmp_path):
    endpoint = tenant.create_endpoint(f"{receiver.url}/rotating")
    old = endpoint["signing_secret"]
    rotated = tenant.post(
        f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}/rotate_secret",
        {"overlap_seconds": 3600},
    )
    assert rotated.status_code == 200, rotated.content
    new = rotated.json()["signing_secret"]
    got = deliver(tenant, receiver, "/rotating")

    assert len(got.headers["webhook-signature"].split(" ")) == 2  # newest first, then the old
    for name, verifies in verifiers(tmp_path).items():
        assert verifies(new, got), name
        assert verifies(old, got), name


def test_the_secret_prefix_is_one_format():
    # deliveries.signature imports nothing of the project (receivers copy it): it repeats the
    # prefix, which must stay the one signing_secrets makes.
    assert signature.SECRET_PREFIX == signing_secrets.SECRET_PREFIX
    assert len(signing_secrets.generate_secret().removeprefix(signature.SECRET_PREFIX)) % 4 == 0
