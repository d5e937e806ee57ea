"""`manage.py listen`: a developer's local receiver, verifying and forwarding deliveries."""

import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from deliveries import signature
from tests import factories
from tests.servers import Reply, wait_for
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
    endpoint = wait_for(lambda: WebhookEndpoint.objects.live().first(), timeout=10)
    event = factories.deliver_here(environment, "judgment.created")
    thread.join(10)
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
