"""OpenTelemetry traces: off unless the standard OTEL_* variables name an exporter.

Off, this module imports nothing of OpenTelemetry and makes no provider, and the helpers below
return at once: the delivery path pays a test of `enabled`. On (`setup`, called by config.wsgi,
manage.py and the Celery app), the maintained instrumentations trace Django's requests,
Celery's publishing and tasks (the context travels in the task message's headers), psycopg's
statements (those of a request or a task) and requests' calls. The spans made here are those
no instrumentation sees: an event's publish, and a delivery's attempt, whose request goes
straight to requests' adapter, beneath the Session that the requests instrumentation wraps.

No attribute may carry a secret: ids, counts, status codes and error kinds only.
"""

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from functools import wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

# Any of them set (and none saying "none" or disabling the SDK) turns tracing on.
EXPORTER_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
)
SERVICE_NAME = "kinetic-webhooks"
# Probes and scrapes come every few seconds and say nothing a trace would add.
EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"

enabled = False
_provider: "TracerProvider | None" = None
_statements: "TracerProvider | None" = None
_tracer: "Tracer | None" = None

P = ParamSpec("P")
R = TypeVar("R")


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (the OpenTelemetry SDK's own variables)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in EXPORTER_VARIABLES)


def setup() -> None:
    """Traces this process if the environment asks for it; once, and after any fork (a
    BatchSpanProcessor's thread does not survive one)."""
    if not enabled and requested():
        start(_exporter())


def start(exporter: "SpanExporter") -> None:
    """Traces this process to `exporter`, in batches (tests pass an in-memory one)."""
    global enabled, _provider, _statements, _tracer
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    if enabled:
        return
    if _provider is None or _statements is None:  # the global one can be set once per process
        name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or SERVICE_NAME
        resource = Resource.create({"service.name": name})
        _provider = TracerProvider(resource=resource)
        # SQL statements only within a request, a task or a span of ours: alone, the sweep's
        # (every second in every worker process) would each make a trace of their own.
        _statements = TracerProvider(resource=resource, sampler=ParentBased(root=ALWAYS_OFF))
        trace.set_tracer_provider(_provider)
    processor = BatchSpanProcessor(exporter)
    _provider.add_span_processor(processor)
    _statements.add_span_processor(processor)
    _tracer = trace.get_tracer("kinetic")
    excluded = os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", EXCLUDED_URLS)
    DjangoInstrumentor().instrument(excluded_urls=excluded)
    CeleryInstrumentor().instrument()
    PsycopgInstrumentor().instrument(tracer_provider=_statements)
    RequestsInstrumentor().instrument()
    enabled = True


def stop() -> None:
    """Stops tracing this process (its spans so far exported): for tests, which trace in the
    test process and leave it untraced for the next ones."""
    global enabled
    if not enabled:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    for instrumentor in (
        DjangoInstrumentor(),
        CeleryInstrumentor(),
        PsycopgInstrumentor(),
        RequestsInstrumentor(),
    ):
        instrumentor.uninstrument()
    enabled = False
    flush()


def flush() -> None:
    """Exports every span ended so far."""
    if _provider is not None:
        _provider.force_flush()


def _exporter() -> "SpanExporter":
    names = {
        name.strip().lower()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
        if name.strip()
    } or {"otlp"}
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    ).strip()
    if names == {"console"}:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if names != {"otlp"} or protocol not in ("", "http/protobuf"):
        # Only OTLP over HTTP (and the console) is installed: fail at start, not silently.
        raise ImproperlyConfigured(
            "Traces are exported with OTLP over HTTP (OTEL_TRACES_EXPORTER=otlp, protocol "
            "http/protobuf) or to the console (OTEL_TRACES_EXPORTER=console); got "
            f"OTEL_TRACES_EXPORTER={','.join(sorted(names))!r}, protocol {protocol!r}."
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


# --- For the code: spans and the context, at no cost while tracing is off ---------------------


def current() -> "Context | None":
    """The current trace context, to continue on another thread; None while tracing is off."""
    if not enabled:
        return None
    from opentelemetry import context

    return context.get_current()


def span(
    name: str, attributes: Mapping[str, Any], parent: "Context | None" = None
) -> "AbstractContextManager[Span]":
    """A span of this service's own, under `parent` (or the current span). Only while tracing
    is on: callers test `enabled` first, so that nothing is built for nothing."""
    assert _tracer is not None
    return _tracer.start_as_current_span(name, context=parent, attributes=attributes)


def failed(span: "Span", error_type: str) -> None:
    """Marks `span` failed, with the kind of error (a code of ours, never a message)."""
    from opentelemetry.trace import StatusCode

    span.set_attribute("error.type", error_type)
    span.set_status(StatusCode.ERROR, error_type)


def annotate(key: str, value: str | int | float | bool) -> None:
    """Sets an attribute on the current span (an instrumentation's, say a Celery task's)."""
    if enabled:
        from opentelemetry import trace

        trace.get_current_span().set_attribute(key, value)


def traced(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Runs the function in a span of its own while tracing is on; `annotate` names what it
    made."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            if not enabled:
                return function(*args, **kwargs)
            with span(name, {}):
                return function(*args, **kwargs)

        return run

    return decorate


def continued(callback: Callable[[], R]) -> Callable[[], R]:
    """`callback`, run later (say on commit) in the trace that is current now."""
    parent = current()
    if parent is None:
        return callback

    def run() -> R:
        from opentelemetry import context

        token = context.attach(parent)
        try:
            return callback()
        finally:
            context.detach(token)

    return run
