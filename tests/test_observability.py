"""Metrics that move with real deliveries, and log lines that say what they belong to."""

import json
import logging
import re
import uuid

import pytest
from django.test import Client

from core.logging import JsonFormatter, RequestIdFilter, log_context
from tests import factories
from tests.servers import Reply


def scrape(client=None, **headers) -> str:
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        got = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
        if got == wanted:
            return float(match.group(3))
    return 0.0


def test_delivery_metrics_move_on_success_and_on_failure(sandbox, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(sandbox)
    before = scrape()
    ok = client.create_endpoint(f"{receiver.url}/ok")
    factories.deliver_here(sandbox)
    after_success = scrape()
    assert sample(after_success, "kinetic_delivery_attempts_total", outcome="succeeded") == (
        sample(before, "kinetic_delivery_attempts_total", outcome="succeeded") + 1
    )
    assert sample(after_success, "kinetic_delivery_latency_seconds_count") == (
        sample(before, "kinetic_delivery_latency_seconds_count") + 1
    )

    client.patch(f"/v1/webhook_endpoints/{ok['webhook_endpoint_id']}", {"status": "disabled"})
    client.create_endpoint(f"{receiver.url}/broken")
    receiver.script("/broken", Reply(500))
    factories.deliver_here(sandbox)
    after_failure = scrape()
    assert sample(after_failure, "kinetic_delivery_attempts_total", outcome="failed") == (
        sample(after_success, "kinetic_delivery_attempts_total", outcome="failed") + 1
    )
    assert sample(after_failure, "kinetic_delivery_attempt_duration_seconds_count") == (
        sample(before, "kinetic_delivery_attempt_duration_seconds_count") + 2
    )
    # The failed delivery is pending, due in about a second: the queue gauges see it.
    assert "kinetic_deliveries_due" in after_failure
    assert "kinetic_oldest_due_delivery_age_seconds" in after_failure


def test_requests_are_counted_by_route_not_by_path(api):
    ids = [api.create_endpoint()["webhook_endpoint_id"] for _ in range(2)]
    before = scrape()
    for endpoint_id in ids:
        api.get(f"/v1/webhook_endpoints/{endpoint_id}")
    api.get("/v1/webhook_endpoints/we_missing")
    text = scrape()
    route = "/v1/webhook_endpoints/<webhook_endpoint_id>"
    assert sample(text, "kinetic_http_requests_total", route=route, method="GET", status="200") == (
        sample(before, "kinetic_http_requests_total", route=route, method="GET", status="200") + 2
    )
    assert sample(text, "kinetic_http_requests_total", route=route, method="GET", status="404") >= 1
    assert not any(endpoint_id in text for endpoint_id in ids)


def test_a_made_up_method_is_counted_as_other_not_by_its_name(api):
    before = scrape()
    for method in ("FOO", "BREW", "PROPFIND"):
        api.client.generic(method, "/v1/webhook_endpoints", headers=api.headers())
    text = scrape()
    labels = {"route": "/v1/webhook_endpoints", "method": "other", "status": "405"}
    assert sample(text, "kinetic_http_requests_total", **labels) == (
        sample(before, "kinetic_http_requests_total", **labels) + 3
    )
    assert not re.search(r'method="(FOO|BREW|PROPFIND)"', text)


def test_metrics_can_require_a_token(db, settings):
    settings.METRICS_TOKEN = "scrape-me"
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    # The token alone is not a bearer token; the scheme is case-insensitive, as HTTP's are.
    assert Client().get("/metrics", headers={"Authorization": "scrape-me"}).status_code == 401
    assert "kinetic_http_requests_total" in scrape(Authorization="Bearer scrape-me")
    assert "kinetic_http_requests_total" in scrape(Authorization="bearer scrape-me")


@pytest.mark.urls("tests.urls_failing")
def test_an_error_is_logged_with_the_request_id_the_client_saw(api, caplog):
    response = Client(raise_request_exception=False).get(
        "/v1/failing_drf_view", headers={"Authorization": f"Bearer {api.raw_key}"}
    )
    [record] = [r for r in caplog.records if r.name == "api.errors"]
    RequestIdFilter().filter(record)
    assert record.request_id == response["MD-Request-Id"]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == response["MD-Request-Id"]
    assert line["level"] == "ERROR"
    assert "RuntimeError" in line["exception"]


def test_task_log_lines_carry_their_context():
    record = logging.LogRecord("deliveries", logging.INFO, __file__, 1, "sent %s", ("x",), None)
    with log_context(event_id="evt_1", delivery_pks=[1, 2]):
        RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line == {
        "time": line["time"],
        "level": "INFO",
        "logger": "deliveries",
        "message": "sent x",
        "event_id": "evt_1",
        "delivery_pks": [1, 2],
    }


def test_ids_past_what_json_readers_take_exactly_are_logged_as_strings():
    """Event ids are about 2 * 10**16 (a day's partition starts at day * 10**12), past 2**53,
    where JavaScript and jq read JSON numbers rounded: a log search for one would miss it."""
    event_pk = 20_790 * 10**12 + 7
    record = logging.LogRecord("deliveries", logging.WARNING, __file__, 1, "failed", (), None)
    with log_context(event_pk=event_pk, delivery_pks=[1, 2**53 - 1, 2**53], attempt=True):
        RequestIdFilter().filter(record)
    text = JsonFormatter().format(record)
    line = json.loads(text, parse_int=float)  # as a reader with doubles only takes it
    assert line["event_pk"] == "20790000000000007"
    assert line["delivery_pks"] == [1, 2**53 - 1, "9007199254740992"]
    assert line["attempt"] is True


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_one_scrape_of_the_web_reports_the_workers_deliveries(broker, receiver, tmp_path):
    """Multiprocess mode: gunicorn and a Celery worker share PROMETHEUS_MULTIPROC_DIR."""
    from tests.servers import FAST_DELIVERY_SETTINGS, CeleryWorker, Gunicorn, database_url, wait_for

    shared = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), **FAST_DELIVERY_SETTINGS}
    web = Gunicorn(database_url(), broker.url, WORKERS="2", **shared)
    worker = CeleryWorker(database_url(), broker.url, **shared)
    try:
        env = factories.environment()
        _, raw = factories.api_key(env)
        headers = {"Authorization": f"Bearer {raw}"}
        import requests

        created = requests.post(
            f"{web.url}/v1/webhook_endpoints",
            json={"url": f"{receiver.url}/metrics-hook"},
            headers=headers,
            timeout=30,
        )
        assert created.status_code == 201, created.text
        requests.post(
            f"{web.url}/v1/events", json={"type": "packet.created"}, headers=headers, timeout=30
        )
        wait_for(lambda: receiver.received("/metrics-hook"), timeout=30)

        def succeeded() -> float:
            text = requests.get(f"{web.url}/metrics", timeout=30).text
            return sample(text, "kinetic_delivery_attempts_total", outcome="succeeded")

        # Only the worker process attempted the delivery; the web process reports it.
        assert wait_for(lambda: succeeded() >= 1, timeout=20)
    finally:
        worker.stop()
        web.stop()


def test_a_cancelled_delivery_is_counted_once_by_the_claim_that_cancelled_it(sandbox, settings):
    """A worker whose claim lapsed, and was taken by another, cancels nothing and counts
    nothing: the other worker cancels the delivery and counts it."""
    from django.utils import timezone

    from deliveries.claiming import cancel_for_gone_endpoints, claim
    from deliveries.models import Delivery
    from deliveries.services import event_fan_out, event_publish

    client = factories.api_client(sandbox)
    endpoint = client.create_endpoint("https://example.com/gone")["webhook_endpoint_id"]
    event = event_publish(environment=sandbox, type="packet.created", data={})
    event_fan_out(event_id=event.pk)
    delivery = Delivery.objects.get(event=event)
    lapsed, taker = uuid.uuid4(), uuid.uuid4()
    stale = claim([delivery.pk], 0, timezone.now(), lapsed, held=False)
    assert [d.pk for d in stale] == [delivery.pk]
    client.patch(f"/v1/webhook_endpoints/{endpoint}", {"status": "disabled"})
    # Pending all the same, as a fan-out that read the endpoint before the disable committed
    # leaves it, and claimed by another worker since the first one's lease ran out.
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.PENDING, completed_at=None, claim_token=taker
    )

    before = sample(scrape(), "kinetic_deliveries_cancelled_total")
    cancel_for_gone_endpoints(stale, lapsed)
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.PENDING
    assert sample(scrape(), "kinetic_deliveries_cancelled_total") == before
    cancel_for_gone_endpoints(stale, taker)
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.CANCELLED
    assert sample(scrape(), "kinetic_deliveries_cancelled_total") == before + 1
