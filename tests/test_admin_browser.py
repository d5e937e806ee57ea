"""An operator's errand in a real browser (Debian's Chromium, driven by Playwright): log in,
find the failing endpoint with the "failing" filter, disable it, rotate its secret through the
confirmation page, copy the new secret from the one page that shows it.

The browser runs against pytest-django's live server; database work happens before and after
the browser session (Playwright's sync API keeps an event loop in this thread, where Django
refuses ORM calls).
"""

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect, sync_playwright

from accounts.services import organization_create
from core import encryption
from deliveries.dispatch import deliveries_send
from deliveries.services import event_fan_out, event_publish
from tests.servers import ROOT, Receiver, Reply
from webhooks.models import EndpointSecret, WebhookEndpoint
from webhooks.services import endpoint_create

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
PASSWORD = "correct horse battery staple"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


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
    live_server, settings, receiver: Receiver
):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # the receiver lives on 127.0.0.1
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    environment = organization_create(slug="acme").environments.get(name="sandbox")
    healthy = endpoint_create(environment=environment, url=f"{receiver.url}/ok").endpoint
    failing = endpoint_create(environment=environment, url=f"{receiver.url}/down")
    receiver.script("/down", Reply(status=503))
    event = event_publish(environment=environment, type="packet.created")
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
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            log_in(page, live_server.url)
            page.click("text=Webhook endpoints")

            page.click("text=Failing now")
            rows = page.locator("#result_list tbody tr")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text(endpoint_id)
            expect(rows.first).to_contain_text("1 failed attempt(s) since")
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
