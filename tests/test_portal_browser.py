"""The customer portal in a real browser (Debian's Chromium, driven by Playwright), end to end:
a link made by the API opens it; an endpoint created there at a real receiver gets an event
published through the API, sent by a real Celery worker; its delivery is opened, the receiver
made to fail, the delivery retried, the failures recovered since a time, and the secret
rotated. Every page is photographed at 1280 px and inside a 900 px iframe of another origin
(PORTAL_FRAME_ANCESTORS lets it frame the portal) for the README (docs/portal/).

No ORM call while the browser runs (Playwright's sync API keeps an event loop in this thread,
where Django refuses them): the test reads through the API and the receiver.
"""

import html
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from playwright.sync_api import Frame, Page, ViewportSize, expect, sync_playwright

from accounts.services import organization_create
from tests import factories
from tests.servers import ROOT, Received, Receiver, Reply, free_port
from tests.test_admin_browser import CHROMIUM, CHROMIUM_ARGS

# The README links docs/portal/; a run writes there only when asked (UPDATE_SCREENSHOTS=1),
# so that every run does not rewrite committed pictures with a pixel's difference.
DOCS_SCREENSHOTS = (
    ROOT / "docs" / "portal"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else ROOT / "test-output" / "portal"
)
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
FRAME_WIDTH = 900
FRAME_HEIGHT = 1000
HOOK = "/hooks/acme"
# Photographed, not held to the width: the endpoint list (the portal core's page) has a table
# that scrolls sideways in its own box at 1280 px and 900 px.
NOT_CHECKED = {"endpoints"}

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


class HostPage:
    """Another origin's page (127.0.0.1, another port) that frames the portal 900 px wide, as
    a customer's dashboard would: `/?src=<portal URL>`."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                src = parse_qs(urlsplit(self.path).query).get("src", [""])[0]
                body = (
                    "<!doctype html><html><head><title>Acme dashboard</title></head>"
                    '<body style="margin:0;background:#e9ecef">'
                    f'<iframe title="Webhooks" src="{html.escape(src)}" width="{FRAME_WIDTH}" '
                    f'height="{FRAME_HEIGHT}" style="border:0;display:block;background:#fff">'
                    "</iframe></body></html>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def host_page():
    page = HostPage()
    yield page
    page.close()


class Api:
    """The environment's API, through the live server, as the customer's backend calls it."""

    def __init__(self, base_url: str, raw_key: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {raw_key}", "MD-Version": "2026-06-11"}

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(
            f"{self.base_url}{path}", json=body, headers=self.headers, timeout=30
        )
        assert response.status_code in (200, 201, 202), response.text
        return response.json()

    def get(self, path: str) -> dict[str, Any]:
        response = requests.get(f"{self.base_url}{path}", headers=self.headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


def until(check: Callable[[], Any], what: str, timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def reload_until(page: Page, selector: str, text: str | re.Pattern[str], count: int = 1) -> None:
    """Reloads `page` until `count` elements matching `selector` hold `text`."""

    def shown() -> bool:
        page.reload()
        return page.locator(selector, has_text=text).count() >= count

    until(shown, f"{count} of {selector} with {text!r} on {page.url}")


def fits_the_width(frame: Page | Frame) -> None:
    """No sideways scroll: the document is no wider than its window, and no box on it is
    wider than it shows (a code sample's own scroll aside)."""
    width = frame.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert width[0] <= width[1], f"{frame.url} scrolls sideways: {width}"
    scrolling = frame.evaluate(
        """() => [...document.querySelectorAll('*:not(pre.code)')]
            .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
            .filter(e => e.scrollWidth > e.clientWidth + 1)
            .map(e => `${e.tagName}.${e.className}: ${e.scrollWidth} > ${e.clientWidth}`)"""
    )
    assert not scrolling, f"{frame.url} scrolls sideways: {scrolling}"


def shot(page: Page, name: str) -> str:
    """Photographs the page, checks it fits, and returns its heading."""
    page.screenshot(path=str(DOCS_SCREENSHOTS / f"{name}.png"), full_page=True)
    if name not in NOT_CHECKED:
        fits_the_width(page)
    return page.locator("h1").inner_text()


def utc_input(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_a_developer_debugs_and_recovers_their_webhooks_in_the_portal(
    live_server, settings, worker, receiver: Receiver, host_page: HostPage
):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # the receiver lives on 127.0.0.1
    settings.PORTAL_COOKIE_SECURE = False  # plain http:// in the test
    settings.PORTAL_FRAME_ANCESTORS = [host_page.origin]
    environment = organization_create(slug="acme").environments.get(name="sandbox")
    _, raw_key = factories.api_key(environment)
    # 127.0.0.1, like the host page: the iframe is then same-site, and the SameSite=Lax
    # cookie goes with it (a customer serves both under one site, or the portal beside them).
    api = Api(live_server.url.replace("localhost", "127.0.0.1"), raw_key)
    failing = threading.Event()
    receiver.respond(
        HOOK,
        lambda got: (
            Reply(status=503, body=b'{"error": "maintenance"}')
            if failing.is_set()
            else Reply(status=200, body=b'{"received": true}')
        ),
    )
    started = datetime.now(UTC) - timedelta(seconds=5)

    def arrived(event_id: str) -> list[Received]:
        return [r for r in receiver.received(HOOK) if r.headers["MD-Event-Id"] == event_id]

    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages: dict[str, str] = {}  # screenshot name -> the portal URL, for the iframe shots
    headings: dict[str, str] = {}
    link = api.post("/v1/portal_sessions", {})
    assert link["object"] == "portal_session" and link["read_only"] is False

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=DESKTOP)
            page = context.new_page()
            # A CSP violation (an inline script or style, htmx's own styles) is a console error.
            errors: list[str] = []
            context.on(
                "console",
                lambda m: (
                    errors.append(f"{m.location.get('url')}: {m.text}")
                    if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico")
                    else None
                ),
            )
            page.goto(link["url"])
            expect(page.locator("h1")).to_have_text("Endpoints")
            base = page.url.split("/portal/")[0]

            # A new endpoint at the receiver, reached with the keyboard alone (the focused
            # control shows its ring); its secret is shown once.
            for _ in range(30):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.textContent.trim()") == "New endpoint":
                    break
            else:
                pytest.fail("Tab never reached the New endpoint link")
            ring = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert ring not in ("", "none"), ring
            page.keyboard.press("Enter")
            expect(page.locator("h1")).to_have_text("New endpoint")
            page.fill("#id_url", f"{receiver.url}{HOOK}")
            # Not the operational events: the failures below would bring those too.
            for kind in ("packet.created", "judgment.created"):
                page.check(f"input[name=enabled_events][value='{kind}']")
            pages["endpoint-new"] = page.url
            headings["endpoint-new"] = shot(page, "endpoint-new")
            page.get_by_role("button", name="Create endpoint").click()
            expect(page.locator("h1")).to_have_text("Endpoint created")
            secret = page.locator("#signing-secret").input_value()
            assert secret.startswith("whsec_")
            page.get_by_role("link", name="Go to the endpoint").click()
            endpoint_id = page.url.split("/portal/endpoints/")[1].strip("/")
            assert endpoint_id.startswith("we_"), page.url

            # An event published through the API arrives; the portal shows its delivery.
            first = api.post("/v1/events", {"type": "packet.created", "data": {"packet": 1}})
            (got,) = until(lambda: arrived(first["event_id"]), "the first delivery")
            page.get_by_role("link", name="Deliveries").first.click()
            reload_until(page, "tbody tr", "succeeded")
            pages["deliveries"] = page.url
            headings["deliveries"] = shot(page, "deliveries")

            # The delivery: the request exactly as the receiver got it, and the attempt.
            page.locator("tbody tr", has_text="packet.created").get_by_role("link").first.click()
            expect(page.locator("h1")).to_contain_text("Delivery dlv_")
            request = page.locator("#request").inner_text()
            for name in ("MD-Signature", "webhook-signature", "webhook-id", "MD-Delivery-Id"):
                assert f"{name}: {got.headers[name]}" in request, name
            assert page.locator("#request-body").inner_text() == got.body.decode()
            expect(page.locator("table.attempts tbody tr")).to_have_count(1)
            expect(page.locator("table.attempts")).to_contain_text("200")
            expect(page.locator("table.attempts")).to_contain_text('{"received": true}')
            delivery_url = page.url
            pages["delivery"] = delivery_url

            # The receiver fails; a retry is one more attempt, and it shows.
            failing.set()
            page.get_by_role("button", name="Retry now").click()
            expect(page.locator(".messages")).to_contain_text("Retry queued")
            reload_until(page, "table.attempts tbody tr", "503")
            expect(page.locator("table.attempts")).to_contain_text("maintenance")
            headings["delivery"] = shot(page, "delivery")

            # Another event fails every attempt; both end failed (retries 1 s apart).
            second = api.post("/v1/events", {"type": "judgment.created", "data": {"id": 2}})
            page.goto(f"{base}/portal/endpoints/{endpoint_id}/deliveries/?status=failed")
            reload_until(page, "tbody tr", "failed", count=2)
            expect(page.locator("#status-filter")).to_have_value("failed")
            shot(page, "deliveries-failed")

            # Recover since before both: the recovery's page follows it to the end.
            failing.clear()
            page.fill("#recover-since", utc_input(started))
            page.get_by_role("button", name="Recover").click()
            expect(page.locator("h1")).to_contain_text("Recovery rcv_")
            progress = page.locator("#recovery-progress")
            expect(progress).to_contain_text("completed", timeout=40_000)  # htmx polls it
            expect(page.locator("#recovery-requeued")).to_have_text("2")
            assert page.evaluate("() => typeof window.htmx") == "object"
            pages["recovery"] = page.url
            headings["recovery"] = shot(page, "recovery")
            page.goto(f"{base}/portal/endpoints/{endpoint_id}/deliveries/?status=succeeded")
            reload_until(page, "tbody tr", "succeeded", count=2)

            # Events, one event with its delivery, the catalog.
            page.get_by_role("navigation", name="Portal").get_by_role("link", name="Events").click()
            for event in (first, second):  # the delivery.exhausted events beside them
                expect(page.locator("tbody tr", has_text=event["event_id"])).to_have_count(1)
            pages["events"] = page.url
            headings["events"] = shot(page, "events")
            page.get_by_role("link", name=second["event_id"]).click()
            expect(page.locator("h1")).to_contain_text("judgment.created")
            expect(page.locator("tbody tr")).to_contain_text("succeeded")
            pages["event"] = page.url
            headings["event"] = shot(page, "event")
            page.get_by_role("link", name="Event types").click()
            expect(page.locator("h2", has_text="packet.created")).to_be_visible()
            pages["event-types"] = page.url
            headings["event-types"] = shot(page, "event-types")

            # Rotating the secret: the new one shown once, and the delivery page says so.
            page.goto(f"{base}/portal/endpoints/")
            expect(page.locator("tbody tr")).to_contain_text("100%")  # 2 of 2 succeeded, 24 h
            pages["endpoints"] = page.url
            headings["endpoints"] = shot(page, "endpoints")
            page.get_by_role("link", name=f"{receiver.url}{HOOK}").click()
            pages["endpoint"] = page.url
            headings["endpoint"] = shot(page, "endpoint")
            page.get_by_role("link", name="Rotate secret").click()
            pages["rotate"] = page.url
            headings["rotate"] = shot(page, "rotate")
            page.get_by_role("button", name="Rotate secret").click()
            expect(page.locator("h1")).to_have_text("New signing secret")
            rotated = page.locator("#signing-secret").input_value()
            assert rotated.startswith("whsec_") and rotated != secret
            page.goto(delivery_url)
            expect(page.locator("main")).to_contain_text("rotated after this attempt")

            # Verifying: the endpoint's id filled in, never a secret.
            page.goto(f"{base}/portal/verifying/?endpoint={endpoint_id}")
            expect(page.locator("#code-python")).to_contain_text(endpoint_id)
            content = page.content()
            assert secret not in content and rotated not in content
            pages["verifying"] = page.url
            headings["verifying"] = shot(page, "verifying")

            # The same pages in a 900 px iframe of the customer's own page.
            # A page of the same context: the session's cookie is the browser's.
            framed = context.new_page()
            framed.set_viewport_size({"width": FRAME_WIDTH + 40, "height": FRAME_HEIGHT + 40})
            for name, url in pages.items():
                framed.goto(f"{host_page.origin}/?src={url}")
                frame = framed.frame_locator("iframe")
                expect(frame.locator("h1")).to_have_text(headings[name])
                if name not in NOT_CHECKED:
                    fits_the_width(framed.frames[1])
                framed.locator("iframe").screenshot(
                    path=str(DOCS_SCREENSHOTS / f"{name}-iframe.png")
                )
            assert not errors, errors
        finally:
            browser.close()

    # What the pages said, as the API says it.
    deliveries = api.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries")["data"]
    assert sorted(d["status"] for d in deliveries) == ["succeeded", "succeeded"]
    retried = next(d for d in deliveries if d["event_id"] == first["event_id"])
    assert [a["status_code"] for a in retried["attempts"]][:2] == [200, 503]
