"""The operators' console, through Django's test client: every page, filter, search and
action, the secrets it shows once and never again, and the read-only operators' group.

Deliveries are real: events are published and fanned out by the services, and sent in this
process (`deliveries_send`) to a real receiver on 127.0.0.1.
"""

import html
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db.models import Model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.keys import key_hash
from accounts.models import ApiKey, Environment, Organization
from accounts.services import api_key_create, organization_create
from api.models import IdempotencyRecord
from core import encryption
from deliveries import signature
from deliveries.dispatch import deliveries_send
from deliveries.models import Delivery, DeliveryAttempt, Event, Recovery
from deliveries.recovery import recovery_create
from deliveries.services import event_fan_out, event_publish
from tests import factories
from tests.servers import Receiver, Reply
from webhooks.models import EndpointSecret, WebhookEndpoint
from webhooks.services import endpoint_create, endpoint_delete, endpoint_update

pytestmark = pytest.mark.django_db

OPERATORS_GROUP = "Operators (read-only)"
UTC_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")
# Django's own display of a time ("Dec. 3, 2026, 3:14 a.m."), which the console replaces.
LOCALE_TIME = re.compile(
    r"(?:Jan|Feb|March|April|May|June|July|Aug|Sept|Oct|Nov|Dec)\.? \d{1,2}, \d{4}"
    r"|[ap]\.m\.|midnight"
)
SECRET_RE = re.compile(r"whsec_[0-9A-Za-z]{24,}")
RAW_KEY_RE = re.compile(r"md_(?:test|live)_[0-9A-Za-z]{32,}")


@dataclass
class Console:
    """One of everything, in two organizations."""

    acme: Organization
    acme_sandbox: Environment
    globex_production: Environment
    healthy: WebhookEndpoint  # its delivery succeeded
    failing: WebhookEndpoint  # its delivery failed once (500) and waits for a retry
    production: WebhookEndpoint  # globex production, never delivered to
    secrets: list[str]  # every signing secret created
    event: Event
    ok_delivery: Delivery
    failed_delivery: Delivery
    api_key: ApiKey


@pytest.fixture
def console(db, settings, receiver: Receiver) -> Console:
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # the receiver lives on 127.0.0.1
    acme = organization_create(slug="acme", name="Acme")
    globex = organization_create(slug="globex")
    acme_sandbox = acme.environments.get(name="sandbox")
    globex_production = globex.environments.get(name="production")
    healthy = endpoint_create(
        environment=acme_sandbox, url=f"{receiver.url}/healthy", enabled_events=["judgment.created"]
    )
    failing = endpoint_create(environment=acme_sandbox, url=f"{receiver.url}/failing")
    production = endpoint_create(
        environment=globex_production, url="https://example.com/globex-hooks"
    )
    receiver.script("/failing", Reply(status=500, body=b"upstream exploded " * 40))
    event = event_publish(environment=acme_sandbox, type="judgment.created", data={"n": 1})
    event_fan_out(event_id=event.pk)
    deliveries_send(
        delivery_ids=list(event.deliveries.values_list("id", flat=True)), wait_for_all=True
    )
    api_key, _ = api_key_create(environment=acme_sandbox, scopes=["events:read"], name="ci")
    recovery_create(
        endpoint=WebhookEndpoint.objects.get(pk=failing.endpoint.pk),
        since=timezone.now() - timedelta(hours=1),
    )
    return Console(
        acme=acme,
        acme_sandbox=acme_sandbox,
        globex_production=globex_production,
        healthy=healthy.endpoint,
        failing=WebhookEndpoint.objects.get(pk=failing.endpoint.pk),
        production=production.endpoint,
        secrets=[healthy.signing_secret, failing.signing_secret, production.signing_secret],
        event=event,
        ok_delivery=Delivery.objects.get(event=event, endpoint=healthy.endpoint),
        failed_delivery=Delivery.objects.get(event=event, endpoint=failing.endpoint),
        api_key=api_key,
    )


def changelist(model: str) -> str:
    return reverse(f"admin:{model}_changelist")


ENDPOINTS = changelist("webhooks_webhookendpoint")
EVENTS = changelist("deliveries_event")
DELIVERIES = changelist("deliveries_delivery")
ATTEMPTS = changelist("deliveries_deliveryattempt")
API_KEYS = changelist("accounts_apikey")
ORGANIZATIONS = changelist("accounts_organization")
IDEMPOTENCY = changelist("api_idempotencyrecord")
RECOVERIES = changelist("deliveries_recovery")


def listed(response, pattern: str) -> set[str]:
    """The ids matching `pattern` in the changelist's result table."""
    assert response.status_code == 200, response.content[:500]
    html = response.content.decode()
    start = html.find('id="result_list"')
    if start == -1:
        return set()  # an empty changelist has no table
    return set(re.findall(pattern, html[start : html.find("</table>", start)]))


def endpoints_listed(client: Client, **params: str) -> set[str]:
    return listed(client.get(ENDPOINTS, params), r"we_[0-9A-Za-z]{14}")


def deliveries_listed(client: Client, **params: str) -> set[str]:
    return listed(client.get(DELIVERIES, params), r"dlv_[0-9A-Za-z]{20}")


def run_action(client: Client, url: str, action: str, objects: list, **extra: str):
    return client.post(
        url,
        {"action": action, "_selected_action": [str(o.pk) for o in objects], "index": "0", **extra},
    )


def pks(model: type[Model]) -> list[int]:
    return list(model._default_manager.values_list("pk", flat=True))


def every_page(console: Console) -> list[str]:
    """Every admin page showing the console's objects: lists, object pages, histories."""
    objects = [
        ("accounts_organization", console.acme.pk),
        ("accounts_environment", console.acme_sandbox.pk),
        ("accounts_apikey", console.api_key.pk),
        ("webhooks_webhookendpoint", console.healthy.pk),
        ("webhooks_webhookendpoint", console.failing.pk),
        ("webhooks_webhookendpoint", console.production.pk),
        ("deliveries_event", console.event.pk),
        ("deliveries_delivery", console.ok_delivery.pk),
        ("deliveries_delivery", console.failed_delivery.pk),
        *[("deliveries_deliveryattempt", pk) for pk in pks(DeliveryAttempt)],
        *[("api_idempotencyrecord", pk) for pk in pks(IdempotencyRecord)],
        *[("deliveries_recovery", pk) for pk in pks(Recovery)],
    ]
    pages = [reverse("admin:index"), reverse("admin:app_list", args=["webhooks"])]
    pages += [ENDPOINTS, EVENTS, DELIVERIES, ATTEMPTS, API_KEYS, ORGANIZATIONS, IDEMPOTENCY]
    pages += [RECOVERIES]
    for model, pk in objects:
        pages.append(reverse(f"admin:{model}_change", args=[pk]))
        pages.append(reverse(f"admin:{model}_history", args=[pk]))
    return pages


# --- Pages -------------------------------------------------------------------------------


def test_every_changelist_and_object_page_renders_with_its_data(admin_client, console):
    pages = {
        ENDPOINTS: [console.healthy.public_id, console.failing.public_id, "globex-hooks"],
        EVENTS: [console.event.public_id, "judgment.created"],
        DELIVERIES: [console.ok_delivery.public_id, console.failed_delivery.public_id],
        ATTEMPTS: [console.ok_delivery.public_id, console.failed_delivery.public_id],
        API_KEYS: [console.api_key.prefix, "events:read"],
        ORGANIZATIONS: ["acme", "globex"],
    }
    for url, expected in pages.items():
        html = admin_client.get(url).content.decode()
        for text in expected:
            assert text in html, (url, text)
    for page in every_page(console):
        assert admin_client.get(page).status_code == 200, page
    for add in ("accounts_organization_add", "accounts_apikey_add"):
        assert admin_client.get(reverse(f"admin:{add}")).status_code == 200
    key_form = admin_client.get(reverse("admin:accounts_apikey_add")).content.decode()
    assert 'name="_addanother"' not in key_form  # saving always shows the raw key


def test_endpoint_list_shows_last_delivery_and_failure_streak(admin_client, console):
    html = admin_client.get(ENDPOINTS).content.decode()
    assert "succeeded (200)" in html
    assert "pending (500)" in html
    assert re.search(r"1 failure since <time [^>]*>\d\d:\d\d:\d\dZ</time>", html)
    page = admin_client.get(
        reverse("admin:webhooks_webhookendpoint_change", args=[console.failing.pk])
    )
    html = page.content.decode()
    assert "1 signing: created" in html and "current (no expiry)" in html
    assert f"?endpoint={console.failing.pk}" in html  # a link to its deliveries


def test_organization_page_shows_its_two_environments(admin_client, console):
    html = admin_client.get(
        reverse("admin:accounts_organization_change", args=[console.acme.pk])
    ).content.decode()
    assert "Sandbox" in html and "Production" in html
    assert html.count("?environment=") == 2
    assert "acme/sandbox" not in html  # no stray line of each row's `__str__`


def test_attempts_inline_truncates_the_response(admin_client, console):
    html = admin_client.get(
        reverse("admin:deliveries_delivery_change", args=[console.failed_delivery.pk])
    ).content.decode()
    assert "upstream exploded" in html
    assert ("upstream exploded " * 40).strip() not in html  # 720 characters, cut to 200
    attempt = DeliveryAttempt.objects.get(delivery=console.failed_delivery)
    full = admin_client.get(reverse("admin:deliveries_deliveryattempt_change", args=[attempt.pk]))
    assert ("upstream exploded " * 40).strip() in full.content.decode()


def test_event_page_lists_its_deliveries_and_payload(admin_client, console):
    html = admin_client.get(
        reverse("admin:deliveries_event_change", args=[console.event.pk])
    ).content.decode()
    assert console.ok_delivery.public_id in html and console.failed_delivery.public_id in html
    assert "2 deliveries" in html and f"?event={console.event.pk}" in html
    assert "&quot;n&quot;: 1" in html  # the payload, pretty-printed


# --- Filters and search ------------------------------------------------------------------


def test_endpoint_filters(admin_client, console):
    healthy, failing, production = (
        console.healthy.public_id,
        console.failing.public_id,
        console.production.public_id,
    )
    assert endpoints_listed(admin_client) == {healthy, failing, production}
    assert endpoints_listed(admin_client, failing="yes") == {failing}
    assert endpoints_listed(admin_client, failing="no") == {healthy, production}
    assert endpoints_listed(admin_client, organization="globex") == {production}
    assert endpoints_listed(admin_client, organization="acme", failing="no") == {healthy}
    assert endpoints_listed(admin_client, organization="nobody") == set()
    assert endpoints_listed(admin_client, environment__name__exact="production") == {production}
    assert endpoints_listed(admin_client, environment__name__exact="sandbox") == {healthy, failing}

    endpoint_delete(endpoint=console.production)
    assert endpoints_listed(admin_client, deleted="yes") == {production}
    assert endpoints_listed(admin_client, deleted="no") == {healthy, failing}
    assert endpoints_listed(admin_client, status__exact="disabled") == {production}
    assert endpoints_listed(admin_client, status__exact="enabled") == {healthy, failing}


def test_endpoints_sort_worst_failure_streak_first(admin_client, console):
    header = admin_client.get(ENDPOINTS).content.decode()
    column = re.search(r'column-failure_streak.*?href="\?o=(\d+)"', header, re.DOTALL)
    assert column, "the failure streak column is sortable"
    html = admin_client.get(ENDPOINTS, {"o": f"-{column[1]}"}).content.decode()
    start = html.find('id="result_list"')
    ids = re.findall(r"we_[0-9A-Za-z]{14}", html[start:])
    assert ids[0] == console.failing.public_id


def test_endpoint_search_by_id_url_and_organization(admin_client, console):
    healthy, failing = console.healthy.public_id, console.failing.public_id
    assert endpoints_listed(admin_client, q=healthy) == {healthy}
    assert endpoints_listed(admin_client, q=f"  {failing} ") == {failing}
    # Ids are case-sensitive. Swapped, not upper-cased: an id drawn with no lower-case letter
    # (about 1 in 2,000) is its own upper case, and was found.
    other_case = "we_" + healthy.removeprefix("we_").swapcase()
    assert other_case != healthy
    assert endpoints_listed(admin_client, q=other_case) == set()
    assert endpoints_listed(admin_client, q="/failing") == {failing}
    assert endpoints_listed(admin_client, q="globex-hooks") == {console.production.public_id}
    assert endpoints_listed(admin_client, q="acme") == {healthy, failing}
    assert endpoints_listed(admin_client, q="nothing-like-this") == set()


def test_delivery_filters_and_search(admin_client, console):
    ok, failed = console.ok_delivery.public_id, console.failed_delivery.public_id
    other_event = event_publish(environment=console.globex_production, type="packet.created")
    event_fan_out(event_id=other_event.pk)
    globex_delivery = Delivery.objects.get(event=other_event).public_id

    assert deliveries_listed(admin_client) == {ok, failed, globex_delivery}
    assert deliveries_listed(admin_client, status__exact="succeeded") == {ok}
    assert deliveries_listed(admin_client, status__exact="pending") == {failed, globex_delivery}
    assert deliveries_listed(admin_client, endpoint__environment__name__exact="production") == {
        globex_delivery
    }
    assert deliveries_listed(admin_client, organization="acme") == {ok, failed}
    assert deliveries_listed(admin_client, q=ok) == {ok}
    assert deliveries_listed(admin_client, q=console.event.public_id) == {ok, failed}
    assert deliveries_listed(admin_client, q=console.failing.public_id) == {failed}
    assert deliveries_listed(admin_client, q="upstream") == set()
    assert deliveries_listed(admin_client, endpoint=str(console.healthy.pk)) == {ok}
    assert deliveries_listed(admin_client, event=str(other_event.pk)) == {globex_delivery}


def test_event_filters_and_search(admin_client, console):
    packet = event_publish(environment=console.globex_production, type="packet.created")
    judgment = console.event.public_id

    def events_listed(**params: str) -> set[str]:
        return listed(admin_client.get(EVENTS, params), r"evt_[0-9A-Za-z]{20}")

    assert events_listed() == {judgment, packet.public_id}
    assert events_listed(type="packet.created") == {packet.public_id}
    assert events_listed(environment__name__exact="sandbox") == {judgment}
    assert events_listed(organization="globex") == {packet.public_id}
    assert events_listed(q=judgment) == {judgment}
    assert events_listed(q="judgment.created") == set()


def test_attempt_search_and_filter(admin_client, console):
    def attempts_listed(**params: str) -> set[str]:
        return listed(admin_client.get(ATTEMPTS, params), r"dlv_[0-9A-Za-z]{20}")

    ok, failed = console.ok_delivery.public_id, console.failed_delivery.public_id
    assert attempts_listed() == {ok, failed}
    assert attempts_listed(q=failed) == {failed}
    assert attempts_listed(succeeded__exact="1") == {ok}


def test_api_key_filters_and_search(admin_client, console):
    revoked, _ = api_key_create(environment=console.globex_production, scopes=["events:write"])
    run_action(admin_client, API_KEYS, "revoke", [revoked])

    def keys_listed(**params: str) -> set[str]:
        return listed(admin_client.get(API_KEYS, params), r"md_(?:test|live)_[0-9A-Za-z]{8}")

    active = console.api_key.prefix
    assert keys_listed() == {active, revoked.prefix}
    assert keys_listed(revoked="yes") == {revoked.prefix}
    assert keys_listed(revoked="no") == {active}
    assert keys_listed(environment__name__exact="production") == {revoked.prefix}
    assert keys_listed(organization="acme") == {active}
    assert keys_listed(q=revoked.prefix[:12]) == {revoked.prefix}


@pytest.mark.parametrize(
    ("page", "param"),
    [
        # Typed into a box (console.base.TextInputFilter)
        (ENDPOINTS, "organization"),
        (DELIVERIES, "organization"),
        (EVENTS, "organization"),
        (RECOVERIES, "organization"),
        (API_KEYS, "organization"),
        # Chosen from the catalog (console.deliveries.EventTypeFilter)
        (EVENTS, "type"),
        # Django's own choices filter
        (ENDPOINTS, "status__exact"),
        (DELIVERIES, "status__exact"),
    ],
)
def test_a_filter_value_with_a_nul_byte_lists_nothing(admin_client, console, page, param):
    # PostgreSQL text never holds U+0000; sent in the query, the value was a DataError (a 500).
    any_id = r"(?:we|evt|dlv|rcv)_[0-9A-Za-z]{14,}|md_(?:test|live)_[0-9A-Za-z]{8}"
    assert listed(admin_client.get(page, {param: "acme\x00"}), any_id) == set()


@pytest.mark.parametrize(
    ("page", "action"),
    [
        (ENDPOINTS, "disable"),
        (ENDPOINTS, "rotate_secret"),
        (DELIVERIES, "retry_now"),
        (API_KEYS, "revoke"),
    ],
)
def test_an_action_on_a_selection_that_is_no_id_changes_nothing(
    admin_client, console, page, action
):
    # Django's admin looked "abc" up as an id before the action ran: a ValueError, a 500.
    selected = [str(console.api_key.pk), "abc"]
    response = admin_client.post(
        page, {"action": action, "_selected_action": selected, "index": "0"}, follow=True
    )
    assert response.status_code == 200
    assert "is not a row&#x27;s id; nothing was changed" in response.content.decode()
    console.api_key.refresh_from_db()
    assert console.api_key.revoked_at is None


# --- Endpoint actions ----------------------------------------------------------------------


def test_disable_cancels_queued_deliveries_and_enable_restores(admin_client, console):
    response = run_action(admin_client, ENDPOINTS, "disable", [console.failing])
    assert response.status_code == 302
    console.failing.refresh_from_db()
    assert console.failing.status == "disabled"
    assert console.failing.consecutive_failures == 0
    console.failed_delivery.refresh_from_db()
    assert console.failed_delivery.status == "cancelled"  # through endpoint_update
    assert "Disabled 1 endpoint(s)." in admin_client.get(response.url).content.decode()

    run_action(admin_client, ENDPOINTS, "enable", [console.failing, console.healthy])
    console.failing.refresh_from_db()
    assert console.failing.status == "enabled"
    history = admin_client.get(
        reverse("admin:webhooks_webhookendpoint_history", args=[console.failing.pk])
    )
    assert "Status set to disabled." in history.content.decode()
    assert "Status set to enabled." in history.content.decode()


def test_enable_skips_deleted_endpoints(admin_client, console):
    endpoint_delete(endpoint=console.production)
    response = run_action(admin_client, ENDPOINTS, "enable", [console.production])
    console.production.refresh_from_db()
    assert console.production.status == "disabled"
    assert "Skipped deleted endpoint(s)" in admin_client.get(response.url).content.decode()


def test_rotate_secret_asks_for_the_overlap_then_shows_the_new_secret_once(admin_client, console):
    confirm = run_action(admin_client, ENDPOINTS, "rotate_secret", [console.failing])
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert 'name="overlap_seconds"' in html and 'value="86400"' in html
    assert console.failing.public_id in html
    assert not SECRET_RE.search(html)
    assert EndpointSecret.objects.filter(endpoint=console.failing).count() == 1  # not yet

    before = timezone.now()
    done = admin_client.post(
        ENDPOINTS,
        {
            "action": "rotate_secret",
            "_selected_action": [str(console.failing.pk)],
            "overlap_seconds": "3600",
            "confirm": "Rotate secret",
        },
    )
    assert done.status_code == 200
    assert "no-store" in done["Cache-Control"]  # not kept in the browser's cache either
    html = done.content.decode()
    shown = SECRET_RE.findall(html)
    assert len(shown) == 1
    new_secret = shown[0]
    assert "keeps signing for 3600 s, until" in html

    signing = list(EndpointSecret.objects.signing().filter(endpoint=console.failing))
    assert len(signing) == 2
    assert encryption.decrypt(signing[0].ciphertext) == new_secret  # newest first
    assert signing[1].expires_at is not None
    assert timedelta(seconds=3590) < signing[1].expires_at - before < timedelta(seconds=3610)

    # Never again: not on any page, nor the ciphertext, nor the secrets made before.
    ciphertexts = list(EndpointSecret.objects.values_list("ciphertext", flat=True))
    for page in every_page(console):
        html = admin_client.get(page).content.decode()
        for secret in [new_secret, *console.secrets, *ciphertexts]:
            assert secret not in html, page
        assert not SECRET_RE.search(html), page


def test_rotate_secret_with_no_overlap_revokes_the_old_one_at_once(admin_client, console):
    done = admin_client.post(
        ENDPOINTS,
        {
            "action": "rotate_secret",
            "_selected_action": [str(console.healthy.pk), str(console.failing.pk)],
            "overlap_seconds": "0",
            "confirm": "Rotate secrets",
        },
    )
    html = done.content.decode()
    assert len(set(SECRET_RE.findall(html))) == 2
    assert html.count("revoked at once (overlap 0)") == 2
    for endpoint in (console.healthy, console.failing):
        assert EndpointSecret.objects.signing().filter(endpoint=endpoint).count() == 1


def test_rotate_secret_refuses_a_bad_overlap_and_rotates_nothing(admin_client, console):
    for overlap in ("-1", "soon", str(8 * 24 * 3600)):
        page = admin_client.post(
            ENDPOINTS,
            {
                "action": "rotate_secret",
                "_selected_action": [str(console.failing.pk)],
                "overlap_seconds": overlap,
                "confirm": "Rotate secret",
            },
        )
        assert page.status_code == 200
        assert 'class="errorlist' in page.content.decode()
        assert not SECRET_RE.search(page.content.decode())
    assert EndpointSecret.objects.filter(endpoint=console.failing).count() == 1


def test_send_test_event_delivers_a_ping_to_that_endpoint_only(admin_client, console, receiver):
    deliveries_before = set(Delivery.objects.values_list("pk", flat=True))
    response = run_action(admin_client, ENDPOINTS, "send_test_event", [console.healthy])
    assert response.status_code == 302
    new = Delivery.objects.exclude(pk__in=deliveries_before)
    assert new.count() == 1
    delivery = new.get()
    assert delivery.endpoint_id == console.healthy.pk
    assert delivery.event.type == "ping"
    assert delivery.event.fanned_out_at is not None  # never fanned out to anyone else
    event_fan_out(event_id=delivery.event_id)  # even if asked, it fans out to no one
    assert Delivery.objects.filter(event=delivery.event).count() == 1

    deliveries_send(delivery_ids=[delivery.pk], wait_for_all=True)
    received = receiver.received("/healthy")[-1]
    assert received.headers["MD-Event-Type"] == "ping"
    assert received.json["data"] == {"webhook_endpoint_id": console.healthy.public_id}
    signature.verify(received.body, received.headers["MD-Signature"], [console.secrets[0]])
    delivery.refresh_from_db()
    assert delivery.status == "succeeded"


def test_send_test_event_refuses_a_disabled_endpoint(admin_client, console):
    run_action(admin_client, ENDPOINTS, "disable", [console.failing])
    count = Delivery.objects.count()
    response = run_action(admin_client, ENDPOINTS, "send_test_event", [console.failing])
    assert Delivery.objects.count() == count
    assert "Only an enabled endpoint" in admin_client.get(response.url).content.decode()


def test_the_test_event_cannot_be_subscribed_to_or_published(console):
    api = factories.api_client(console.acme_sandbox)
    response = api.post(
        "/v1/webhook_endpoints", {"url": "https://example.com/x", "enabled_events": ["ping"]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "enabled_events"
    response = api.post("/v1/events", {"type": "ping"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "type"
    types = [t["type"] for t in api.get("/v1/event_types").json()["data"]]
    assert "ping" in types  # receivers can get it, so the catalog says what it is


# --- Delivery action -------------------------------------------------------------------------


def test_failing_now_leaves_out_a_deleted_endpoint(admin_client, console):
    """Its failure streak stays for the record, but it is tried no more."""
    assert console.failing.public_id in endpoints_listed(admin_client, failing="yes")
    endpoint_delete(endpoint=console.failing)
    assert console.failing.public_id not in endpoints_listed(admin_client, failing="yes")


def test_retry_now_sends_another_attempt(admin_client, console, receiver):
    assert console.failed_delivery.next_attempt_at > timezone.now()  # waiting for its retry
    response = run_action(
        admin_client, DELIVERIES, "retry_now", [console.failed_delivery, console.ok_delivery]
    )
    assert response.status_code == 302
    for delivery in (console.failed_delivery, console.ok_delivery):
        delivery.refresh_from_db()
        assert delivery.status == "pending"
        assert delivery.next_attempt_at <= timezone.now()

    deliveries_send(
        delivery_ids=[console.failed_delivery.pk, console.ok_delivery.pk], wait_for_all=True
    )
    console.failed_delivery.refresh_from_db()
    assert console.failed_delivery.attempt_count == 2
    assert console.failed_delivery.status == "succeeded"  # the receiver's script ran out
    assert DeliveryAttempt.objects.filter(delivery=console.ok_delivery).count() == 2


def test_retry_now_leaves_a_delivery_in_flight_and_says_so(admin_client, console):
    # A worker holds the ok delivery: its attempt is in flight.
    Delivery.objects.filter(pk=console.ok_delivery.pk).update(
        claimed_until=timezone.now() + timedelta(minutes=1), claim_token=uuid.uuid4()
    )
    response = run_action(
        admin_client, DELIVERIES, "retry_now", [console.failed_delivery, console.ok_delivery]
    )
    page = admin_client.get(response["Location"]).content.decode()
    assert "Queued 1 delivery(ies)" in page
    in_flight = f"Not retried: {console.ok_delivery.public_id}. An attempt of this delivery is in"
    assert in_flight in page
    held = Delivery.objects.get(pk=console.ok_delivery.pk)
    assert (held.status, held.completed_at) == ("succeeded", console.ok_delivery.completed_at)
    assert Delivery.objects.get(pk=console.failed_delivery.pk).status == "pending"


def test_retry_now_leaves_a_delivery_of_a_disabled_endpoint_and_says_so(admin_client, console):
    endpoint_update(endpoint=console.healthy, status="disabled")
    response = run_action(
        admin_client, DELIVERIES, "retry_now", [console.failed_delivery, console.ok_delivery]
    )
    page = html.unescape(admin_client.get(response["Location"]).content.decode())
    assert "Queued 1 delivery(ies)" in page
    refused = f"Not retried: {console.ok_delivery.public_id}. The delivery's webhook endpoint is"
    assert refused in page
    held = Delivery.objects.get(pk=console.ok_delivery.pk)
    assert (held.status, held.attempt_count) == ("succeeded", 1)


# --- API keys and organizations ------------------------------------------------------------


def test_api_key_add_shows_the_raw_key_once_and_it_works(admin_client, console):
    response = admin_client.post(
        reverse("admin:accounts_apikey_add"),
        {
            "environment": str(console.acme_sandbox.pk),
            "name": "deploy bot",
            "scopes": ["webhook_endpoints:read", "events:read"],
        },
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    raw_keys = RAW_KEY_RE.findall(html)
    assert len(raw_keys) == 1
    raw = raw_keys[0]
    api_key = ApiKey.objects.get(key_hash=key_hash(raw))
    assert api_key.name == "deploy bot"
    assert api_key.scopes == ["webhook_endpoints:read", "events:read"]
    assert api_key.environment == console.acme_sandbox
    assert api_key.prefix in html

    assert factories.ApiClient(raw).get("/v1/webhook_endpoints").status_code == 200
    for page in [
        *every_page(console),
        reverse("admin:accounts_apikey_change", args=[api_key.pk]),
        reverse("admin:accounts_apikey_history", args=[api_key.pk]),
    ]:
        html = admin_client.get(page).content.decode()
        assert raw not in html, page
        assert api_key.key_hash not in html, page
        assert not RAW_KEY_RE.search(html), page


def test_api_key_add_needs_a_scope(admin_client, console):
    count = ApiKey.objects.count()
    response = admin_client.post(
        reverse("admin:accounts_apikey_add"),
        {"environment": str(console.acme_sandbox.pk), "name": "x"},
    )
    assert response.status_code == 200
    assert 'class="errorlist' in response.content.decode()
    assert ApiKey.objects.count() == count


def test_api_key_add_with_an_environment_that_is_no_id_shows_the_form_again(admin_client, console):
    # The autocomplete widget looked "abc" up as an id to show it again: a ValueError, a 500.
    count = ApiKey.objects.count()
    response = admin_client.post(
        reverse("admin:accounts_apikey_add"), {"environment": "abc", "scopes": ["events:read"]}
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert ApiKey.objects.count() == count


def test_api_key_environment_search_finds_by_organization(admin_client, console):
    response = admin_client.get(
        reverse("admin:autocomplete"),
        {
            "app_label": "accounts",
            "model_name": "apikey",
            "field_name": "environment",
            "term": "glo/prod",
        },
    )
    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["globex/production"]
    # The term goes to the database as typed: one with U+0000 was a DataError (a 500).
    response = admin_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "accounts", "model_name": "apikey", "field_name": "environment",
         "term": "acme\x00"},
    )  # fmt: skip
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_revoke_action_revokes_the_key(admin_client, console):
    _, raw = factories.api_key(console.acme_sandbox)
    api_key = ApiKey.objects.get(key_hash=key_hash(raw))
    assert factories.ApiClient(raw).get("/v1/webhook_endpoints").status_code == 200
    response = run_action(admin_client, API_KEYS, "revoke", [api_key])
    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert factories.ApiClient(raw).get("/v1/webhook_endpoints").status_code == 401


def test_organization_add_creates_both_environments(admin_client, db):
    response = admin_client.post(
        reverse("admin:accounts_organization_add"), {"slug": "initech", "name": "Initech"}
    )
    assert response.status_code == 302
    organization = Organization.objects.get(slug="initech")
    assert sorted(organization.environments.values_list("name", flat=True)) == [
        "production",
        "sandbox",
    ]
    again = admin_client.post(reverse("admin:accounts_organization_add"), {"slug": "initech"})
    assert again.status_code == 200 and 'class="errorlist' in again.content.decode()


# --- Nothing is edited through forms --------------------------------------------------------


def test_no_form_edits_adds_or_deletes_what_services_own(admin_client, console):
    endpoint_page = reverse("admin:webhooks_webhookendpoint_change", args=[console.healthy.pk])
    assert 'name="_save"' not in admin_client.get(endpoint_page).content.decode()
    assert admin_client.post(endpoint_page, {"url": "https://evil.example"}).status_code == 403
    console.healthy.refresh_from_db()
    assert console.healthy.url.endswith("/healthy")
    for name in (
        "webhooks_webhookendpoint_add",
        "deliveries_event_add",
        "deliveries_delivery_add",
        "deliveries_deliveryattempt_add",
        "api_idempotencyrecord_add",
    ):
        assert admin_client.get(reverse(f"admin:{name}")).status_code == 403, name
    for name, pk in (
        ("webhooks_webhookendpoint_delete", console.healthy.pk),
        ("deliveries_delivery_delete", console.ok_delivery.pk),
        ("accounts_apikey_delete", console.api_key.pk),
        ("accounts_organization_delete", console.acme.pk),
    ):
        assert (
            admin_client.post(reverse(f"admin:{name}", args=[pk]), {"post": "yes"}).status_code
            == 403
        )
    key_page = reverse("admin:accounts_apikey_change", args=[console.api_key.pk])
    assert admin_client.post(key_page, {"name": "renamed"}).status_code == 403
    assert "EndpointSecret" not in str(admin_client.get(reverse("admin:index")).content)
    assert admin_client.get("/admin/webhooks/endpointsecret/").status_code == 404


def test_idempotency_records_never_show_the_replayed_secret(admin_client, console):
    api = factories.api_client(console.acme_sandbox)
    created = api.post(
        "/v1/webhook_endpoints",
        {"url": "https://example.com/idem"},
        headers={"Idempotency-Key": "admin-test-1"},
    )
    assert created.status_code == 201
    secret = created.json()["signing_secret"]
    record = IdempotencyRecord.objects.get(key="admin-test-1")
    assert record.response_body is not None
    stored = bytes(record.response_body).decode("latin-1")  # the replay, however it is kept
    for page in (
        IDEMPOTENCY,
        reverse("admin:api_idempotencyrecord_change", args=[record.pk]),
    ):
        html = admin_client.get(page).content.decode()
        assert "admin-test-1" in html
        assert secret not in html
        assert stored[:40] not in html


def test_idempotency_records_never_show_the_request_fingerprint(admin_client, console):
    # An unsalted SHA-256 of the body, which holds the header's value in clear: shown, it
    # would let a read-only operator test guesses of that value offline.
    api = factories.api_client(console.acme_sandbox)
    body = {"url": "https://example.com/idem", "headers": {"Authorization": "Basic hunter2"}}
    created = api.post("/v1/webhook_endpoints", body, headers={"Idempotency-Key": "admin-fp"})
    assert created.status_code == 201
    record = IdempotencyRecord.objects.get(key="admin-fp")
    for page in (
        IDEMPOTENCY,
        reverse("admin:api_idempotencyrecord_change", args=[record.pk]),
    ):
        html = admin_client.get(page).content.decode()
        assert "admin-fp" in html
        assert record.fingerprint not in html


# --- The read-only operators' group ---------------------------------------------------------


@pytest.fixture
def operator(db) -> Client:
    user = User.objects.create_user("operator", password="not-used", is_staff=True)
    user.groups.add(Group.objects.get(name=OPERATORS_GROUP))
    client = Client()
    client.force_login(user)
    return client


def test_operators_group_has_only_view_permissions(db):
    codenames = set(
        Group.objects.get(name=OPERATORS_GROUP).permissions.values_list("codename", flat=True)
    )
    assert codenames == {
        "view_organization",
        "view_environment",
        "view_apikey",
        "view_webhookendpoint",
        "view_event",
        "view_delivery",
        "view_deliveryattempt",
        "view_recovery",
        "view_idempotencyrecord",
    }


@pytest.mark.django_db(transaction=True)
def test_the_operators_group_is_made_again_by_migrate_and_flush():
    """A transactional test's flush (or an operator's) empties every table, the group a
    migration made included: post_migrate makes it again, so the modules run after such a
    test on the same process find it (tests/test_admin.py failed so in the whole suite)."""
    Group.objects.filter(name=OPERATORS_GROUP).delete()
    call_command("flush", interactive=False, verbosity=0)
    assert Group.objects.get(name=OPERATORS_GROUP).permissions.count() == 9
    Group.objects.filter(name=OPERATORS_GROUP).delete()
    call_command("migrate", verbosity=0)
    assert Group.objects.get(name=OPERATORS_GROUP).permissions.count() == 9


def test_read_only_operator_sees_every_page(operator, console):
    for page in every_page(console):
        assert operator.get(page).status_code == 200, page
    html = operator.get(ENDPOINTS).content.decode()
    assert console.healthy.public_id in html
    for url in (ENDPOINTS, DELIVERIES, API_KEYS, EVENTS, ATTEMPTS):
        assert 'name="action"' not in operator.get(url).content.decode(), url


def test_read_only_operator_can_run_no_action_and_change_nothing(operator, console):
    for action in ("disable", "send_test_event"):
        run_action(operator, ENDPOINTS, action, [console.healthy])
    operator.post(
        ENDPOINTS,
        {
            "action": "rotate_secret",
            "_selected_action": [str(console.healthy.pk)],
            "overlap_seconds": "0",
            "confirm": "Rotate secret",
        },
    )
    run_action(operator, DELIVERIES, "retry_now", [console.ok_delivery])
    run_action(operator, API_KEYS, "revoke", [console.api_key])

    console.healthy.refresh_from_db()
    assert console.healthy.status == "enabled"
    assert EndpointSecret.objects.filter(endpoint=console.healthy).count() == 1
    assert Delivery.objects.count() == 2
    console.ok_delivery.refresh_from_db()
    assert console.ok_delivery.status == "succeeded"
    console.api_key.refresh_from_db()
    assert console.api_key.revoked_at is None

    add_key = operator.post(
        reverse("admin:accounts_apikey_add"),
        {"environment": str(console.acme_sandbox.pk), "scopes": ["events:read"]},
    )
    assert add_key.status_code == 403
    assert ApiKey.objects.count() == 1
    assert (
        operator.post(reverse("admin:accounts_organization_add"), {"slug": "x"}).status_code == 403
    )


# --- On-call's pages: times, buttons, recent deliveries ---------------------------------------


def shown(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def endpoint_page(endpoint: WebhookEndpoint) -> str:
    return reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk])


def delivery_page(delivery: Delivery) -> str:
    return reverse("admin:deliveries_delivery_change", args=[delivery.pk])


def endpoint_action(endpoint: WebhookEndpoint, action: str) -> str:
    return reverse("admin:webhooks_webhookendpoint_object_action", args=[endpoint.pk, action])


def delivery_action(delivery: Delivery, action: str) -> str:
    return reverse("admin:deliveries_delivery_object_action", args=[delivery.pk, action])


def test_every_time_is_utc_to_the_second(admin_client, console):
    attempt = DeliveryAttempt.objects.get(delivery=console.failed_delivery)
    expected = {
        EVENTS: console.event.created_at,
        DELIVERIES: console.failed_delivery.next_attempt_at,
        ATTEMPTS: attempt.started_at,
        API_KEYS: console.api_key.created_at,
        RECOVERIES: Recovery.objects.get().since,
        reverse("admin:deliveries_event_change", args=[console.event.pk]): (
            Event.objects.get(pk=console.event.pk).fanned_out_at
        ),
        endpoint_page(console.failing): console.failing.created_at,
        delivery_page(console.failed_delivery): attempt.started_at,  # the attempts' table
        reverse("admin:accounts_apikey_change", args=[console.api_key.pk]): (
            console.api_key.created_at
        ),
    }
    for page, moment in expected.items():
        html = admin_client.get(page).content.decode()
        assert f'<time datetime="{shown(moment).replace(" ", "T")}">' in html, page

    run_action(admin_client, ENDPOINTS, "disable", [console.production])  # a history entry
    history = reverse("admin:webhooks_webhookendpoint_history", args=[console.production.pk])
    assert UTC_TIME.search(admin_client.get(history).content.decode())
    for page in every_page(console):
        html = admin_client.get(page).content.decode()
        assert not LOCALE_TIME.search(html), (page, LOCALE_TIME.search(html))


def test_endpoint_list_fits_on_call_columns(admin_client, console):
    html = admin_client.get(ENDPOINTS).content.decode()
    header = html[html.find('id="result_list"') : html.find("</thead>")]
    columns = re.findall(r'class="[^"]*column-(\w+)', header)
    assert columns == [
        "public_id",
        "environment_shown",
        "url_shown",
        "state",
        "order_and_rate",
        "last_delivery",
        "failure_streak",
    ]
    url = console.failing.url
    assert f'<span class="kinetic-clip" title="{url}">{url}</span>' in html
    assert "acme/sandbox" in html and "globex/production" in html


def test_deliveries_list_shows_the_endpoint_url_and_the_whole_error(admin_client, console):
    run_action(admin_client, ENDPOINTS, "disable", [console.failing])  # cancels its delivery
    html = admin_client.get(DELIVERIES).content.decode()
    assert f'title="{console.failing.url}"' in html and f">{console.failing.url}<" in html
    assert "500 · endpoint disabled" in html  # the code, then the cancel's reason, whole
    assert f'title="{console.event.public_id}">judgment.created</a>' in html


def test_endpoint_page_shows_its_newest_20_deliveries(admin_client, console):
    for _ in range(22):
        event = event_publish(environment=console.acme_sandbox, type="packet.created")
        event_fan_out(event_id=event.pk)
    newest = list(Delivery.objects.filter(endpoint=console.failing).order_by("-created_at", "-id"))
    assert len(newest) == 23
    html = admin_client.get(endpoint_page(console.failing)).content.decode()
    table = html[html.find('id="deliveries-group"') :]
    listed = re.findall(r"dlv_[0-9A-Za-z]{20}", table)
    assert listed == [d.public_id for d in newest[:20]]
    assert "Recent deliveries (the newest 20)" in table
    assert "packet.created" in table and "Pending" in table
    assert f"?endpoint={console.failing.pk}" in html  # the rest: the filtered list


def test_endpoint_page_buttons_follow_permission_and_state(admin_client, operator, console):
    html = admin_client.get(endpoint_page(console.failing)).content.decode()
    for action in ("send_test_event", "recover", "rotate_secret", "disable"):
        assert f'action="{endpoint_action(console.failing, action)}"' in html, action
    assert endpoint_action(console.failing, "enable") not in html
    assert (
        reverse("admin:webhooks_webhookendpoint_delivery_control", args=[console.failing.pk])
        in html
    )

    run_action(admin_client, ENDPOINTS, "disable", [console.failing])
    html = admin_client.get(endpoint_page(console.failing)).content.decode()
    assert endpoint_action(console.failing, "enable") in html
    for action in ("send_test_event", "recover", "disable"):
        assert endpoint_action(console.failing, action) not in html, action

    endpoint_delete(endpoint=console.production)
    html = admin_client.get(endpoint_page(console.production)).content.decode()
    assert "/actions/" not in html and "delivery_control" not in html

    for page in (endpoint_page(console.healthy), delivery_page(console.failed_delivery)):
        html = operator.get(page).content.decode()
        assert "/actions/" not in html and "delivery_control" not in html, page
        assert "History" in html  # the admin's own tool is still there


def test_endpoint_buttons_run_the_actions_on_that_endpoint(admin_client, console, receiver):
    response = admin_client.post(endpoint_action(console.failing, "disable"))
    assert response.status_code == 302 and response["Location"] == endpoint_page(console.failing)
    console.failing.refresh_from_db()
    assert console.failing.status == "disabled"
    assert "Disabled 1 endpoint(s)." in admin_client.get(response["Location"]).content.decode()
    console.healthy.refresh_from_db()
    assert console.healthy.status == "enabled"  # that endpoint alone
    admin_client.post(endpoint_action(console.failing, "enable"))
    console.failing.refresh_from_db()
    assert console.failing.status == "enabled"

    before = set(Delivery.objects.values_list("pk", flat=True))
    admin_client.post(endpoint_action(console.healthy, "send_test_event"))
    ping = Delivery.objects.exclude(pk__in=before).get()
    assert (ping.endpoint_id, ping.event.type) == (console.healthy.pk, "ping")

    # Actions that ask first: their page posts back to the button's address.
    url = endpoint_action(console.healthy, "rotate_secret")
    confirm = admin_client.post(url)
    assert confirm.status_code == 200 and 'name="overlap_seconds"' in confirm.content.decode()
    assert EndpointSecret.objects.filter(endpoint=console.healthy).count() == 1
    done = admin_client.post(url, {"overlap_seconds": "60", "confirm": "Rotate secret"})
    assert len(SECRET_RE.findall(done.content.decode())) == 1
    assert EndpointSecret.objects.filter(endpoint=console.healthy).count() == 2

    url = endpoint_action(console.healthy, "recover")
    assert 'name="since"' in admin_client.post(url).content.decode()
    since = shown(timezone.now() - timedelta(hours=1))[:-1]
    started = admin_client.post(url, {"since": since, "confirm": "Recover"})
    assert started.status_code == 302 and started["Location"] == endpoint_page(console.healthy)
    assert Recovery.objects.filter(endpoint=console.healthy).count() == 1


def test_delivery_page_retries_now_and_shows_attempts_without_a_stray_label(admin_client, console):
    delivery = console.failed_delivery
    html = admin_client.get(delivery_page(delivery)).content.decode()
    assert f'action="{delivery_action(delivery, "retry_now")}"' in html
    assert console.failing.url in html  # the endpoint's URL, beside its id
    attempts = html[html.find('id="attempts-group"') :]
    assert f"{delivery.pk}#1" not in attempts and ">View<" not in attempts
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert reverse("admin:deliveries_deliveryattempt_change", args=[attempt.pk]) in attempts

    response = admin_client.post(delivery_action(delivery, "retry_now"))
    assert response.status_code == 302 and response["Location"] == delivery_page(delivery)
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.next_attempt_at <= timezone.now()
    assert "Queued 1 delivery(ies)" in admin_client.get(response["Location"]).content.decode()


def test_object_actions_are_posted_allowed_and_listed(admin_client, operator, console):
    url = endpoint_action(console.healthy, "disable")
    assert admin_client.get(url).status_code == 405
    assert operator.post(url).status_code == 403
    assert operator.post(delivery_action(console.ok_delivery, "retry_now")).status_code == 403
    assert admin_client.post(endpoint_action(console.healthy, "delete_selected")).status_code == 403
    missing = reverse("admin:webhooks_webhookendpoint_object_action", args=[10**9, "disable"])
    assert admin_client.post(missing).status_code == 404
    console.healthy.refresh_from_db()
    assert console.healthy.status == "enabled"
    console.ok_delivery.refresh_from_db()
    assert console.ok_delivery.status == "succeeded"
