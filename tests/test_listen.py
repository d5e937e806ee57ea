"""`manage.py listen`: a developer's local receiver, verifying and forwarding deliveries."""

import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from deliveries import signature
from tests import factories
from tests.servers import ROOT, Reply, database_url, wait_for
from webhooks.models import WebhookEndpoint


@pytest.mark.django_db(transaction=True)
def test_listen_shows_verified_deliveries_forwards_them_and_cleans_up(receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    environment = factories.environment()
    slug = environment.organization.slug
    receiver.script("/app", Reply(204))
    out = StringIO()
    errors: list[BaseException] = []

    def listen() -> None:
        try:
            call_command("listen", "--organization", slug, "--forward-to",
                         f"{receiver.url}/app", "--max-deliveries", "1", stdout=out)  # fmt: skip
        except BaseException as exc:  # surfaced in the test below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=listen)
    thread.start()
    endpoint = wait_for(lambda: WebhookEndpoint.objects.live().first(), timeout=60)
    event = factories.deliver_here(environment, "judgment.created")
    thread.join(60)
    assert not thread.is_alive() and not errors, errors

    output = out.getvalue()
    assert f"Listening on {endpoint.url}" in output
    assert f"judgment.created {event.public_id}" in output
    assert "signature verified" in output
    assert f"<-- {receiver.url}/app answered 204" in output
    [forwarded] = receiver.received("/app")
    assert forwarded.headers["MD-Event-Id"] == event.public_id
    secret = output.split("Signing secret for this session: ")[1].split()[0]
    signature.verify(forwarded.body, forwarded.headers["MD-Signature"], secret)
    # The temporary endpoint is gone.
    assert not WebhookEndpoint.objects.live().exists()
    assert f"Deleted {endpoint.public_id}; received 1." in output


@pytest.mark.django_db
def test_listen_refuses_without_private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = False
    with pytest.raises(CommandError, match="WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS"):
        call_command("listen", "--organization", factories.organization().slug)


@pytest.mark.django_db
@pytest.mark.parametrize("port", ["taken", "70000"])
def test_listen_on_a_port_it_cannot_have_fails_clearly(settings, port):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    organization = factories.organization()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        asked = str(busy.getsockname()[1]) if port == "taken" else port
        with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{asked}"):
            call_command("listen", "--organization", organization.slug, "--port", asked)
    assert not WebhookEndpoint.objects.exists()


def _start_listen(slug: str, **settings: str) -> "subprocess.Popen[str]":
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "TEST_DATABASE_URL": database_url(),
        "WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS": "true",
        **settings,
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "listen", "--organization", slug],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("Listening on"), first + process.stdout.read()
    return process


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_listen_stopped_by_a_signal_deletes_its_endpoint(stop):
    """A closed terminal (SIGHUP) or `kill` (SIGTERM) cleans up as Ctrl-C does."""
    environment = factories.environment()
    process = _start_listen(environment.organization.slug)
    endpoint = WebhookEndpoint.objects.live().get(environment=environment)
    process.send_signal(stop)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert f"Deleted {endpoint.public_id}" in output
    assert not WebhookEndpoint.objects.live().exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_listeners_endpoint_is_deleted_once_its_lease_runs_out():
    """`kill -9` leaves no cleanup to run: the endpoint's lease, renewed while the command
    lives, runs out, and beat's task deletes it (cancelling what was queued for it)."""
    from deliveries.models import Delivery
    from webhooks.tasks import delete_expired_endpoints_task

    environment = factories.environment()
    process = _start_listen(environment.organization.slug, LISTEN_LEASE_SECONDS="4")
    try:
        endpoint = WebhookEndpoint.objects.live().get(environment=environment)
        first = endpoint.expires_at
        assert first is not None

        def renewed() -> bool:
            endpoint.refresh_from_db()
            return endpoint.expires_at is not None and endpoint.expires_at > first

        # Seen renewed rather than slept past the first lease: a listener starved for the
        # length of a lease on a loaded machine would lose it, which is the lease's point.
        wait_for(renewed, timeout=30)
        delete_expired_endpoints_task()
        endpoint.refresh_from_db()
        assert endpoint.deleted_at is None
        assert endpoint.expires_at is not None and endpoint.expires_at > timezone.now()
        event = factories.deliver_here(environment)  # queued for it, not yet sent
        Delivery.objects.filter(event=event).update(
            next_attempt_at=timezone.now() + timedelta(hours=1)
        )
    finally:
        process.kill()
        process.wait(10)
    endpoint.refresh_from_db()  # its last renewal, before the kill
    expires_at = endpoint.expires_at
    assert expires_at is not None and expires_at <= timezone.now() + timedelta(seconds=4)
    wait_for(lambda: timezone.now() > expires_at, timeout=10)
    delete_expired_endpoints_task()
    assert not WebhookEndpoint.objects.live().exists()
    assert Delivery.objects.get(event=event).status == Delivery.Status.CANCELLED
