"""The portal's activity pages without a browser: an endpoint's deliveries, a delivery as it
was sent, retry and recover, events, the event catalog and the verifying page, through HTTP
with a session opened by a real one-time link, and deliveries sent to a real receiver.

Every page and action reaches only the session's environment (another's ids are the 404 page);
a read-only session sees everything and can change nothing.
"""

import html
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Environment
from accounts.portal import portal_session_create
from deliveries.dispatch import deliveries_send
from deliveries.models import Delivery, Event, Recovery
from deliveries.recovery import recovery_create
from deliveries.services import event_fan_out, event_publish
from portal.paging import PAGE_SIZE
from tests import factories
from tests.servers import Receiver, Reply
from webhooks import headers
from webhooks.catalog import EVENT_TYPES
from webhooks.services import endpoint_create, endpoint_secret_rotate, expired_secrets_purge

pytestmark = pytest.mark.django_db

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # the receiver lives on 127.0.0.1


def portal(environment: Environment, *, read_only: bool = False) -> Client:
    """A browser-like client whose session was opened through a one-time link."""
    key, _ = factories.api_key(environment)
    _, token = portal_session_create(api_key=key, read_only=read_only)
    client = Client()
    opened = client.get(f"/portal/open/{token}")
    assert opened.status_code == 302, opened.content
    return client


def send(event: Event) -> None:
    event_fan_out(event_id=event.pk)
    deliveries_send(
        delivery_ids=list(Delivery.objects.filter(event=event).values_list("id", flat=True)),
        wait_for_all=True,  # the test's transaction is invisible to other threads' connections
        top_up=False,  # these only: not another test environment's, never sent anywhere
    )


def page(response: Any) -> str:
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def shown(response: Any) -> str:
    """The page's text as a person reads it: no tags, no entities."""
    return html.unescape(re.sub(r"<[^>]+>", "", page(response)))


def links(text: str, rel: str, path: str) -> list[str]:
    """The page's links to the newer ("prev") or older ("next") page, as URLs under `path`."""
    found = re.findall(rf'<a href="([^"]+)" rel="{rel}">', text)
    return [path + html.unescape(href) for href in found]


def delivery_ids(text: str) -> list[str]:
    return re.findall(r'href="/portal/deliveries/(dlv_\w+)/"', text)


def pages_of(made: dict[str, Any]) -> list[str]:
    """The pages of one environment's endpoint, delivery, recovery and event (in `world`)."""
    endpoint = made["endpoint"].public_id
    return [
        f"/portal/endpoints/{endpoint}/deliveries/",
        f"/portal/deliveries/{made['delivery'].public_id}/",
        f"/portal/recoveries/{made['recovery'].public_id}/",
        f"/portal/events/{made['event'].public_id}/",
        f"/portal/verifying/?endpoint={endpoint}",
    ]


@pytest.fixture
def world(sandbox, receiver: Receiver) -> dict[str, Any]:
    """The session's environment with an endpoint, a delivery sent and a recovery; and the
    same of another organization's environment and of the session's own other environment."""
    made: dict[str, Any] = {"receiver": receiver}
    production = factories.environment(sandbox.organization, name="production")
    others = factories.environment()
    for name, environment in (("own", sandbox), ("sibling", production), ("other", others)):
        # Production sends to public https:// URLs only: its delivery is made, never sent.
        sent = environment.name == "sandbox"
        created = endpoint_create(
            environment=environment,
            url=f"{receiver.url}/{name}" if sent else "https://example.com/hook",
            headers={"X-Tenant": name, "Authorization": f"Bearer {name}-credential"},
        )
        event = event_publish(environment=environment, type="packet.created", data={"n": name})
        if sent:
            send(event)
        else:
            event_fan_out(event_id=event.pk)
        delivery = Delivery.objects.get(event=event)
        made[name] = {
            "environment": environment,
            "endpoint": created.endpoint,
            "secret": created.signing_secret,
            "event": event,
            "delivery": delivery,
            "recovery": recovery_create(
                endpoint=created.endpoint, since=timezone.now() - timedelta(hours=1)
            ),
        }
    return made


def test_another_environments_ids_are_404_on_every_page_and_action(world):
    client = portal(world["own"]["environment"])
    own = world["own"]
    own_endpoint = own["endpoint"].public_id
    for name in ("sibling", "other"):
        theirs = world[name]
        before = Delivery.objects.get(pk=theirs["delivery"].pk)
        endpoint, delivery = theirs["endpoint"].public_id, theirs["delivery"].public_id
        event = theirs["event"].public_id
        for url in (
            *pages_of(theirs),
            f"/portal/endpoints/{endpoint}/recover",
            # Their ids as cursors of our own lists.
            f"/portal/endpoints/{own_endpoint}/deliveries/?starting_after={delivery}",
            f"/portal/endpoints/{own_endpoint}/deliveries/?ending_before={delivery}",
            f"/portal/events/?starting_after={event}",
            f"/portal/events/?ending_before={event}",
        ):
            response = client.get(url)
            assert response.status_code == 404, url
            assert "Not found" in response.content.decode()
        retried = client.post(f"/portal/deliveries/{delivery}/retry")
        recovered = client.post(
            f"/portal/endpoints/{endpoint}/recover", {"since": "2026-01-01T00:00"}
        )
        assert (retried.status_code, recovered.status_code) == (404, 404)
        untouched = Delivery.objects.get(pk=theirs["delivery"].pk)
        assert untouched.status == before.status
        assert untouched.next_attempt_at == before.next_attempt_at
        assert Recovery.objects.filter(endpoint=theirs["endpoint"]).count() == 1
    # The same pages with the session's own ids answer.
    for url in (*pages_of(own), "/portal/events/", "/portal/event-types/"):
        assert client.get(url).status_code == 200, url
    # Malformed ids are the same 404, before any query could tell them apart.
    for url in ("/portal/deliveries/nope/", "/portal/events/evt_x/", "/portal/recoveries/x/"):
        assert client.get(url).status_code == 404


def test_read_only_session_sees_no_action_and_its_actions_are_refused(world):
    own = world["own"]
    client = portal(own["environment"], read_only=True)
    endpoint, delivery = own["endpoint"].public_id, own["delivery"].public_id
    for url in (*pages_of(own), "/portal/events/"):
        text = page(client.get(url))
        assert 'method="post"' not in text, url
        assert "Retry now" not in text and ">Recover<" not in text
    assert "This session is read-only" in page(
        client.get(f"/portal/endpoints/{endpoint}/deliveries/")
    )
    retried = client.post(f"/portal/deliveries/{delivery}/retry")
    recovered = client.post(f"/portal/endpoints/{endpoint}/recover", {"since": "2026-01-01T00:00"})
    asked = client.get(f"/portal/endpoints/{endpoint}/recover")  # not even the form
    assert (retried.status_code, recovered.status_code, asked.status_code) == (403, 403, 403)
    assert "read-only" in retried.content.decode()
    assert Delivery.objects.get(pk=own["delivery"].pk).status == "succeeded"
    assert Recovery.objects.filter(endpoint=own["endpoint"]).count() == 1
    # Actions are POST only, whoever asks.
    writer = portal(own["environment"])
    assert writer.get(f"/portal/deliveries/{delivery}/retry").status_code == 405


def test_deliveries_filter_by_status_and_page_newest_first(sandbox, receiver):
    endpoint = endpoint_create(environment=sandbox, url=f"{receiver.url}/hook").endpoint
    events = []
    for n in range(PAGE_SIZE + 16):
        event = event_publish(environment=sandbox, type="packet.created", data={"n": n})
        event_fan_out(event_id=event.pk)
        events.append(event)
    sent = [e for i, e in enumerate(events) if i % 4 == 0]  # 9 succeeded, 27 pending
    deliveries_send(
        delivery_ids=list(Delivery.objects.filter(event__in=sent).values_list("id", flat=True)),
        wait_for_all=True,
        top_up=False,
    )
    newest_first = list(
        Delivery.objects.filter(endpoint=endpoint)
        .order_by("-created_at", "-id")
        .values_list("public_id", "status")
    )
    client = portal(sandbox)
    base = f"/portal/endpoints/{endpoint.public_id}/deliveries/"

    first = page(client.get(base))
    assert delivery_ids(first) == [d for d, _ in newest_first[:PAGE_SIZE]]
    assert links(first, "prev", base) == []
    (older,) = links(first, "next", base)
    second = page(client.get(older))
    assert delivery_ids(second) == [d for d, _ in newest_first[PAGE_SIZE:]]
    assert links(second, "next", base) == []
    (newer,) = links(second, "prev", base)
    assert delivery_ids(page(client.get(newer))) == delivery_ids(first)

    succeeded = page(client.get(base, {"status": "succeeded"}))
    assert delivery_ids(succeeded) == [d for d, s in newest_first if s == "succeeded"]
    assert links(succeeded, "next", base) == []
    pending = page(client.get(base, {"status": "pending"}))
    assert delivery_ids(pending) == [d for d, s in newest_first if s == "pending"][:PAGE_SIZE]
    (older,) = links(pending, "next", base)
    assert "status=pending" in older  # the filter is kept across pages
    assert (
        delivery_ids(page(client.get(older)))
        == [d for d, s in newest_first if s == "pending"][PAGE_SIZE:]
    )
    assert "No failed deliveries" in page(client.get(base, {"status": "failed"}))


def test_events_filter_by_type_page_and_show_their_deliveries(sandbox, receiver):
    endpoint = endpoint_create(environment=sandbox, url=f"{receiver.url}/hook").endpoint
    made = []
    for n in range(PAGE_SIZE + 7):
        kind = "judgment.created" if n % 3 == 0 else "packet.updated"
        made.append(event_publish(environment=sandbox, type=kind, data={"n": n}))
    send(made[-1])
    client = portal(sandbox)
    newest_first = [e.public_id for e in reversed(made)]

    base = "/portal/events/"
    first = page(client.get(base))
    shown = re.findall(r'href="/portal/events/(evt_\w+)/"', first)
    assert shown == newest_first[:PAGE_SIZE]
    (older,) = links(first, "next", base)
    assert (
        re.findall(r'href="/portal/events/(evt_\w+)/"', page(client.get(older)))
        == (newest_first[PAGE_SIZE:])
    )
    judgments = page(client.get("/portal/events/", {"type": "judgment.created"}))
    assert re.findall(r'href="/portal/events/(evt_\w+)/"', judgments) == [
        e.public_id for e in reversed(made) if e.type == "judgment.created"
    ]

    detail = page(client.get(f"/portal/events/{made[-1].public_id}/"))
    delivery = Delivery.objects.get(event=made[-1], endpoint=endpoint)
    assert delivery_ids(detail) == [delivery.public_id]
    assert made[-1].body in html.unescape(detail)


def test_delivery_page_shows_the_request_exactly_as_sent(sandbox, receiver):
    created = endpoint_create(
        environment=sandbox,
        url=f"{receiver.url}/hook",
        headers={"X-Team": "billing", "X-Api-Key": "key-that-must-not-show"},
    )
    receiver.script("/hook", Reply(status=500, body=b"database is down"))
    event = event_publish(environment=sandbox, type="judgment.created", data={"id": "j_1"})
    send(event)
    delivery = Delivery.objects.get(event=event)
    client = portal(sandbox)

    text = shown(client.get(f"/portal/deliveries/{delivery.public_id}/"))
    received = receiver.received("/hook")
    first = received[0]
    assert f"POST {created.endpoint.url}" in text
    for name in ("MD-Signature", "webhook-id", "webhook-timestamp", "webhook-signature"):
        assert f"{name}: {first.headers[name]}" in text, name
    for name in ("MD-Event-Id", "MD-Event-Type", "MD-Delivery-Id", "X-Team", "User-Agent"):
        assert f"{name}: {first.headers[name]}" in text, name
    assert f"X-Api-Key: {headers.MASK}" in text
    assert "key-that-must-not-show" not in text
    assert first.body.decode() in text
    assert "database is down" in text  # the attempt's response excerpt
    assert "500" in text
    assert "rotated" not in text


@pytest.mark.parametrize("attempt", ["\u00b2", "\u0661", "9" * 5000, "0", "-1", " 1", ""])
def test_an_attempt_asked_for_that_is_not_one_shows_the_last(sandbox, receiver, attempt):
    endpoint_create(environment=sandbox, url=f"{receiver.url}/hook")
    receiver.script("/hook", Reply(status=500))
    event = event_publish(environment=sandbox, type="judgment.created", data={"id": "j_1"})
    send(event)
    delivery = Delivery.objects.get(event=event)
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    deliveries_send(delivery_ids=[delivery.pk], wait_for_all=True, top_up=False)
    assert Delivery.objects.get(pk=delivery.pk).attempt_count == 2
    client = portal(sandbox)
    path = f"/portal/deliveries/{delivery.public_id}/"

    assert "Request of attempt 1" in shown(client.get(path, {"attempt": "1"}))
    assert "Request of attempt 2" in shown(client.get(path, {"attempt": attempt}))


def test_a_rotated_secret_is_said_and_a_purged_one_is_not_shown(sandbox, receiver):
    created = endpoint_create(environment=sandbox, url=f"{receiver.url}/hook")
    event = event_publish(environment=sandbox, type="packet.created")
    send(event)
    delivery = Delivery.objects.get(event=event)
    client = portal(sandbox)
    url = f"/portal/deliveries/{delivery.public_id}/"
    signed = receiver.received("/hook")[0].headers["MD-Signature"]

    endpoint_secret_rotate(endpoint=created.endpoint, overlap_seconds=3600)
    text = shown(client.get(url))
    assert "The signing secret was rotated after this attempt" in text
    assert f"MD-Signature: {signed}" in text  # the old secret still signs: the same signature

    endpoint_secret_rotate(endpoint=created.endpoint, overlap_seconds=0)
    expired_secrets_purge(now=timezone.now() + timedelta(seconds=1))
    text = shown(client.get(url))
    assert "its signature headers cannot be shown" in text
    request = text.split("POST ")[1].split("Body")[0]
    assert "MD-Delivery-Id" in request
    assert "MD-Signature" not in request and "webhook-signature" not in request


def test_retry_and_recover_go_through_the_services(world):
    own = world["own"]
    receiver = world["receiver"]
    client = portal(own["environment"])
    delivery = own["delivery"]

    retried = client.post(f"/portal/deliveries/{delivery.public_id}/retry", follow=True)
    assert "Retry queued" in page(retried)
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    deliveries_send(delivery_ids=[delivery.pk], wait_for_all=True, top_up=False)
    assert len(receiver.received("/own")) == 2

    endpoint = own["endpoint"]
    url = f"/portal/endpoints/{endpoint.public_id}/recover"
    assert 'name="since"' in page(client.get(url))  # the endpoint page's "Recover" link
    refused = client.post(url, {"since": "yesterday"})
    assert refused.status_code == 400
    assert "Give the time to recover from" in refused.content.decode()
    future = (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    refused = client.post(url, {"since": future})
    assert refused.status_code == 400
    assert "since must be in the past" in refused.content.decode()
    since = (timezone.now() - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")
    made = client.post(url, {"since": since})
    assert made.status_code == 302
    recovery = Recovery.objects.filter(endpoint=endpoint).latest("created_at")
    assert made["Location"] == f"/portal/recoveries/{recovery.public_id}/"
    assert recovery.since.strftime("%Y-%m-%dT%H:%M:%S") == since

    full = page(client.get(made["Location"]))
    assert 'hx-get="/portal/recoveries/' in full and "<html" in full
    fragment = page(client.get(made["Location"], headers={"HX-Request": "true"}))
    assert "<html" not in fragment and 'id="recovery-progress"' in fragment
    Recovery.objects.filter(pk=recovery.pk).update(status="completed", deliveries_requeued=3)
    done = page(client.get(made["Location"], headers={"HX-Request": "true"}))
    assert "hx-get" not in done and "3</strong> deliveries" in done


def test_catalog_has_a_sample_payload_for_every_type(sandbox):
    text = html.unescape(page(portal(sandbox).get("/portal/event-types/")))
    samples = re.findall(r"<pre>(\{.*?)</pre>", text, re.S)
    assert [json.loads(s)["type"] for s in samples] == list(EVENT_TYPES)
    assert all(json.loads(s)["environment"] == "sandbox" for s in samples)


def test_verifying_page_never_shows_the_secret_and_its_code_verifies(world, tmp_path):
    own = world["own"]
    client = portal(own["environment"])
    endpoint = own["endpoint"]
    # Two secrets, both signing.
    rotated = endpoint_secret_rotate(endpoint=endpoint, overlap_seconds=60).signing_secret
    text = page(client.get("/portal/verifying/", {"endpoint": endpoint.public_id}))
    assert own["secret"] not in text and rotated not in text
    assert f'value="{endpoint.public_id}"' in page(client.get("/portal/verifying/"))
    assert endpoint.public_id in text

    got = world["receiver"].received("/own")[0]
    code = {
        name: html.unescape(snippet)
        for name, snippet in re.findall(r'<code id="code-([\w-]+)">(.*?)</code>', text, re.S)
    }
    assert set(code) == {"python", "javascript", "standard-python", "standard-javascript"}
    assert all(endpoint.public_id in snippet for snippet in code.values())
    environment = {**os.environ, "KINETIC_WEBHOOK_SECRET": own["secret"]}
    delivery = tmp_path / "delivery.json"
    delivery.write_text(json.dumps({"body": got.body.decode(), "headers": got.headers}))
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps({"body": got.body.decode() + " ", "headers": got.headers}))

    python_check = "\nimport json, sys\nd = json.load(open(sys.argv[1]))\n"
    python_check += "verify_delivery(d['body'].encode(), d['headers'])\nprint('verified')\n"
    for name in ("python", "standard-python"):
        for file, verified in ((delivery, True), (bad, False)):
            result = subprocess.run(
                [sys.executable, "-c", code[name] + python_check, str(file)],
                capture_output=True,
                text=True,
                env=environment,
                timeout=30,
            )
            assert (result.stdout.strip() == "verified") is verified, (name, result.stderr)

    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "standardwebhooks").is_dir():
        pytest.skip("needs Node.js and `npm ci --prefix tests/node` for the JavaScript samples")
    js_check = (
        "\nconst fs = require('node:fs');\n"
        "const d = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));\n"
        "const h = Object.fromEntries(Object.entries(d.headers).map(([k, v]) => "
        "[k.toLowerCase(), v]));\n"
        "verifyDelivery(Buffer.from(d.body), h);\nconsole.log('verified');\n"
    )
    for name in ("javascript", "standard-javascript"):
        script = tmp_path / f"{name}.js"
        script.write_text(code[name] + js_check)
        for file, verified in ((delivery, True), (bad, False)):
            result = subprocess.run(
                [node, str(script), str(file)],
                capture_output=True,
                text=True,
                env={**environment, "NODE_PATH": str(NODE_DIR / "node_modules")},
                timeout=30,
            )
            assert (result.stdout.strip() == "verified") is verified, (name, result.stderr)
