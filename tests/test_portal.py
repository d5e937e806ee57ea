"""The customer portal without a browser: `POST /v1/portal_sessions`, the one-time link, the
session cookie, tenancy on every endpoint page and action, read-only sessions, CSRF, the
security headers, and the endpoint pages changing what the API then returns.

(tests/test_portal_browser.py drives the same pages in a real browser.)
"""

import json
import re
import threading
from datetime import datetime, timedelta
from html import unescape
from io import StringIO
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts import scopes
from accounts.models import PortalSession
from accounts.tasks import prune_portal_sessions_task
from deliveries import figures, sql
from deliveries.models import Delivery
from deliveries.services import event_fan_out, event_publish
from tests import factories
from tests.factories import ApiClient
from tests.servers import database_url, wait_for
from tests.test_auth import assert_error
from tests.test_cancel_while_recording import waiting_on_a_lock
from webhooks import headers
from webhooks.models import WebhookEndpoint

SESSIONS = "/v1/portal_sessions"
SECRET = re.compile(r'id="signing-secret" value="(whsec_[0-9A-Za-z]+)"')
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def link_path(api: ApiClient, read_only: bool = False) -> str:
    response = api.post(SESSIONS, {"read_only": read_only})
    assert response.status_code == 201, response.content
    return urlparse(response.json()["url"]).path


def portal(api: ApiClient, read_only: bool = False, enforce_csrf_checks: bool = False) -> Client:
    """A browser with an open portal session of `api`'s key."""
    browser = Client(enforce_csrf_checks=enforce_csrf_checks)
    response = browser.get(link_path(api, read_only))
    assert response.status_code == 302, response.content
    assert response["Location"] == reverse("portal:endpoints")
    return browser


def text(response) -> str:
    return unescape(response.content.decode())


def csrf_token(browser: Client, page: str) -> str:
    match = CSRF_INPUT.search(browser.get(page).content.decode())
    assert match, page
    return match.group(1)


def endpoint_form(**fields: object) -> dict[str, object]:
    return {
        "url": "https://example.com/hook",
        "enabled_events": ["*"],
        "description": "",
        "headers": "",
        "rate_limit": "",
        "delivery_order": "unordered",
        **fields,
    }


# --- The API ----------------------------------------------------------------------------


def test_api_makes_a_one_time_link(api):
    before = timezone.now()
    response = api.post(SESSIONS, {})
    assert response.status_code == 201, response.content
    body = response.json()
    assert list(body) == ["object", "url", "read_only", "expires_at"]
    assert body["object"] == "portal_session"
    assert body["read_only"] is False
    assert re.fullmatch(r"http://testserver/portal/open/[0-9A-Za-z]{43}", body["url"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["expires_at"])
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(minutes=4, seconds=58) <= expires_at
    assert expires_at <= timezone.now() + timedelta(minutes=5)
    # Only the digest is stored: the token appears in no column.
    token = body["url"].rsplit("/", 1)[1]
    stored = PortalSession.objects.get()
    assert token not in {stored.link_token_hash, stored.session_token_hash}
    assert stored.environment == api.environment

    read_only = api.post(SESSIONS, {"read_only": True}).json()
    assert read_only["read_only"] is True


def test_api_refuses_bad_bodies_and_keys_without_write_scope(sandbox):
    api = factories.api_client(sandbox)
    assert_error(api.post(SESSIONS, {"read_only": "yes"}), 400, "parameter_invalid", "read_only")
    assert_error(api.post(SESSIONS, {"colour": 1}), 400, "parameter_unknown", "colour")
    assert_error(api.post(SESSIONS, {"url": "x"}), 400, "parameter_invalid", "url")
    assert_error(ApiClient(None).post(SESSIONS, {}), 401, "unauthenticated")
    reader = factories.api_client(sandbox, scopes=[scopes.WEBHOOK_ENDPOINTS_READ])
    assert_error(reader.post(SESSIONS, {}), 403, "insufficient_scope")
    assert PortalSession.objects.count() == 0


def test_api_replays_an_idempotent_request(api):
    first = api.post(SESSIONS, {}, headers={"Idempotency-Key": "portal-1"})
    again = api.post(SESSIONS, {}, headers={"Idempotency-Key": "portal-1"})
    assert again.status_code == 201
    assert again.content == first.content
    assert again["Idempotent-Replayed"] == "true"
    assert PortalSession.objects.count() == 1


# --- The link and the session -------------------------------------------------------------


def test_a_link_opens_once_and_sets_a_strict_cookie(api, settings):
    settings.PORTAL_COOKIE_SECURE = True
    path = link_path(api)
    browser = Client()
    response = browser.get(path)
    assert response.status_code == 302
    cookie = response.cookies["kinetic_portal"]
    assert cookie["httponly"] is True
    assert cookie["secure"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/portal/"
    assert int(cookie["max-age"]) == settings.PORTAL_SESSION_TTL
    assert cookie.value not in path
    assert browser.get(reverse("portal:endpoints")).status_code == 200

    # Used: another browser (or this one again) gets the 403 page that says so.
    for again in (Client(), browser):
        refused = again.get(path)
        assert refused.status_code == 403
        assert "already been used" in text(refused)
        assert "kinetic_portal" not in refused.cookies
    # A HEAD (a link checker) neither opens a link nor uses it up.
    fresh = link_path(api)
    assert Client().head(fresh).status_code == 405
    assert Client().get(fresh).status_code == 302


@pytest.mark.django_db(transaction=True)
def test_one_link_opened_by_two_browsers_at_once_opens_once():
    """Both wait for the session's row (held here) and then open it together: one gets the
    session, the other the page that says the link is used."""
    api = factories.api_client(factories.environment())
    path = link_path(api)
    browsers = [Client(), Client()]
    answers: dict[int, Any] = {}

    def open_link(i: int) -> None:
        try:
            answers[i] = browsers[i].get(path)
        finally:
            connection.close()

    with psycopg.connect(database_url(), autocommit=True) as monitor:
        with transaction.atomic():
            PortalSession.objects.select_for_update().get()
            threads = [threading.Thread(target=open_link, args=(i,)) for i in (0, 1)]
            for thread in threads:
                thread.start()
            wait_for(lambda: waiting_on_a_lock(monitor) == 2, timeout=10)
        for thread in threads:
            thread.join(timeout=10)

    assert sorted(a.status_code for a in answers.values()) == [302, 403]
    [opened] = [i for i, a in answers.items() if a.status_code == 302]
    assert "already been used" in text(answers[1 - opened])
    assert browsers[opened].get(reverse("portal:endpoints")).status_code == 200
    assert browsers[1 - opened].get(reverse("portal:endpoints")).status_code == 403


def test_an_expired_or_unknown_link_answers_403(api):
    path = link_path(api)
    # Five minutes pass.
    PortalSession.objects.update(link_expires_at=timezone.now() - timedelta(seconds=1))
    refused = Client().get(path)
    assert refused.status_code == 403
    assert "has expired" in text(refused)
    unknown = Client().get(reverse("portal:open", args=["A" * 43]))
    assert unknown.status_code == 403
    assert "not valid" in text(unknown)
    for page in ("portal:endpoints", "portal:endpoint_new"):
        assert Client().get(reverse(page)).status_code == 403  # no cookie, no page


def test_cookie_secure_follows_the_setting(api, settings):
    settings.PORTAL_COOKIE_SECURE = False  # DEBUG (local development over http)
    response = Client().get(link_path(api))
    assert response.cookies["kinetic_portal"]["secure"] == ""


def test_the_session_ends_at_its_ttl(api, settings):
    settings.PORTAL_SESSION_TTL = 600
    browser = portal(api)
    assert browser.get(reverse("portal:endpoints")).status_code == 200
    session = PortalSession.objects.get()
    assert session.opened_at is not None
    assert session.expires_at == session.opened_at + timedelta(seconds=600)
    # The ten minutes pass.
    PortalSession.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    ended = browser.get(reverse("portal:endpoints"))
    assert ended.status_code == 403
    assert "session has ended" in text(ended)


def test_the_session_ends_when_its_key_is_revoked(sandbox):
    api = factories.api_client(sandbox)
    other = factories.api_client(sandbox)
    browser, survivor = portal(api), portal(other)
    unopened = link_path(api)
    assert api.raw_key is not None
    call_command("revoke_api_key", api.raw_key[:16], stdout=StringIO())
    assert browser.get(reverse("portal:endpoints")).status_code == 403
    assert Client().get(unopened).status_code == 403  # nor can its links open
    assert survivor.get(reverse("portal:endpoints")).status_code == 200


def test_the_hourly_task_deletes_links_and_sessions_that_can_no_longer_be_used(api):
    expired_link, used_up, unopened = link_path(api), link_path(api), link_path(api)
    browser = Client()
    assert browser.get(used_up).status_code == 302
    live_browser = portal(api)
    # Time passes: the links never opened expire, and the first session ends.
    PortalSession.objects.filter(opened_at__isnull=True).update(
        link_expires_at=timezone.now() - timedelta(seconds=1)
    )
    ended = PortalSession.objects.filter(opened_at__isnull=False).order_by("created_at").first()
    assert ended is not None
    PortalSession.objects.filter(pk=ended.pk).update(expires_at=timezone.now())
    before = PortalSession.objects.count()

    prune_portal_sessions_task()

    assert PortalSession.objects.count() == before - 3  # two links, one session
    assert "not valid" in text(Client().get(expired_link))  # gone, not just expired
    assert Client().get(unopened).status_code == 403
    assert browser.get(reverse("portal:endpoints")).status_code == 403
    assert live_browser.get(reverse("portal:endpoints")).status_code == 200


# --- Tenancy ------------------------------------------------------------------------------


def _pages_and_actions(endpoint_id: str, delivery_id: str) -> list[tuple[str, str, dict]]:
    def url(name: str) -> str:
        return reverse(f"portal:{name}", args=[endpoint_id])

    return [
        ("get", url("endpoint"), {}),
        ("get", url("endpoint_edit"), {}),
        ("post", url("endpoint_edit"), endpoint_form()),
        ("post", url("endpoint_toggle"), {"status": "disabled"}),
        ("get", url("endpoint_delete"), {}),
        ("post", url("endpoint_delete"), {}),
        ("get", url("endpoint_rotate"), {}),
        ("post", url("endpoint_rotate"), {"overlap_seconds": "0"}),
        ("post", url("endpoint_test"), {}),
        ("get", f"{url('endpoint_test')}?delivery={delivery_id}", {}),
    ]


def test_another_tenants_ids_are_404_on_every_page_and_action(sandbox):
    mine = factories.api_client(sandbox)
    own = mine.create_endpoint()
    # Another organization's endpoint, and this organization's production one.
    others = [
        factories.api_client(factories.environment()),
        factories.api_client(factories.environment(sandbox.organization, "production")),
    ]
    browser = portal(mine)
    their_ids = []
    own_test = browser.post(reverse("portal:endpoint_test", args=[own["webhook_endpoint_id"]]))
    own_delivery = own_test["Location"].rsplit("=", 1)[1]
    for other in others:
        theirs = other.create_endpoint()
        del theirs["signing_secret"]
        their_endpoint = theirs["webhook_endpoint_id"]
        their_ids.append(their_endpoint)
        their_test = portal(other).post(reverse("portal:endpoint_test", args=[their_endpoint]))
        their_delivery = their_test["Location"].rsplit("=", 1)[1]
        for method, url, data in _pages_and_actions(their_endpoint, their_delivery):
            response = getattr(browser, method)(url, data)
            assert response.status_code == 404, (method, url)
            assert "Not found" in text(response)
        # Unchanged, as its owner sees it.
        assert other.get(f"/v1/webhook_endpoints/{their_endpoint}").json() == theirs
        # Their delivery is not this endpoint's test either.
        mixed = f"{reverse('portal:endpoint_test', args=[own['webhook_endpoint_id']])}"
        assert browser.get(f"{mixed}?delivery={their_delivery}").status_code == 404
    assert browser.get(f"{mixed}?delivery={own_delivery}").status_code == 200
    for bogus in ("we_nope", "x" * 300, "we_\x00"):
        assert browser.get(f"/portal/endpoints/{bogus}/").status_code == 404
    listed = text(browser.get(reverse("portal:endpoints")))
    assert own["webhook_endpoint_id"] in listed
    assert not [their_id for their_id in their_ids if their_id in listed]


# --- Read-only sessions -------------------------------------------------------------------


def test_a_read_only_session_sees_everything_and_can_change_nothing(api):
    endpoint = api.create_endpoint(headers={"X-Team": "billing"})
    del endpoint["signing_secret"]
    endpoint_id = endpoint["webhook_endpoint_id"]
    browser = portal(api, read_only=True)
    listed = text(browser.get(reverse("portal:endpoints")))
    detail = text(browser.get(reverse("portal:endpoint", args=[endpoint_id])))
    assert endpoint_id in listed and "X-Team: billing" in detail
    for page in (listed, detail):
        assert 'method="post"' not in page
        for name in ("endpoint_new", "endpoint_edit", "endpoint_delete", "endpoint_rotate"):
            args = [] if name == "endpoint_new" else [endpoint_id]
            assert reverse(f"portal:{name}", args=args) not in page
        assert "read-only" in page

    delivery = factories.api_client(api.environment)  # a test event sent by a writer
    writer = portal(delivery)
    sent = writer.post(reverse("portal:endpoint_test", args=[endpoint_id]))
    for method, url, data in _pages_and_actions(endpoint_id, sent["Location"].rsplit("=", 1)[1]):
        response = getattr(browser, method)(url, data)
        if method == "get" and "/edit" not in url and "/delete" not in url and "/rotate" not in url:
            assert response.status_code == 200, url  # pages, a test's outcome included
        else:
            assert response.status_code == 403, (method, url)
            assert "read-only" in text(response)
    assert browser.get(reverse("portal:endpoint_new")).status_code == 403
    assert browser.post(reverse("portal:endpoint_new"), endpoint_form()).status_code == 403
    assert api.get(f"/v1/webhook_endpoints/{endpoint_id}").json() == endpoint
    assert api.get("/v1/webhook_endpoints").json()["data"] == [endpoint]


# --- CSRF and headers ---------------------------------------------------------------------


def test_every_form_is_csrf_checked(api):
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    browser = portal(api, enforce_csrf_checks=True)
    toggle = reverse("portal:endpoint_toggle", args=[endpoint_id])
    for url, data in (
        (reverse("portal:endpoint_new"), endpoint_form()),
        (toggle, {"status": "disabled"}),
        (reverse("portal:endpoint_delete", args=[endpoint_id]), {}),
    ):
        assert browser.post(url, data).status_code == 403, url
    assert api.get(f"/v1/webhook_endpoints/{endpoint_id}").json()["status"] == "enabled"
    assert len(api.get("/v1/webhook_endpoints").json()["data"]) == 1

    token = csrf_token(browser, reverse("portal:endpoint", args=[endpoint_id]))
    done = browser.post(toggle, {"status": "disabled", "csrfmiddlewaretoken": token})
    assert done.status_code == 302
    assert api.get(f"/v1/webhook_endpoints/{endpoint_id}").json()["status"] == "disabled"


def test_portal_responses_carry_the_csp_and_no_x_frame_options(api, settings):
    browser = portal(api)
    responses = [
        browser.get(reverse("portal:endpoints")),
        Client().get(reverse("portal:open", args=["A" * 43])),  # the 403 page
        browser.get("/portal/endpoints/we_00000000000000/"),  # the 404 page
        browser.get("/portal/no-such-page"),  # Django's own 404
    ]
    for response in responses:
        csp = response["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "style-src 'self'" in csp and "base-uri 'none'" in csp
        assert csp.endswith("frame-ancestors 'none'")
        assert "X-Frame-Options" not in response
    settings.PORTAL_FRAME_ANCESTORS = ["https://dashboard.example.com", "https://x.example"]
    csp = browser.get(reverse("portal:endpoints"))["Content-Security-Policy"]
    assert csp.endswith("frame-ancestors https://dashboard.example.com https://x.example")
    # Elsewhere nothing changes: the API and the admin keep their own rules.
    assert "Content-Security-Policy" not in api.get("/v1/webhook_endpoints")
    assert Client().get("/admin/login/")["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    "ancestor", ["https://a.example; script-src *", "https://a.example https://b", "'none'", ""]
)
def test_a_frame_ancestor_that_is_not_one_origin_fails_the_system_check(settings, ancestor):
    settings.PORTAL_FRAME_ANCESTORS = [ancestor]
    with pytest.raises(SystemCheckError, match="PORTAL_FRAME_ANCESTORS"):
        call_command("check")
    settings.PORTAL_FRAME_ANCESTORS = ["https://dashboard.example.com", "'self'"]
    call_command("check", stdout=StringIO())


def test_pages_have_no_inline_script_or_style(api):
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    browser = portal(api)
    pages = [
        reverse("portal:endpoints"),
        reverse("portal:endpoint", args=[endpoint_id]),
        reverse("portal:endpoint_new"),
        reverse("portal:endpoint_edit", args=[endpoint_id]),
        reverse("portal:endpoint_rotate", args=[endpoint_id]),
        reverse("portal:endpoint_delete", args=[endpoint_id]),
    ]
    for page in pages:
        html = browser.get(page).content.decode()
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], page
        assert "<style" not in html and " style=" not in html, page
        assert re.findall(r"<[^>]*\son[a-z]+=", html) == [], page  # no inline handlers


def test_htmx_is_told_to_run_no_script_it_swaps_in(api, settings):
    """Belt and braces beside the CSP: htmx neither evaluates nor runs scripts in what it
    swaps in. Each option named must be one htmx has: a misspelt one is silently ignored."""
    page = portal(api).get(reverse("portal:endpoints")).content.decode()
    match = re.search(r'<meta name="htmx-config" content=\'([^\']+)\'>', page)
    assert match
    config = json.loads(match.group(1))
    assert (config["allowEval"], config["allowScriptTags"]) == (False, False)
    htmx = (settings.BASE_DIR / "portal/static/portal/htmx.min.js").read_text()
    defaults = htmx[htmx.index("config:{") :]
    assert [name for name in config if f"{name}:" not in defaults] == []


def test_portal_requests_are_rate_limited_per_session(api, settings):
    settings.API_RATE_LIMIT = "3/m"
    browser, other = portal(api), portal(api)
    statuses = [browser.get(reverse("portal:endpoints")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = browser.get(reverse("portal:endpoints"))
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert other.get(reverse("portal:endpoints")).status_code == 200  # its own count


# --- The endpoint pages do what the API does ----------------------------------------------


def test_create_edit_rotate_delete_through_the_pages(api, settings):
    browser = portal(api)
    created = browser.post(
        reverse("portal:endpoint_new"),
        endpoint_form(
            url="https://example.com/portal-hook",
            enabled_events=["packet.created", "judgment.created"],
            description="From the portal",
            headers="X-Team: billing\nAuthorization: Bearer s3cret-value",
            rate_limit="25",
            delivery_order="ordered",
        ),
    )
    assert created.status_code == 201
    secret = SECRET.search(created.content.decode())
    assert secret and 'data-copy="signing-secret"' in created.content.decode()
    [endpoint] = api.get("/v1/webhook_endpoints").json()["data"]
    endpoint_id = endpoint["webhook_endpoint_id"]
    assert endpoint["url"] == "https://example.com/portal-hook"
    assert endpoint["enabled_events"] == ["packet.created", "judgment.created"]
    assert endpoint["description"] == "From the portal"
    assert endpoint["headers"] == {"X-Team": "billing", "Authorization": headers.MASK}
    assert endpoint["rate_limit"] == 25 and endpoint["delivery_order"] == "ordered"
    # The secret is on that page only.
    detail = text(browser.get(reverse("portal:endpoint", args=[endpoint_id])))
    assert secret.group(1) not in detail and "s3cret-value" not in detail

    # Edit: the sensitive value shows masked and, sent back so, is kept.
    edit_url = reverse("portal:endpoint_edit", args=[endpoint_id])
    form = text(browser.get(edit_url))
    assert f"Authorization: {headers.MASK}" in form and "s3cret-value" not in form
    edited = browser.post(
        edit_url,
        endpoint_form(
            url="https://example.com/edited",
            enabled_events=["*"],
            headers=f"Authorization: {headers.MASK}\nX-Region: eu",
            rate_limit="",
            delivery_order="unordered",
        ),
    )
    assert edited.status_code == 302
    after = api.get(f"/v1/webhook_endpoints/{endpoint_id}").json()
    assert after["url"] == "https://example.com/edited"
    assert after["enabled_events"] == ["*"]
    assert after["headers"] == {"Authorization": headers.MASK, "X-Region": "eu"}
    assert after["description"] is None and after["rate_limit"] is None
    stored = WebhookEndpoint.objects.get(public_id=endpoint_id).headers
    assert headers.for_sending(stored)["Authorization"] == "Bearer s3cret-value"

    # Rotate with the overlap chosen: a new secret, shown once.
    rotated = browser.post(
        reverse("portal:endpoint_rotate", args=[endpoint_id]), {"overlap_seconds": "3600"}
    )
    new_secret = SECRET.search(rotated.content.decode())
    assert new_secret and new_secret.group(1) != secret.group(1)
    assert "keeps signing until" in text(rotated)
    signing = list(WebhookEndpoint.objects.get(public_id=endpoint_id).secrets.signing())
    assert len(signing) == 2
    assert signing[-1].expires_at == pytest.approx(
        timezone.now() + timedelta(hours=1), abs=timedelta(seconds=30)
    )

    # Delete, after its confirmation page.
    delete_url = reverse("portal:endpoint_delete", args=[endpoint_id])
    assert "cannot be undone" in text(browser.get(delete_url))
    assert browser.post(delete_url)["Location"] == reverse("portal:endpoints")
    assert_error(
        api.get(f"/v1/webhook_endpoints/{endpoint_id}"), 404, "not_found", "webhook_endpoint_id"
    )
    assert browser.get(reverse("portal:endpoint", args=[endpoint_id])).status_code == 404


def test_a_services_refusal_shows_next_to_its_field_and_keeps_what_was_typed(api, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = False
    browser = portal(api)
    typed = endpoint_form(
        url="http://127.0.0.1/hook",
        description="Keep this text",
        headers="X-Team: billing",
        rate_limit="5",
    )
    refused = browser.post(reverse("portal:endpoint_new"), typed)
    assert refused.status_code == 200
    page = text(refused)
    url_field = page[page.index('<div class="field field-error">') :]
    assert url_field.index("Invalid url") < url_field.index('name="enabled_events"')
    assert "Keep this text" in page and "X-Team: billing" in page and 'value="5"' in page
    bad_headers = browser.post(
        reverse("portal:endpoint_new"), endpoint_form(headers="Host: evil.example")
    )
    assert "Invalid headers" in text(bad_headers) and "Host: evil.example" in text(bad_headers)
    for typed_headers, message in (
        ("X-Team billing", "Line 1 is not Name: value."),
        ("X-Team: a\nX-Team: b", "Line 2 names 'X-Team' again."),
    ):
        page = text(
            browser.post(reverse("portal:endpoint_new"), endpoint_form(headers=typed_headers))
        )
        assert message in page
    no_events = browser.post(reverse("portal:endpoint_new"), endpoint_form(enabled_events=[]))
    assert "Invalid enabled_events" in text(no_events)
    assert api.get("/v1/webhook_endpoints").json()["data"] == []


def test_enable_disable_and_send_a_test_event(api):
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    browser = portal(api)
    toggle = reverse("portal:endpoint_toggle", args=[endpoint_id])
    unknown = browser.post(toggle, {"status": "paused"}, follow=True)
    assert "Choose enabled or disabled." in text(unknown)
    assert api.get(f"/v1/webhook_endpoints/{endpoint_id}").json()["status"] == "enabled"
    browser.post(toggle, {"status": "disabled"})
    assert api.get(f"/v1/webhook_endpoints/{endpoint_id}").json()["status"] == "disabled"
    test_url = reverse("portal:endpoint_test", args=[endpoint_id])
    refused = browser.post(test_url, follow=True)
    assert "Only an enabled endpoint" in text(refused)
    browser.post(toggle, {"status": "enabled"})
    assert api.get(f"/v1/webhook_endpoints/{endpoint_id}").json()["status"] == "enabled"

    sent = browser.post(test_url)
    assert sent.status_code == 302
    delivery_id = sent["Location"].rsplit("=", 1)[1]
    deliveries = api.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries").json()["data"]
    assert [d["delivery_id"] for d in deliveries] == [delivery_id]
    page = text(browser.get(sent["Location"]))
    assert delivery_id in page and "hx-trigger" in page  # polls until the first attempt
    fragment = text(browser.get(sent["Location"], headers={"HX-Request": "true"}))
    assert fragment.lstrip().startswith('<div id="test-outcome"') or 'id="test-outcome"' in fragment
    assert "<html" not in fragment


def test_the_list_shows_bounded_figures(api, monkeypatch):
    endpoint_id = api.create_endpoint(enabled_events=["packet.created"])["webhook_endpoint_id"]
    for _ in range(3):
        event = event_publish(environment=api.environment, type="packet.created", data={})
        event_fan_out(event_id=event.pk)
    browser = portal(api)
    page = text(browser.get(reverse("portal:endpoints")))
    assert endpoint_id in page and ">3<" in page and "pending" in page
    assert "counting at most the 10,000 newest deliveries" in page
    monkeypatch.setattr(figures, "RECENT_CAP", 2)
    assert ">2+<" in text(browser.get(reverse("portal:endpoints")))


def as_read(html: str) -> str:
    """Markup as a person reads it: no tags, no entities, single spaces."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def listed(response) -> dict[str, tuple[str, str, str]]:
    """The endpoint list's figures by endpoint id: deliveries, success and last delivery, as
    shown."""
    shown = {}
    for row in re.findall(r"<tr>(.*?)</tr>", response.content.decode(), re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if cells:
            endpoint, _status, deliveries, success, _streak, last = cells
            endpoint_id = re.search(r'class="mono">([^<]+)<', endpoint)
            assert endpoint_id, row
            shown[endpoint_id.group(1)] = (as_read(deliveries), as_read(success), as_read(last))
    return shown


def history(endpoint_id: str, *deliveries: tuple[str, int | None, datetime]) -> None:
    """Deliveries to the endpoint as sending left them: (status, last status code, created at)
    each, an event each."""
    endpoint = WebhookEndpoint.objects.get(public_id=endpoint_id)
    for status, status_code, created_at in deliveries:
        event = event_publish(environment=endpoint.environment, type="packet.created", data={})
        Delivery.objects.create(
            event=event,
            endpoint=endpoint,
            status=status,
            last_status_code=status_code,
            created_at=created_at,
        )


def test_the_list_shows_each_endpoints_own_figures(api, monkeypatch):
    now = timezone.now()

    def ago(**since: float) -> datetime:
        return now - timedelta(**since)

    def at(**since: float) -> str:
        return ago(**since).strftime("%Y-%m-%d %H:%M:%S UTC")

    ok, failed, cancelled, pending = (
        Delivery.Status.SUCCEEDED,
        Delivery.Status.FAILED,
        Delivery.Status.CANCELLED,
        Delivery.Status.PENDING,
    )
    fresh, quiet, trio, waiting, busy = (
        api.create_endpoint()["webhook_endpoint_id"] for _ in range(5)
    )
    # Older than the window: the last delivery, counted in no figure.
    history(quiet, (ok, 200, ago(days=3)), (failed, 410, ago(hours=26)))
    history(trio, (ok, 200, ago(hours=3)), (ok, 204, ago(hours=2)), (ok, 200, ago(hours=1)))
    # Two made at the same instant: the one made last is the last delivery.
    history(waiting, (pending, None, ago(minutes=30)), (pending, 429, ago(minutes=30)))
    history(
        busy,
        (ok, 200, ago(days=2)),
        (failed, 500, ago(hours=30)),
        (ok, 200, ago(hours=5)),
        (ok, 200, ago(hours=4)),
        (failed, 500, ago(hours=3)),
        (cancelled, None, ago(hours=2)),
        (ok, 201, ago(hours=1)),
        (pending, 502, ago(minutes=5)),
    )
    browser = portal(api)
    shown = listed(browser.get(reverse("portal:endpoints")))
    assert shown == {
        fresh: ("0", "—", "—"),
        quiet: ("0", "—", f"failed 410 {at(hours=26)}"),
        trio: ("3", "100%", f"succeeded 200 {at(hours=1)}"),
        waiting: ("2", "—", f"pending 429 {at(minutes=30)}"),
        busy: ("6", "75%", f"pending 502 {at(minutes=5)}"),
    }
    detail = as_read(browser.get(reverse("portal:endpoint", args=[busy])).content.decode())
    assert "Deliveries, 24 h 6 Success, 24 h 75% (3 succeeded, 1 failed)" in detail
    assert f"Last delivery pending 502 {at(minutes=5)}" in detail

    # Past the cap each endpoint counts its own newest: busy's four newest (one more than the
    # cap) hold one success and one failure. Exactly the cap is not past it.
    monkeypatch.setattr(figures, "RECENT_CAP", 3)
    capped = {
        endpoint_id: (deliveries, success)
        for endpoint_id, (deliveries, success, _) in listed(
            browser.get(reverse("portal:endpoints"))
        ).items()
    }
    assert capped == {
        fresh: ("0", "—"),
        quiet: ("0", "—"),
        trio: ("3", "100%"),
        waiting: ("2", "—"),
        busy: ("3+", "50%"),
    }


def test_the_list_takes_as_many_queries_for_twenty_endpoints_as_for_two(api):
    """No endpoint's figures take a query of their own."""
    browser = portal(api)

    def add_endpoints_with_deliveries(count: int) -> None:
        for _ in range(count):
            api.create_endpoint(enabled_events=["packet.created"])
        for status in Delivery.Status:
            event = event_publish(environment=api.environment, type="packet.created", data={})
            event_fan_out(event_id=event.pk)
            Delivery.objects.filter(event=event).update(status=status, last_status_code=200)

    def queries_for_the_list(endpoints: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            shown = listed(browser.get(reverse("portal:endpoints")))
        assert len(shown) == endpoints
        assert all(deliveries != "0" for deliveries, _, _ in shown.values())
        return len(captured.captured_queries)

    add_endpoints_with_deliveries(2)
    with_two = queries_for_the_list(2)
    add_endpoints_with_deliveries(18)
    assert queries_for_the_list(20) == with_two


def plan_nodes(node: dict) -> list[dict]:
    """A JSON plan's node and all those below it."""
    return [node, *(n for child in node.get("Plans", []) for n in plan_nodes(child))]


def test_the_figures_read_a_busy_endpoints_newest_rows_up_to_the_cap(api):
    """However busy an endpoint, the list reads its newest rows in order along
    delivery_endpoint_idx and stops past the cap: no endpoint's day is read whole and sorted
    (which the planner chose, for every endpoint, when it knew the cap)."""
    busy, *quiet = (api.create_endpoint()["webhook_endpoint_id"] for _ in range(5))
    pk = dict(WebhookEndpoint.objects.values_list("public_id", "id"))
    day = figures.RECENT_CAP + 5_000
    with connection.cursor() as cursor:
        # The busy endpoint's last hours and a few deliveries to each of the others,
        # interleaved, newest last (the rows alone: the figures read no event).
        cursor.execute(
            sql.statement(
                """INSERT INTO {delivery} (public_id, status, attempt_count, last_error,
                    created_at, endpoint_id, event_id, last_status_code)
                SELECT 'dlv_bulk' || g, CASE WHEN g %% 10 = 0 THEN %s ELSE %s END, 1, '',
                    now() - (%s - g) * interval '1 second',
                    CASE WHEN g %% 100 < 4 THEN (%s::bigint[])[g %% 100 + 1] ELSE %s END, g, 200
                FROM generate_series(1, %s) AS g"""
            ),
            [
                Delivery.Status.FAILED,
                Delivery.Status.SUCCEEDED,
                day,
                [pk[endpoint_id] for endpoint_id in quiet],
                pk[busy],
                day,
            ],
        )
        # What autovacuum analyses: the partitions (the table itself if it has none).
        table = Delivery._meta.db_table
        cursor.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree(%s) WHERE isleaf", [table]
        )
        leaves = {name for (name,) in cursor.fetchall()}
        for name in leaves or {table}:
            cursor.execute(f"ANALYZE {name}")
        tables = leaves | {table}
        cursor.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree('delivery_endpoint_idx')"
        )
        endpoint_indexes = {name for (name,) in cursor.fetchall()} | {"delivery_endpoint_idx"}

    browser = portal(api)
    with CaptureQueriesContext(connection) as captured:
        shown = listed(browser.get(reverse("portal:endpoints")))
    assert shown[busy][0] == "10,000+"
    assert {shown[endpoint_id][0] for endpoint_id in quiet} == {f"{day // 100:,}"}

    [statement] = [q["sql"] for q in captured.captured_queries if "LATERAL" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}")
        nodes = plan_nodes(cursor.fetchone()[0][0]["Plan"])
    assert not [node for node in nodes if "Sort" in node["Node Type"]]
    scans = [node for node in nodes if node.get("Relation Name") in tables]
    assert scans
    assert {(s["Node Type"], s["Index Name"] in endpoint_indexes) for s in scans} == {
        ("Index Scan", True)
    }
    # Fewer rows, all endpoints' together, than the busy endpoint's day alone.
    assert sum(s["Actual Rows"] * s["Actual Loops"] for s in scans) < day


def test_a_page_of_one_portal_session_cannot_post_into_the_next(sandbox):
    """One browser, two links: its own organization's, then another's (another tab, or a
    top-level navigation someone sent it to). A form the first page shows must not create its
    endpoint, with its credential header, in the second organization."""
    mine = factories.api_client(sandbox)
    theirs = factories.api_client(factories.environment())
    browser = Client(enforce_csrf_checks=True)
    assert browser.get(link_path(mine)).status_code == 302
    token = csrf_token(browser, reverse("portal:endpoint_new"))

    assert browser.get(link_path(theirs)).status_code == 302
    form = endpoint_form(url="https://example.com/mine", headers="Authorization: Bearer mine")
    sent = browser.post(reverse("portal:endpoint_new"), {**form, "csrfmiddlewaretoken": token})
    assert sent.status_code == 403
    assert theirs.get("/v1/webhook_endpoints").json()["data"] == []
    # A page loaded in the new session works.
    fresh = csrf_token(browser, reverse("portal:endpoint_new"))
    made = browser.post(reverse("portal:endpoint_new"), {**form, "csrfmiddlewaretoken": fresh})
    assert made.status_code == 201, text(made)
    assert len(theirs.get("/v1/webhook_endpoints").json()["data"]) == 1


def test_portal_redirects_carry_the_portal_headers(api):
    """The trailing-slash redirects come from a middleware, not a portal view: the same
    headers all the same (README: every /portal/ response)."""
    browser = portal(api)
    for path in ("/portal/endpoints", "/portal/events", "/portal"):
        response = browser.get(path)
        assert response.status_code == 301, path
        assert response["Content-Security-Policy"].endswith("frame-ancestors 'none'"), path
        assert response["Cache-Control"] == "no-store", path
        assert not response.has_header("X-Frame-Options"), path


# --- The edit form, sent back as a browser sends it -------------------------------------------


def textarea(page: str, name: str) -> str:
    """A textarea's value as a browser reads it (the parser drops one leading newline)."""
    match = re.search(rf'<textarea name="{name}"[^>]*>(.*?)</textarea>', page, re.S)
    assert match, name
    value = unescape(match.group(1))
    return value.removeprefix("\n")


def as_submitted(page: str, **changed: object) -> dict[str, object]:
    """The edit form as a browser sends it back: the boxes checked in the page's order, the
    textareas' line breaks as CRLF, the other fields as shown, then `changed`."""
    checked = re.findall(r'name="enabled_events" value="([^"]+)"[^>]*checked', page)
    inputs = dict(re.findall(r'<input type="(?:text|number)" name="(\w+)" value="([^"]*)"', page))
    order = re.search(r'name="delivery_order" value="(\w+)"[^>]*checked', page)
    assert order
    return {
        "url": unescape(inputs["url"]),
        "enabled_events": checked,
        "description": textarea(page, "description").replace("\n", "\r\n"),
        "headers": textarea(page, "headers").replace("\n", "\r\n"),
        "rate_limit": inputs.get("rate_limit", ""),
        "delivery_order": order.group(1),
        **changed,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"description": "Billing team\nOn call: #billing"},
        {"description": ("x" * 49 + "\n") * 10},  # 500 characters: the most the API takes
        {"description": ""},
        {"enabled_events": ["packet.created", "judgment.created"]},  # the order given
        {"headers": {"X-Pad": " padded ", "Authorization": "Bearer kept"}},
    ],
    ids=["line-breaks", "500-characters", "empty-description", "events-order", "header-spaces"],
)
def test_saving_the_edit_form_as_shown_changes_only_what_was_changed(api, fields):
    endpoint_id = api.create_endpoint(**fields)["webhook_endpoint_id"]
    before = api.get(f"/v1/webhook_endpoints/{endpoint_id}").json()
    browser = portal(api)
    edit = reverse("portal:endpoint_edit", args=[endpoint_id])
    saved = browser.post(edit, as_submitted(text(browser.get(edit)), rate_limit="5"))
    assert saved.status_code == 302, re.findall(r"<li>(.*?)</li>", text(saved))
    after = api.get(f"/v1/webhook_endpoints/{endpoint_id}").json()
    assert after == {**before, "rate_limit": 5}


def test_an_edit_that_leaves_the_url_alone_is_not_refused_for_the_url(api, settings):
    """As a PATCH without `url`: the rate limit of an endpoint whose URL the policy would
    refuse today (the operator turned private destinations off since) can still change."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    endpoint_id = api.create_endpoint(url="http://127.0.0.1:9/hook")["webhook_endpoint_id"]
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = False
    browser = portal(api)
    edit = reverse("portal:endpoint_edit", args=[endpoint_id])
    saved = browser.post(edit, as_submitted(text(browser.get(edit)), rate_limit="6"))
    assert saved.status_code == 302, re.findall(r"<li>(.*?)</li>", text(saved))
    assert api.get(f"/v1/webhook_endpoints/{endpoint_id}").json()["rate_limit"] == 6
    changed = browser.post(edit, as_submitted(text(browser.get(edit)), url="http://127.0.0.1:8/"))
    assert changed.status_code == 200  # a URL typed in is checked
