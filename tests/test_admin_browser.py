"""The console in a real browser (Debian's Chromium, driven by Playwright), at a laptop's
width (1366 px): an operator's errand (find the failing endpoint with the "failing" filter,
disable it, rotate its secret through the confirmation page, copy the new secret from the one
page that shows it), and on-call's pages (the endpoint list, an endpoint, a delivery with its
attempts) fitting the screen, photographed for the README (docs/console/).

The browser runs against pytest-django's live server; database work happens before and after
the browser session (Playwright's sync API keeps an event loop in this thread, where Django
refuses ORM calls).
"""

import os
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, ViewportSize, expect, sync_playwright

from accounts.models import Environment
from accounts.services import organization_create
from console.webhooks import WebhookEndpointAdmin
from core import encryption
from deliveries.dispatch import deliveries_send
from deliveries.models import Delivery
from deliveries.services import delivery_retry_now, event_fan_out, event_publish
from tests.servers import ROOT, Receiver, Reply, free_port
from webhooks.models import EndpointSecret, WebhookEndpoint
from webhooks.services import endpoint_create, endpoint_update

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-output"
# The README links docs/console/; a run writes there only when asked (UPDATE_SCREENSHOTS=1),
# so that every run does not rewrite committed pictures with a pixel's difference.
DOCS_SCREENSHOTS = (
    ROOT / "docs" / "console"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else ROOT / "test-output" / "console"
)
LAPTOP: ViewportSize = {"width": 1366, "height": 900}
PASSWORD = "correct horse battery staple"
UTC_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")

# A page after a click can take longer than expect()'s 5 s default on a loaded machine; the
# wait ends as soon as the page shows what is expected (clicks and navigations wait 30 s).
expect.set_options(timeout=30_000)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@pytest.fixture
def acme(settings) -> Environment:
    """The sandbox an operator, "ops", looks after."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # the receivers live on 127.0.0.1
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    return organization_create(slug="acme").environments.get(name="sandbox")


def log_in(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("Kinetic operators' console")


def run_action(page: Page, endpoint_id: str, action: str) -> None:
    page.locator("#result_list tr", has_text=endpoint_id).locator("input.action-select").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_operator_disables_a_failing_endpoint_and_rotates_its_secret(
    live_server, acme: Environment, receiver: Receiver
):
    healthy = endpoint_create(environment=acme, url=f"{receiver.url}/ok").endpoint
    failing = endpoint_create(environment=acme, url=f"{receiver.url}/down")
    receiver.script("/down", Reply(status=503))
    event = event_publish(environment=acme, type="packet.created")
    event_fan_out(event_id=event.pk)
    deliveries_send(
        delivery_ids=list(event.deliveries.values_list("id", flat=True)), wait_for_all=True
    )
    endpoint_id = failing.endpoint.public_id
    assert WebhookEndpoint.objects.get(public_id=endpoint_id).consecutive_failures == 1

    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=LAPTOP)
            log_in(page, live_server.url)
            page.click("text=Webhook endpoints")

            page.click("text=Failing now")
            rows = page.locator("#result_list tbody tr")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text(endpoint_id)
            expect(rows.first).to_contain_text("1 failure since")
            expect(page.locator("#result_list")).not_to_contain_text(healthy.public_id)
            page.screenshot(path=str(SCREENSHOTS / "admin-failing-endpoints.png"), full_page=True)

            run_action(page, endpoint_id, "disable")
            expect(page.locator("ul.messagelist")).to_contain_text("Disabled 1 endpoint(s).")

            # Disabling ends the failure streak (endpoint_update resets it): it left this list.
            expect(page.locator("#result_list")).to_have_count(0)
            page.locator('details[data-filter-title="failing"]').get_by_text("All").click()
            page.fill("#searchbar", endpoint_id)
            page.press("#searchbar", "Enter")
            expect(page.locator("#result_list tbody tr").first).to_contain_text("disabled")
            run_action(page, endpoint_id, "rotate_secret")

            expect(page.locator("h1")).to_have_text("Rotate signing secrets")
            expect(page.locator("input[name=overlap_seconds]")).to_have_value("86400")
            page.screenshot(path=str(SCREENSHOTS / "admin-rotate-confirm.png"), full_page=True)
            page.click("input[name=confirm]")

            expect(page.locator("h1")).to_have_text("New signing secrets")
            shown = page.locator("code.signing-secret").inner_text()
            assert re.fullmatch(r"whsec_[0-9A-Za-z]{24,}", shown)
            expect(page.locator("#rotated-secrets")).to_contain_text("keeps signing for 86400 s")
            page.screenshot(path=str(SCREENSHOTS / "admin-rotate-secret.png"), full_page=True)

            page.click(f"text={endpoint_id}")
            expect(page.locator("h1")).to_contain_text("View webhook endpoint")
            expect(page.locator(".field-signing_secrets")).to_contain_text("2 signing")
            assert shown not in page.content()
            page.goto(f"{live_server.url}/admin/webhooks/webhookendpoint/")
            assert shown not in page.content()
        finally:
            browser.close()

    endpoint = WebhookEndpoint.objects.get(public_id=endpoint_id)
    assert endpoint.status == "disabled"
    signing = list(EndpointSecret.objects.signing().filter(endpoint=endpoint))
    assert len(signing) == 2
    assert encryption.decrypt(signing[0].ciphertext) == shown
    assert encryption.decrypt(signing[1].ciphertext) == failing.signing_secret


def fits_the_width(page: Page) -> None:
    """No horizontal scroll: the page is no wider than the window, and no box on it (the
    admin puts a list's table in one that scrolls) is wider than it shows."""
    width = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert width[0] <= width[1], f"{page.url} scrolls sideways: {width}"
    scrolling = page.evaluate(
        """() => [...document.querySelectorAll('*')]
            .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
            .filter(e => e.scrollWidth > e.clientWidth)
            .map(e => `${e.tagName}.${e.className}: ${e.scrollWidth} > ${e.clientWidth}`)"""
    )
    assert not scrolling, f"{page.url} scrolls sideways: {scrolling}"


def in_view(page: Page, selector: str) -> None:
    """Every element matching `selector` lies inside the window's width."""
    boxes: list[dict[str, Any]] = page.locator(selector).evaluate_all(
        """elements => elements.map(e => {
            const r = e.getBoundingClientRect();
            return {text: e.innerText, right: r.right};
        })"""
    )
    assert boxes, selector
    for box in boxes:
        assert box["right"] <= LAPTOP["width"], (selector, box)


def one_line(page: Page, selector: str) -> None:
    """Each element matching `selector` is one line: its boxes (one per line, and one per
    element inside it) all start at the same height."""
    lines = page.locator(selector).evaluate_all(
        """elements => elements.map(e => [e.innerText,
            new Set([...e.getClientRects()].map(r => Math.round(r.top))).size])"""
    )
    assert lines, selector
    for text, count in lines:
        assert count == 1, (selector, text, count)


def test_on_calls_pages_fit_a_laptop_and_act_on_one_object(
    live_server, acme: Environment, receiver: Receiver
):
    healthy = endpoint_create(environment=acme, url=f"{receiver.url}/hooks/orders").endpoint
    long_path = "/webhooks/v2/kinetic/production/billing-events-receiver/acme-corporation/eu-west-1"
    failing = endpoint_create(environment=acme, url=f"{receiver.url}{long_path}").endpoint
    receiver.script(long_path, *[Reply(status=503, body=b'{"error": "upstream timeout"}')] * 30)
    refused = endpoint_create(
        environment=acme, url=f"http://127.0.0.1:{free_port()}/nobody-listens"
    ).endpoint
    retired = endpoint_create(environment=acme, url=f"{receiver.url}/hooks/old").endpoint
    for n in range(12):
        event = event_publish(environment=acme, type="judgment.created", data={"n": n})
        event_fan_out(event_id=event.pk)
        deliveries_send(
            delivery_ids=list(event.deliveries.values_list("id", flat=True)), wait_for_all=True
        )
    retried = Delivery.objects.filter(endpoint=failing).order_by("pk").first()
    assert retried is not None
    for _ in range(2):
        delivery_retry_now(delivery=retried)
        deliveries_send(delivery_ids=[retried.pk], wait_for_all=True)
    endpoint_update(endpoint=healthy, delivery_order="ordered", rate_limit=25)
    endpoint_update(endpoint=retired, status="disabled")
    failing.refresh_from_db()
    assert failing.consecutive_failures == 14
    refused.refresh_from_db()
    assert refused.consecutive_failures == 12
    attempts = retried.attempts.count()
    assert attempts == 3

    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=LAPTOP)
            log_in(page, live_server.url)

            # The endpoint list: every column that matters, beside the filters, no scrolling.
            page.goto(f"{live_server.url}/admin/webhooks/webhookendpoint/")
            page.screenshot(path=str(DOCS_SCREENSHOTS / "endpoints.png"))
            fits_the_width(page)
            for column in WebhookEndpointAdmin.list_display:
                in_view(page, f"#result_list th.column-{column}")
            in_view(page, "#changelist-filter")
            row = page.locator("#result_list tbody tr", has_text=failing.public_id)
            expect(row.locator("td.field-failure_streak")).to_have_text(
                re.compile(r"^14 failures since \d\d:\d\d:\d\dZ$")
            )
            one_line(page, "#result_list td.field-failure_streak > span")
            one_line(page, "#result_list td.field-url_shown > span")
            expect(row.locator(".kinetic-clip")).to_have_attribute("title", failing.url)
            expect(page.locator("#result_list")).to_contain_text("ordered · 25/s")
            one_line(page, "#result_list td.field-order_and_rate > span")

            # The endpoint: its actions as buttons, its newest deliveries.
            row.locator("th.field-public_id a").click()
            expect(page.locator("h1")).to_contain_text("View webhook endpoint")
            page.screenshot(path=str(DOCS_SCREENSHOTS / "endpoint.png"), full_page=True)
            fits_the_width(page)
            tools = page.locator(".object-tools")
            for label in ("Send test event", "Recover…", "Rotate secret…", "Disable"):
                expect(tools.get_by_role("button", name=label)).to_be_visible()
            expect(tools.get_by_role("link", name="Delivery control")).to_be_visible()
            expect(tools.get_by_role("button", name="Enable")).to_have_count(0)
            recent = page.locator("#deliveries-group tbody tr")
            expect(recent).to_have_count(12)
            expect(recent.first).to_contain_text("judgment.created")
            expect(recent.first).to_contain_text("503")
            assert UTC_TIME.search(page.locator("#deliveries-group").inner_text())
            in_view(page, "#deliveries-group th")

            # A delivery with its attempts: no stray "<pk>#<n> View" line over the rows.
            page.locator("#deliveries-group a", has_text=retried.public_id).click()
            expect(page.locator("h1")).to_contain_text("View delivery")
            fits_the_width(page)
            page.screenshot(path=str(DOCS_SCREENSHOTS / "delivery.png"), full_page=True)
            attempt_rows = page.locator("#attempts-group tbody tr")
            expect(attempt_rows).to_have_count(3)
            group = page.locator("#attempts-group").inner_text()
            assert not re.search(rf"{retried.pk}#\d", group), group
            assert "View" not in group, group
            assert UTC_TIME.search(group)
            in_view(page, "#attempts-group th")
            expect(page.locator(".field-endpoint_url")).to_contain_text(failing.url)

            page.locator(".object-tools").get_by_role("button", name="Retry now").click()
            expect(page.locator("ul.messagelist")).to_contain_text("Queued 1 delivery(ies)")
            expect(page.locator("h1")).to_contain_text("View delivery")

            # The deliveries list: each endpoint's URL, errors whole, no scrolling.
            page.goto(f"{live_server.url}/admin/deliveries/delivery/")
            page.screenshot(path=str(DOCS_SCREENSHOTS / "deliveries.png"))
            fits_the_width(page)
            for column in ("public_id", "endpoint_and_url", "status", "last_response"):
                in_view(page, f"#result_list th.column-{column}")
            expect(page.locator("#result_list")).to_contain_text("connection_error")

            for text in ("a.m.", "p.m."):
                assert text not in page.content()
        finally:
            browser.close()

    retried.refresh_from_db()
    assert retried.status == "pending"  # the button asked for one more attempt
