"""Signing secret rotation (API and command), the overlap window, and encryption-key rotation."""

import time
from datetime import timedelta
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.utils import timezone

from core import encryption
from deliveries import signature
from tests import factories
from tests.servers import Reply, wait_for
from tests.test_auth import assert_error
from webhooks.models import EndpointSecret, WebhookEndpoint
from webhooks.services import expired_secrets_purge


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


def signing_secrets(endpoint_id: str) -> list[str]:
    endpoint = WebhookEndpoint.objects.get(public_id=endpoint_id)
    return [encryption.decrypt(s.ciphertext) for s in endpoint.secrets.signing()]


def test_rotate_over_the_api_returns_the_new_secret_once(api):
    created = api.create_endpoint()
    path = f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}"
    response = api.post(f"{path}/rotate_secret", {"overlap_seconds": 3600})
    assert response.status_code == 200, response.content
    body = response.json()
    new = body["signing_secret"]
    assert new.startswith("whsec_") and new != created["signing_secret"]
    assert {k: v for k, v in body.items() if k != "signing_secret"} == api.get(path).json()
    assert signing_secrets(created["webhook_endpoint_id"]) == [new, created["signing_secret"]]
    assert new not in api.get(path).content.decode()


def test_rotate_without_a_body_keeps_the_old_secret_for_a_day(api):
    created = api.create_endpoint()
    before = timezone.now()
    response = api.post(f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}/rotate_secret")
    assert response.status_code == 200
    old = EndpointSecret.objects.get(endpoint__public_id=created["webhook_endpoint_id"],
                                     expires_at__isnull=False)  # fmt: skip
    assert old.expires_at is not None
    assert (
        timedelta(hours=23, minutes=59) < old.expires_at - before <= timedelta(hours=24, seconds=5)
    )


def test_overlap_zero_revokes_at_once(api):
    created = api.create_endpoint()
    new = api.post(
        f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}/rotate_secret",
        {"overlap_seconds": 0},
    ).json()["signing_secret"]
    assert signing_secrets(created["webhook_endpoint_id"]) == [new]


def test_rotation_is_idempotent_with_a_key(api):
    created = api.create_endpoint()
    path = f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}/rotate_secret"
    first = api.post(path, {"overlap_seconds": 60}, headers={"Idempotency-Key": "rot-1"})
    again = api.post(path, {"overlap_seconds": 60}, headers={"Idempotency-Key": "rot-1"})
    assert again.content == first.content
    assert len(signing_secrets(created["webhook_endpoint_id"])) == 2


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"overlap_seconds": -1}, "parameter_invalid", "overlap_seconds"),
        ({"overlap_seconds": 604801}, "parameter_invalid", "overlap_seconds"),
        ({"overlap_seconds": "60"}, "parameter_invalid", "overlap_seconds"),
        ({"overlap_seconds": 1.5}, "parameter_invalid", "overlap_seconds"),
        ({"overlap_seconds": True}, "parameter_invalid", "overlap_seconds"),
        ({"secret": "whsec_mine"}, "parameter_unknown", "secret"),
    ],
)
def test_bad_rotation_input(api, body, code, param):
    created = api.create_endpoint()
    path = f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}/rotate_secret"
    assert_error(api.post(path, body), 400, code, param=param)
    assert signing_secrets(created["webhook_endpoint_id"]) == [created["signing_secret"]]


def test_rotation_is_tenant_scoped_and_needs_write(api):
    other = factories.api_client(factories.environment())
    foreign = other.create_endpoint()
    assert_error(
        api.post(f"/v1/webhook_endpoints/{foreign['webhook_endpoint_id']}/rotate_secret"),
        404,
        "not_found",
        param="webhook_endpoint_id",
    )
    reader = factories.api_client(api.environment, scopes=["webhook_endpoints:read"])
    mine = api.create_endpoint()
    assert_error(
        reader.post(f"/v1/webhook_endpoints/{mine['webhook_endpoint_id']}/rotate_secret"),
        403,
        "insufficient_scope",
    )
    assert signing_secrets(foreign["webhook_endpoint_id"]) == [foreign["signing_secret"]]


def test_rotate_command_for_one_endpoint(api):
    created = api.create_endpoint()
    lines = run("rotate_webhook_secret", created["webhook_endpoint_id"], "--overlap", "0")
    new = lines[-1]
    assert new.startswith("whsec_")
    assert "revoked" in lines[0]
    assert signing_secrets(created["webhook_endpoint_id"]) == [new]


def test_rotate_command_for_an_organization(api):
    sandbox_ids = [api.create_endpoint()["webhook_endpoint_id"] for _ in range(3)]
    production = factories.api_client(
        api.environment.organization.environments.get(name="production")
    )
    live_id = production.create_endpoint()["webhook_endpoint_id"]
    factories.api_client(factories.environment()).create_endpoint()  # another organization

    slug = api.environment.organization.slug
    lines = run("rotate_webhook_secret", "--organization", slug, "--environment", "sandbox")
    assert [line.split()[0] for line in lines] == sandbox_ids
    for line in lines:
        endpoint_id, secret = line.split()
        assert signing_secrets(endpoint_id)[0] == secret
    assert len(signing_secrets(live_id)) == 1
    assert len(run("rotate_webhook_secret", "--organization", slug)) == 4


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name one"),
        (["we_nonexistent0000"], "no such webhook endpoint"),
        (["--organization", "nobody"], "no endpoints"),
        (["we_x", "--organization", "acme"], "name one"),
        (["--environment", "sandbox"], "name one"),
        (["we_nonexistent0000", "--overlap", "-5"], "0 or more"),
    ],
)
def test_rotate_command_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        run("rotate_webhook_secret", *args)


@pytest.mark.parametrize("overlap", [str(7 * 24 * 3600 + 1), str(10**12)])
def test_rotate_command_refuses_an_overlap_past_a_week_and_rotates_nothing(api, overlap):
    created = api.create_endpoint()
    endpoint = WebhookEndpoint.objects.get(public_id=created["webhook_endpoint_id"])
    with pytest.raises(CommandError, match="at most 604800"):
        run("rotate_webhook_secret", created["webhook_endpoint_id"], "--overlap", overlap)
    assert endpoint.secrets.count() == 1


def test_expired_secrets_are_purged(api):
    created = api.create_endpoint()
    path = f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}/rotate_secret"
    api.post(path, {"overlap_seconds": 60})
    assert expired_secrets_purge() == 0
    assert expired_secrets_purge(now=timezone.now() + timedelta(seconds=61)) == 1
    assert (
        EndpointSecret.objects.filter(endpoint__public_id=created["webhook_endpoint_id"]).count()
        == 1
    )


def test_encryption_key_rotation_keeps_every_secret(api, settings):
    secrets = {e["webhook_endpoint_id"]: e["signing_secret"] for e in
               (api.create_endpoint() for _ in range(3))}  # fmt: skip
    old_key = settings.SIGNING_SECRET_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.SIGNING_SECRET_ENCRYPTION_KEYS = [new_key, old_key]
    assert run("rotate_encryption_key")[-1] == "3"
    settings.SIGNING_SECRET_ENCRYPTION_KEYS = [new_key]  # the old key is gone
    for endpoint_id, secret in secrets.items():
        assert signing_secrets(endpoint_id) == [secret]


def test_encryption_key_rotation_without_the_old_key_names_the_row_it_cannot_read(api, settings):
    # The README's order reversed by mistake: the old key dropped before the rotation ran.
    created = api.create_endpoint()
    secret = EndpointSecret.objects.get(endpoint__public_id=created["webhook_endpoint_id"])
    settings.SIGNING_SECRET_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError) as refused:
        run("rotate_encryption_key")
    message = str(refused.value)
    assert message.startswith(
        f"webhooks.EndpointSecret id {secret.pk} (ciphertext) cannot be decrypted with any key"
    )
    assert secret.ciphertext not in message
    assert created["signing_secret"] not in message


# --- End to end: what receivers see during and after the overlap ---------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_deliveries_during_the_overlap_verify_with_either_secret(worker, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    created = client.create_endpoint(f"{receiver.url}/rotating")
    old = created["signing_secret"]
    path = f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}/rotate_secret"
    new = client.post(path, {"overlap_seconds": 3600}).json()["signing_secret"]

    client.post("/v1/events", {"type": "packet.created"})
    [during] = wait_for(lambda: receiver.received("/rotating"))
    header = during.headers["MD-Signature"]
    assert header.count("v1=") == 2
    _, (first, second) = signature.parse(header)
    t = signature.parse(header)[0]
    assert first == signature.compute(new, t, during.body)  # newest first
    assert second == signature.compute(old, t, during.body)
    signature.verify(during.body, header, [old])
    signature.verify(during.body, header, [new])

    newest = client.post(path, {"overlap_seconds": 0}).json()["signing_secret"]
    client.post("/v1/events", {"type": "packet.created"})
    after = wait_for(lambda: receiver.received("/rotating")[1:])[0]
    assert after.headers["MD-Signature"].count("v1=") == 1
    signature.verify(after.body, after.headers["MD-Signature"], [newest])
    for stale in (old, new):
        with pytest.raises(signature.SignatureVerificationError):
            signature.verify(after.body, after.headers["MD-Signature"], [stale])


def test_encryption_key_rotation_keeps_idempotent_replays(api, settings):
    """A create's stored response holds its signing secret, encrypted like the secrets: after
    `rotate_encryption_key` and the old key's removal it still replays byte for byte."""
    headers = {"Idempotency-Key": "rotation-replay"}
    first = api.post("/v1/webhook_endpoints", {"url": "https://example.com/r"}, headers=headers)
    assert first.status_code == 201
    old_key = settings.SIGNING_SECRET_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.SIGNING_SECRET_ENCRYPTION_KEYS = [new_key, old_key]
    assert run("rotate_encryption_key")[-1] == "2"  # the endpoint's secret and the response
    settings.SIGNING_SECRET_ENCRYPTION_KEYS = [new_key]  # the old key is gone
    again = api.post("/v1/webhook_endpoints", {"url": "https://example.com/r"}, headers=headers)
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.content == first.content


def test_encryption_key_rotation_says_what_it_reencrypted_by_kind(api, settings):
    """One line names each kind it rewrote; the last line stays the total a script reads."""
    headers = {"Idempotency-Key": "rotation-kinds"}
    body = {"url": "https://example.com/k", "headers": {"Authorization": "Bearer kept"}}
    assert api.post("/v1/webhook_endpoints", body, headers=headers).status_code == 201
    settings.SIGNING_SECRET_ENCRYPTION_KEYS = [
        Fernet.generate_key().decode(),
        *settings.SIGNING_SECRET_ENCRYPTION_KEYS,
    ]
    assert run("rotate_encryption_key") == [
        "Re-encrypted 1 signing secret, 1 endpoint's headers, 1 stored response with the first "
        "of 2 configured keys.",
        "3",
    ]


def stale_after_rotating(client, receiver, path: str, count: int) -> list[float]:
    """Rotates with overlap 0 once `count` events' deliveries flow to `path`; returns, for each
    delivery that arrived well after the rotation answered and that the new secret does not
    verify, how long after it arrived (seconds)."""
    [endpoint] = client.get("/v1/webhook_endpoints").json()["data"]
    for n in range(count):
        published = client.post("/v1/events", {"type": "packet.created", "data": {"n": n}})
        assert published.status_code == 201, published.content
    wait_for(lambda: len(receiver.received(path)) >= 2, timeout=30)
    rotate = f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}/rotate_secret"
    rotated = client.post(rotate, {"overlap_seconds": 0})
    assert rotated.status_code == 200, rotated.content
    answered, new = time.time(), rotated.json()["signing_secret"]
    wait_for(lambda: len(receiver.received(path)) >= count, timeout=60)
    # Within WEBHOOKS_WAITING_CHECK_INTERVAL (0.25 s), and a request's time on the way.
    later = [r for r in receiver.received(path) if r.at > answered + 1.0]
    assert len(later) >= 3, "the rotation came too late for the test to see anything"
    stale = []
    for got in later:
        try:
            signature.verify(got.body, got.headers["MD-Signature"], [new])
        except signature.SignatureVerificationError:
            stale.append(round(got.at - answered, 2))
    return stale


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_overlap_zero_holds_for_an_ordered_endpoints_chain(private_worker, receiver, settings):
    """An ordered endpoint's next delivery is loaded while its head is in flight and sent as
    it ends, for seconds on end (deliveries.chain): what it signs with is kept fresh."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/ordered", delivery_order="ordered")
    receiver.respond("/ordered", lambda got: Reply(200, delay=0.3))
    private_worker()
    assert stale_after_rotating(client, receiver, "/ordered", 15) == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_overlap_zero_holds_for_deliveries_waiting_for_their_rate_limit_slots(
    private_worker, receiver, settings
):
    """A rate-limited endpoint's deliveries wait in the worker for slots up to 5 s ahead
    (production's lease margin gives the full horizon), signed as they start."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/limited", rate_limit=2)
    private_worker(WEBHOOKS_DELIVERY_TIMEOUT="10", WEBHOOKS_CLAIM_LEASE_MARGIN="60")
    assert stale_after_rotating(client, receiver, "/limited", 16) == []
