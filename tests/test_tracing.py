"""Traces: off unless OTEL_* asks for them; on, one trace from the API request that publishes an
event to each attempt to deliver it, across the broker, with ids and no secret in it."""

import os
import subprocess
import sys

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import connections
from django.db.backends.signals import connection_created
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from config.celery_app import app as celery_app
from core import tracing
from deliveries.models import Event
from tests import factories
from tests.servers import ROOT, Reply, wait_for
from webhooks.models import WebhookEndpoint

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# What must never be in a span: the receiver's token in its URL's query and in its own header.
QUERY_TOKEN = "query-token-must-not-leak"
HEADER_TOKEN = "header-token-must-not-leak"
NOWHERE = "http://127.0.0.1:9"  # a collector's address, never reached: nothing is exported


@pytest.fixture(scope="module")
def exporter():
    """This process traced to memory, for the module; untraced again after it."""
    exporter = InMemorySpanExporter()
    tracing.start(exporter)
    yield exporter
    tracing.stop()
    connections.close_all()  # their cursors were made traced


@pytest.fixture
def spans(exporter):
    tracing.flush()
    exporter.clear()

    def finished() -> list[ReadableSpan]:
        tracing.flush()
        return list(exporter.get_finished_spans())

    return finished


@pytest.fixture
def tenant(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # the receiver is on 127.0.0.1
    return factories.api_client(factories.environment())


def endpoint_with_secrets(tenant, receiver):
    return tenant.create_endpoint(
        f"{receiver.url}/hook?token={QUERY_TOKEN}",
        headers={"Authorization": f"Bearer {HEADER_TOKEN}", "X-Team": "payments"},
    )


def publish(tenant) -> str:
    response = tenant.post("/v1/events", {"type": "packet.created", "data": {"n": 1}})
    assert response.status_code == 201, response.content
    return response.json()["event_id"]


def named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def ended(spans: list[ReadableSpan], *names: str) -> list[ReadableSpan]:
    """`spans` once every one of `names` is among them."""
    return spans if set(names) <= {s.name for s in spans} else []


def attributes(span: ReadableSpan) -> dict:
    return dict(span.attributes or {})


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_one_trace_from_the_request_to_the_attempt(tenant, receiver, spans, broker):
    endpoint = endpoint_with_secrets(tenant, receiver)
    # Tasks that earlier tests in this process left on its private broker would run first in
    # the worker below, each a fan-out span of its own.
    assert broker.command("FLUSHALL").startswith(b"+OK")
    # The fan-out and the delivery run in this process, on a worker thread that takes the task
    # from the broker, with the trace context in the message's headers.
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False):
            event_id = publish(tenant)
            delivered = wait_for(lambda: receiver.received(f"/hook?token={QUERY_TOKEN}"))
            done = wait_for(lambda: ended(spans(), "webhook.attempt", "run/deliveries.fan_out"))
    finally:
        # The worker's start (worker_init) made this process's new connections commit without
        # waiting for the disk, as a worker's do: not for the tests that follow.
        connection_created.disconnect(dispatch_uid="worker-async-commit")
        connections["default"].close()

    request = named(done, "POST v1/events$")
    publishing = named(done, "webhook.publish")
    queued = named(done, "apply_async/deliveries.fan_out")
    fan_out = named(done, "run/deliveries.fan_out")
    attempt = named(done, "webhook.attempt")
    assert request.kind == SpanKind.SERVER and request.parent is None
    assert parent_of(publishing) == request.context.span_id
    assert parent_of(queued) == publishing.context.span_id
    assert parent_of(fan_out) == queued.context.span_id
    assert parent_of(attempt) == fan_out.context.span_id  # across to the sending thread
    trace_id = request.context.trace_id
    assert {s.context.trace_id for s in (publishing, queued, fan_out, attempt)} == {trace_id}
    event = Event.objects.get(public_id=event_id)
    endpoint_id = endpoint["webhook_endpoint_id"]

    assert attributes(publishing) == {"webhook.event_id": event_id, "webhook.event_pk": event.pk}
    assert attributes(fan_out)["webhook.event_pk"] == event.pk
    assert attributes(attempt) == {
        "webhook.delivery_id": delivered[0].headers["MD-Delivery-Id"],
        "webhook.event_id": event_id,
        "webhook.endpoint_pk": WebhookEndpoint.objects.get(public_id=endpoint_id).pk,
        "webhook.attempt": 1,
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": receiver.port,
        "http.response.status_code": 200,
    }
    # psycopg's statements, in the request and in the task; none alone (the test's own, made
    # outside any request, are not traced).
    statements = [s for s in done if attributes(s).get("db.system") == "postgresql"]
    parents = {parent_of(s) for s in statements}
    assert parents >= {request.context.span_id, fan_out.context.span_id}
    assert None not in parents

    secrets = {
        endpoint["signing_secret"],
        QUERY_TOKEN,
        HEADER_TOKEN,
        tenant.raw_key,
        delivered[0].headers["webhook-signature"].split(",")[-1],
    }
    said = [f"{s.name} {key}={value}" for s in done for key, value in attributes(s).items()]
    assert not [line for line in said for secret in secrets if secret in line]


def test_a_failed_attempt_says_how_it_failed(tenant, receiver, spans):
    endpoint_with_secrets(tenant, receiver)
    receiver.script(f"/hook?token={QUERY_TOKEN}", Reply(503))
    factories.deliver_here(tenant.environment)

    attempt = named(spans(), "webhook.attempt")
    assert attributes(attempt)["http.response.status_code"] == 503
    assert attributes(attempt)["error.type"] == "http_503"
    assert not attempt.status.is_ok


def test_a_worker_process_continues_the_trace_it_is_sent(tenant, receiver, spans, private_worker):
    """The context travels in the task's headers to a real worker (threads pool), which exports
    its spans to a collector over OTLP/HTTP."""
    collector = receiver  # OTLP/HTTP posts to /v1/traces; the webhooks go to /hook
    private_worker(OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="100")
    endpoint_with_secrets(tenant, receiver)

    event_id = publish(tenant)
    request = named(spans(), "POST v1/events$")
    queued = named(spans(), "apply_async/deliveries.fan_out")

    trace_id = request.context.trace_id.to_bytes(16, "big")

    def exported() -> dict[str, list]:
        """The worker's spans of this request's trace, by name, once its task and attempt have
        ended (a task queued by an earlier test may have been traced too, in its own trace)."""
        found: dict[str, list] = {}
        for message in collector.received("/v1/traces"):
            export = ExportTraceServiceRequest.FromString(message.body)
            for batch in export.resource_spans:
                for scope in batch.scope_spans:
                    for span in scope.spans:
                        if span.trace_id == trace_id:
                            found.setdefault(span.name, []).append((batch.resource, span))
        return found if {"webhook.attempt", "run/deliveries.fan_out"} <= set(found) else {}

    worker_spans = wait_for(exported)
    [(resource, fan_out)] = worker_spans["run/deliveries.fan_out"]
    [(_, attempt)] = worker_spans["webhook.attempt"]
    assert fan_out.parent_span_id == queued.context.span_id.to_bytes(8, "big")
    assert attempt.parent_span_id == fan_out.span_id
    attributes = {a.key: a.value for a in attempt.attributes}
    assert attributes["webhook.event_id"].string_value == event_id
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    assert service == "kinetic-webhooks"


@pytest.mark.parametrize(
    ("environment", "traced"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": NOWHERE}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": NOWHERE}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": NOWHERE}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{NOWHERE}/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "hooks-eu"}, True),
    ],
)
def test_off_unless_the_environment_names_an_exporter(environment, traced):
    """Off, the web and the worker load no tracer, exporter or instrumentation. (redis-py
    imports OpenTelemetry's metrics API and SDK whenever they are installed, for its own
    metrics, which stay off unless set up.)"""
    script = """
import sys
import config.wsgi, config.celery_app, deliveries.tasks
from django.test import Client
assert Client().get("/healthz").status_code == 200
ours = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.instrumentation")
if any(m.startswith(ours) for m in sys.modules):
    from opentelemetry import trace
    print(trace.get_tracer_provider().resource.attributes["service.name"])
else:
    print("untraced")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.test", **environment)
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert run.returncode == 0, run.stderr.decode()
    said = run.stdout.decode().split()[-1]
    if traced:
        assert said == environment.get("OTEL_SERVICE_NAME", "kinetic-webhooks")
    else:
        assert said == "untraced"
