"""Schemathesis against the API's own OpenAPI document (`/v1/openapi.json`).

Every operation of the document is fuzzed through the WSGI application, in positive mode (data
the schema allows) and negative mode (data it forbids), with real keys of two organizations in
both environments. For every request:

- no `5xx`, ever;
- the response conforms to the document: status code documented, content type, headers, body;
- negative data is refused with a `4xx`, and positive data is accepted but for a refusal the
  operation documents and the test confirms (the schema says exactly what the API enforces);
- tenant isolation: a path id of another tenant is `404` (never a success), a cursor of another
  tenant is refused, every id a list or an event returns belongs to the caller's environment,
  nothing another tenant owns changes, and whatever the caller creates is `404` for the others.

Each example runs in a savepoint rolled back afterwards, so every example starts from the same
seed data and the run is reproducible (`derandomize=True`). Then the same document is sent over
HTTP to Django's live server, through every check schemathesis has (`--checks all`). Requests,
checks and statuses are counted and printed in the run's summary (tests.summary).
"""

import datetime as dt
import json
import os
import re
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, transaction
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Err
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    object_level_authorization,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)
from werkzeug.test import Client as WsgiClient

from accounts.keys import key_hash
from accounts.models import Environment, PortalSession
from api.deliveries.openapi import PUBLISHABLE_EVENT_TYPES
from api.webhooks.openapi import SUBSCRIBABLE_EVENT_TYPES as SUBSCRIBABLE
from core import encryption
from deliveries import transport
from deliveries.models import Delivery, Event, Recovery
from deliveries.recovery import recovery_create
from deliveries.services import event_fan_out, event_publish
from tests import factories, summary
from tests.test_auth import assert_error
from webhooks import headers, url_policy
from webhooks.models import EndpointSecret, WebhookEndpoint
from webhooks.services import MAX_METADATA_KEYS, endpoint_create, endpoint_update

SCHEMA_PATH = "/v1/openapi.json"
# Per operation and generation mode, sized to keep CI's run within its budget;
# FUZZ_MAX_EXAMPLES=500 for a deeper run by hand (README: Testing).
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
HEADER, QUERY = ParameterLocation.HEADER, ParameterLocation.QUERY
# Statuses a request with another tenant's id may get before the lookup (bad version, unknown
# query parameter, bad key, body refused, rate limit) or from it (404). Never a success.
FOREIGN_ID_STATUSES = {400, 401, 404, 413, 415, 429}

# operation id -> requests sent, whatever sent them (the fuzzer, its checks, our own probes).
REQUESTS: Counter[str] = Counter()
# (operation id, mode, status) -> examples, to see what the fuzzer reached.
STATUSES: Counter[tuple[str, str, int]] = Counter()


class CountingApp:
    """The project's WSGI application, counting requests per operation under test."""

    def __init__(self) -> None:
        self.app = WSGIHandler()
        self.operation = "schema"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        REQUESTS[self.operation] += 1
        return self.app(environ, start_response)


APP = CountingApp()


@contextmanager
def requests_keep_the_connection() -> Iterator[None]:
    """Like Django's test client: requests must not close the test's connection, whose
    transaction holds the seed data (and rolls everything back at the end)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


# The document is public and built without the database, so it is read once, at collection.
with requests_keep_the_connection():
    SCHEMA = schemathesis.openapi.from_wsgi(SCHEMA_PATH, APP)


def operation_ids(schema: schemathesis.BaseSchema) -> list[str]:
    """Every operation's id; one the document describes wrongly fails the collection."""
    ids = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        ids.append(result.ok().definition.raw["operationId"])
    return sorted(ids)


OPERATION_IDS = operation_ids(SCHEMA)


@pytest.fixture(scope="module", autouse=True)
def report_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    lines = []
    total = sum(n for op, n in REQUESTS.items() if op != "schema")
    if total:
        lines += [
            f"test_fuzz_api: {total} requests sent to {len(OPERATION_IDS)} operations "
            f"({MAX_EXAMPLES} examples per operation and mode)",
            "  requests: " + ", ".join(f"{op}={n}" for op, n in sorted(REQUESTS.items())),
            "  statuses: " + _counts(STATUSES),
        ]
    live = sum(n for op, n in LIVE_REQUESTS.counts.items() if op != "seed")
    if live:
        lines += [
            f"test_fuzz_api, live server: {sum(LIVE_CASES.values())} cases, {live} requests, "
            f"{sum(LIVE_CHECKS.values())} checks ({LIVE_MAX_EXAMPLES} examples per operation "
            "in the fuzzing phase)",
            "  requests: " + _counts(LIVE_REQUESTS.counts),
            "  checks: " + _counts(LIVE_CHECKS),
            "  statuses: " + _counts(LIVE_STATUSES),
        ]
    if REFUSALS:
        lines.append("  documented refusals met: " + _counts(REFUSALS))
    summary.add(request.config, lines)


def _counts(counter: Counter[Any]) -> str:
    def key(item: Any) -> str:
        return "/".join(map(str, item)) if isinstance(item, tuple) else str(item)

    return ", ".join(f"{key(k)}={n}" for k, n in sorted(counter.items(), key=repr))


@pytest.fixture
def wsgi_requests_in_test_transaction() -> Iterator[None]:
    with requests_keep_the_connection():
        yield


class _ResolvesNothing:
    """The `socket` module as deliveries.transport sees it, with a resolver that finds nothing."""

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)

    @staticmethod
    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: not resolved while fuzzing")


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated URLs name random hosts, and a test ping is sent at once: resolve nothing, so
    nothing leaves the machine and every run sees the same answer. A name that does not resolve
    is accepted at registration; a ping to it fails with a recorded connection error."""
    monkeypatch.setattr(url_policy, "resolve", lambda host, port, timeout=0: [])
    monkeypatch.setattr(transport, "socket", _ResolvesNothing())


@dataclass
class Tenant:
    name: str
    environment: Environment
    key: str
    endpoint_ids: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    delivery_ids: list[str] = field(default_factory=list)
    recovery_ids: list[str] = field(default_factory=list)

    def ids(self, kind: str) -> list[str]:
        return {
            "webhook_endpoint_id": self.endpoint_ids,
            "event_id": self.event_ids,
            "delivery_id": self.delivery_ids,
            "recovery_id": self.recovery_ids,
        }[kind]


def _seed(name: str, environment: Environment) -> Tenant:
    _, key = factories.api_key(environment)
    tenant = Tenant(name, environment, key)
    scheme = "http" if name.endswith("sandbox") else "https"
    for index in range(2):
        created = endpoint_create(
            environment=environment, url=f"{scheme}://{name}-{index}.example.com/hook"
        )
        tenant.endpoint_ids.append(created.endpoint.public_id)
    event = event_publish(environment=environment, type="judgment.created", data={"of": name})
    event_fan_out(event_id=event.pk)
    tenant.event_ids.append(event.public_id)
    tenant.delivery_ids += Delivery.objects.filter(event=event).values_list("public_id", flat=True)
    recovery = recovery_create(
        endpoint=WebhookEndpoint.objects.get(public_id=tenant.endpoint_ids[0]),
        since=timezone.now() - dt.timedelta(hours=1),
    )
    tenant.recovery_ids.append(recovery.public_id)
    # The second endpoint is disabled (its deliveries cannot be retried): both states exist.
    endpoint_update(
        endpoint=WebhookEndpoint.objects.get(public_id=tenant.endpoint_ids[1]), status="disabled"
    )
    assert tenant.delivery_ids
    return tenant


@pytest.fixture
def tenants(db, wsgi_requests_in_test_transaction, no_dns) -> list[Tenant]:
    first, second = factories.organization(), factories.organization()
    return [
        _seed(f"{org_name}-{env}", org.environments.get(name=env))
        for org_name, org in (("a", first), ("b", second))
        for env in ("sandbox", "production")
    ]


def _snapshot(environments: list[Environment]) -> dict[str, Any]:
    """Everything of these environments a request of another tenant could change."""
    return {
        "endpoints": sorted(
            WebhookEndpoint.objects.filter(environment__in=environments).values_list(
                "public_id", "url", "status", "enabled_events", "deleted_at"
            )
        ),
        "secrets": sorted(
            EndpointSecret.objects.filter(endpoint__environment__in=environments).values_list(
                "id", "ciphertext", "expires_at"
            )
        ),
        "events": sorted(
            Event.objects.filter(environment__in=environments).values_list("public_id", "body")
        ),
        "deliveries": sorted(
            Delivery.objects.filter(endpoint__environment__in=environments).values_list(
                "public_id", "status", "next_attempt_at"
            ),
            key=repr,
        ),
    }


# Models whose public ids a response lists, by the id field naming them.
ID_FIELDS: dict[str, Callable[[Environment, set[str]], int]] = {
    "webhook_endpoint_id": lambda env, ids: WebhookEndpoint.objects.filter(
        environment=env, public_id__in=ids
    ).count(),
    "event_id": lambda env, ids: Event.objects.filter(environment=env, public_id__in=ids).count(),
    "delivery_id": lambda env, ids: Delivery.objects.filter(
        endpoint__environment=env, public_id__in=ids
    ).count(),
    "recovery_id": lambda env, ids: Recovery.objects.filter(
        endpoint__environment=env, public_id__in=ids
    ).count(),
}


def _returned_ids(body: Any) -> dict[str, set[str]]:
    """Every object id anywhere in a response body, by id field."""
    found: dict[str, set[str]] = {name: set() for name in ID_FIELDS}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in found and isinstance(item, str):
                    found[key].add(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(body)
    return found


CURSOR_KIND = {
    "webhook_endpoints_list": "webhook_endpoint_id",
    "events_list": "event_id",
    "webhook_endpoint_deliveries_list": "delivery_id",
}


def _seconds_ago(seconds: int, zone_hours: int) -> str:
    zone = dt.timezone(dt.timedelta(hours=zone_hours))
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).astimezone(zone).isoformat()


VALID_BODIES: dict[str, Any] = {
    "webhook_endpoints_create": st.fixed_dictionaries(
        {
            "url": st.from_regex(
                r"\Ahttps://[a-z](?:[a-z0-9-]{0,19}[a-z0-9])?\.example\.(com|org)/[a-z/]{0,20}\Z"
            ),
        },
        optional={"enabled_events": st.lists(st.sampled_from(SUBSCRIBABLE), min_size=1)},
    ),
    "webhook_endpoints_update": st.fixed_dictionaries(
        {},
        optional={
            "url": st.from_regex(
                r"\Ahttps://[a-z](?:[a-z0-9-]{0,19}[a-z0-9])?\.example\.com/[a-z]{0,10}\Z"
            ),
            "enabled_events": st.just(["*"]) | st.lists(st.sampled_from(SUBSCRIBABLE), min_size=1),
            "status": st.sampled_from(["enabled", "disabled"]),
        },
    ),
    "events_create": st.fixed_dictionaries(
        {"type": st.sampled_from(PUBLISHABLE_EVENT_TYPES)},
        optional={
            "data": st.dictionaries(
                st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3
            )
        },
    ),
    "webhook_endpoints_rotate_secret": st.fixed_dictionaries(
        {}, optional={"overlap_seconds": st.integers(0, 604800)}
    ),
    # A window within the retention period, in any zone.
    "webhook_endpoints_recover": st.fixed_dictionaries(
        {"since": st.builds(_seconds_ago, st.integers(3600, 29 * 86400), st.integers(-12, 14))},
        optional={"until": st.builds(_seconds_ago, st.integers(0, 3000), st.integers(-12, 14))},
    ),
}


SOURCES = ["own", "own", "foreign", "generated"]  # where a path id or cursor comes from


def _choose_ids(case: Any, operation_id: str, caller: Tenant, others: list[Tenant], data: Any):
    """Puts the caller's ids, other tenants' ids or generated ones into the path and (in a
    positive case) the cursor.

    Returns the foreign path parameters and whether the cursor is foreign.
    """
    foreign: list[str] = []
    for name in re.findall(r"\{(\w+)\}", case.operation.path):
        if name not in ID_FIELDS:  # an id kind the seed data has none of: as generated
            continue
        source = data.draw(st.sampled_from(SOURCES), label=f"{name} source")
        if source != "generated":
            owner = caller if source == "own" else data.draw(st.sampled_from(others))
            case.path_parameters[name] = data.draw(st.sampled_from(owner.ids(name)), label=name)
            if owner is not caller:
                foreign.append(name)
    foreign_cursor = False
    # A negative case may be about its cursors (both, or an empty one): those are left alone.
    if operation_id in CURSOR_KIND and not case.meta.is_negative_at(QUERY):
        source = data.draw(st.sampled_from(SOURCES), label="cursor source")
        if source != "generated":
            owner = caller if source == "own" else data.draw(st.sampled_from(others))
            cursor = data.draw(st.sampled_from(owner.ids(CURSOR_KIND[operation_id])))
            direction = data.draw(st.sampled_from(["starting_after", "ending_before"]))
            query = {
                k: v
                for k, v in (case.query or {}).items()
                if k not in ("starting_after", "ending_before")
            }
            case.query = {**query, direction: cursor}
            foreign_cursor = owner is not caller
    return foreign, foreign_cursor


def _check_isolation(
    response: Any,
    caller: Tenant,
    others: list[Tenant],
    foreign: list[str],
    foreign_cursor: bool,
) -> None:
    status = response.status_code
    body = response.json() if response.content else None
    if foreign:
        # Another tenant's object does not exist for the caller: never a success, never an
        # error that could only come from looking at it.
        assert status in FOREIGN_ID_STATUSES, (foreign, status, response.text)
        if status in (400, 404):
            assert body is not None, response.text
            param = body["error"]["param"]
            assert status == 404 or param not in foreign, response.text
    if foreign_cursor:
        assert status >= 400, ("a foreign cursor was accepted", status, response.text)
    if 200 <= status < 300 and isinstance(body, dict):
        for kind, ids in _returned_ids(body).items():
            if ids:
                mine = ID_FIELDS[kind](caller.environment, ids)
                assert mine == len(ids), (f"{kind}s of another tenant returned", ids)
        if status == 201 and body.get("object") == "portal_session":
            # A portal link opens into the caller's environment, nobody else's.
            token = body["url"].rsplit("/", 1)[1]
            made = PortalSession.objects.get(link_token_hash=key_hash(token))
            assert made.environment_id == caller.environment.pk, body
        elif status == 201:  # a new endpoint or event: nobody else sees it
            if "webhook_endpoint_id" in body:
                path = f"/v1/webhook_endpoints/{body['webhook_endpoint_id']}"
            else:
                path = f"/v1/events/{body['event_id']}"
            for other in others:
                seen = WsgiClient(APP).get(path, headers={"Authorization": f"Bearer {other.key}"})
                assert seen.status_code == 404, (other.name, path, seen.get_data())


# --- Refusals the document states but its schemas cannot ---------------------------------
#
# A request the schema allows may still be refused (400 parameter_invalid) for a reason that
# turns on stored state, the clock, the server's settings or several fields at once: each
# operation documents those as `Refused…` examples of its 400 (api.openapi.Refusal), and the
# API description says that integers are written without a fraction. positive_data_acceptance
# lets such a 400 pass only if the operation documents a refusal of that parameter AND the test
# confirms, on its own, that the reason holds for this request.

# Fields the schema types as integers: JSON Schema counts 5.0 as one, the API does not.
INTEGER_PARAMS = frozenset({"limit", "rate_limit", "overlap_seconds"})
CLOCK_SLACK = dt.timedelta(seconds=5)  # between the server's reading of the clock and ours


def _documented_refusals(case: Any) -> set[str | None]:
    """The params of the operation's documented refusals."""
    response = case.operation.definition.raw["responses"].get("400", {})
    examples = response.get("content", {}).get("application/json", {}).get("examples", {})
    return {
        example["value"]["error"]["param"]
        for name, example in examples.items()
        if name.startswith("Refused")
    }


def _can_be_stored(value: Any) -> bool:
    """Whether PostgreSQL can be asked about this id: its text holds no NUL."""
    return isinstance(value, str) and "\x00" not in value


def _endpoint(environment: Environment, case: Any) -> WebhookEndpoint | None:
    public_id = (case.path_parameters or {}).get("webhook_endpoint_id")
    if not _can_be_stored(public_id):
        return None
    return WebhookEndpoint.objects.filter(environment=environment, public_id=public_id).first()


def _is_enabled(endpoint: WebhookEndpoint | None) -> bool:
    return endpoint is not None and endpoint.status == "enabled" and endpoint.deleted_at is None


RFC_3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def _parsed_time(value: Any) -> dt.datetime | None:
    """A time as the contract writes them (ISO 8601 with a zone), or None."""
    if not isinstance(value, str) or not RFC_3339.fullmatch(value.upper()):
        return None
    try:
        return dt.datetime.fromisoformat(value.upper())
    except ValueError:
        return None


def _unreachable_url(url: str, environment: Environment) -> bool:
    parts = urlsplit(url)
    if environment.is_production and parts.scheme.lower() == "http":
        return True
    host = (parts.hostname or "").rstrip(".")
    private_allowed = (
        django_settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS and not environment.is_production
    )
    return not private_allowed and (host == "localhost" or host.endswith(".localhost"))


def _merged_metadata_too_many(given: Any, stored: dict[str, str]) -> bool:
    merged = dict(stored)
    for key, value in (given or {}).items():
        if value:
            merged[key] = value
        else:
            merged.pop(key, None)
    return len(merged) > MAX_METADATA_KEYS


def _merged_headers_refused(given: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Two names alike but for case, the mask of an unset header, or too many or too much."""
    if len({name.lower() for name in given}) < len(given):
        return True
    merged = {name.lower(): (name, value) for name, value in stored.items()}
    for name, value in given.items():
        if value is None:
            merged.pop(name.lower(), None)
        elif value == headers.MASK and headers.is_sensitive(name):
            if name.lower() not in merged:
                return True
        else:
            merged[name.lower()] = (name, value)
    plain = {
        name: encryption.decrypt(value["encrypted"]) if isinstance(value, dict) else value
        for name, value in merged.values()
    }
    size = sum(len(name) + len(value) for name, value in plain.items())
    return len(merged) > headers.MAX_HEADERS or size > headers.MAX_TOTAL_SIZE


def _refusal_holds(case: Any, param: str | None, environment: Environment) -> bool:
    """Whether the documented reason for refusing `param` holds for this request."""
    operation = case.operation.definition.raw["operationId"]
    body = case.body if isinstance(case.body, dict) else {}
    query = case.query or {}
    now = timezone.now()
    if param in ("starting_after", "ending_before"):
        model = {
            "webhook_endpoints_list": WebhookEndpoint.objects.filter(deleted_at=None),
            "events_list": Event.objects.all(),
            "webhook_endpoint_deliveries_list": Delivery.objects.all(),
        }[operation]
        scope = "environment" if model.model is not Delivery else "endpoint__environment"
        cursor = query.get(param)
        if not _can_be_stored(cursor):
            return True
        return not model.filter(**{scope: environment, "public_id": cursor}).exists()
    if operation in ("webhook_endpoints_create", "webhook_endpoints_update"):
        endpoint = _endpoint(environment, case)
        if param == "url":
            return _unreachable_url(str(body.get("url")), environment)
        if param == "metadata":
            stored = endpoint.metadata if endpoint else {}
            return _merged_metadata_too_many(body.get("metadata"), stored)
        if param == "headers":
            stored_headers = endpoint.headers if endpoint else {}
            return _merged_headers_refused(body.get("headers", {}), stored_headers)
    if operation == "events_create" and param == "data":
        encoded = json.dumps(body.get("data"), separators=(",", ":"), ensure_ascii=True)
        return len(encoded) > django_settings.WEBHOOKS_EVENT_DATA_MAX_BYTES
    if operation == "deliveries_retry" and param == "delivery_id":
        public_id = case.path_parameters["delivery_id"]
        deliveries = Delivery.objects.filter(endpoint__environment=environment, public_id=public_id)
        delivery = deliveries.select_related("endpoint").first()
        return delivery is not None and not _is_enabled(delivery.endpoint)
    if operation == "webhook_endpoints_test" and param == "webhook_endpoint_id":
        return not _is_enabled(_endpoint(environment, case))
    if operation == "webhook_endpoints_recover":
        since, until = _parsed_time(body.get("since")), _parsed_time(body.get("until"))
        if param is None:
            return not _is_enabled(_endpoint(environment, case))
        if param == "since" and since is not None:
            retention = dt.timedelta(days=django_settings.WEBHOOKS_RETENTION_DAYS)
            return since < now - retention or ("until" not in body and since >= now - CLOCK_SLACK)
        if param == "until" and since is not None and until is not None:
            return since >= until
    return False


def documented_refusal(case: Any, response: Any, environment: Environment) -> str | None:
    """`operation: param` if the response refuses the request for a reason the operation
    documents and that holds; otherwise None."""
    if response.status_code != 400:
        return None
    error = response.json()["error"]
    if error["code"] != "parameter_invalid":
        return None
    param = error["param"]
    sent = {**(case.query or {}), **(case.body if isinstance(case.body, dict) else {})}
    value = sent.get(param)
    if param in INTEGER_PARAMS and isinstance(value, float) and value.is_integer():
        return f"{param} written with a fraction"
    if param not in _documented_refusals(case) or not _refusal_holds(case, param, environment):
        return None
    return f"{case.operation.definition.raw['operationId']}: {param}"


# Documented refusals met, by reason.
REFUSALS: Counter[str] = Counter()


def accepting_documented_refusals(environment: Environment) -> Callable[..., Any]:
    """positive_data_acceptance, but for a documented refusal whose reason holds."""

    def positive_data_acceptance_but_documented_refusals(ctx: Any, response: Any, case: Any) -> Any:
        try:
            return positive_data_acceptance(ctx, response, case)
        except RejectedPositiveData:
            reason = documented_refusal(case, response, environment)
            if reason is None:
                raise
            REFUSALS[reason] += 1
            return None

    return positive_data_acceptance_but_documented_refusals


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("operation_id", OPERATION_IDS)
def test_fuzz_operation(tenants, operation_id, mode):
    operation = SCHEMA.find_operation_by_id(operation_id)
    APP.operation = operation_id
    examples = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        generated=st.sampled_from(tenants).flatmap(
            # The key is a fixed header, so negative mode never takes it for generated data
            # (a 401 for a key it "broke" would not exercise anything).
            lambda tenant: operation.as_strategy(
                generation_mode=mode, headers={"Authorization": f"Bearer {tenant.key}"}
            ).map(lambda case: (tenant, case))
        ),
        data=st.data(),
    )
    def run(generated: tuple[Tenant, Any], data: Any) -> None:
        nonlocal examples
        examples += 1
        caller, case = generated
        others = [t for t in tenants if t is not caller]
        checks = [
            *CHECKS,
            negative_data_rejection
            if mode.is_negative
            else accepting_documented_refusals(caller.environment),
        ]
        foreign, foreign_cursor = _choose_ids(case, operation_id, caller, others, data)
        # Some generated bodies are mostly refused for what the schema cannot say (a recovery
        # window outside the retention): half the time, send one the service accepts, so the
        # success paths are fuzzed too.
        if (
            mode.is_positive
            and operation_id in VALID_BODIES
            and data.draw(st.booleans(), label="valid body")
        ):
            case.body = data.draw(VALID_BODIES[operation_id], label="body")

        with transaction.atomic():  # a savepoint: every example starts from the seed data
            others_before = _snapshot([t.environment for t in others])
            response = case.call()
            STATUSES[operation_id, str(mode), response.status_code] += 1
            assert response.status_code < 500, response.text
            case.validate_response(response, checks=checks)
            _check_isolation(response, caller, others, foreign, foreign_cursor)
            assert _snapshot([t.environment for t in others]) == others_before, (
                "a request changed another tenant's objects"
            )
            transaction.set_rollback(True)

    run()
    assert examples >= MAX_EXAMPLES


# --- Every check, against a live server ---------------------------------------------------
#
# The same document, sent over HTTP to Django's live server with one sandbox key, with every
# check of this schemathesis version (`st run --checks all`), in the examples, coverage and
# fuzzing phases. Each operation's cases alternate between generated ids and the tenant's own
# (in paths, and in a positive case's cursor), so refusals that depend on state are met too.

LIVE_SCHEMA = schemathesis.openapi.from_dict(SCHEMA.raw_schema)
# The key is the test's own header: a generated one would only ever be a 401.
LIVE_SCHEMA.config.generation.update(with_security_parameters=False)
LIVE_MAX_EXAMPLES = int(os.environ.get("FUZZ_LIVE_MAX_EXAMPLES", "25"))
# And positive_data_acceptance, with the documented refusals (added per test: they need the
# tenant). use_after_free and ensure_resource_availability judge sequences of calls (a stateful
# run), object_level_authorization a second identity: over single calls they find nothing.
ALL_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
    use_after_free,
    ensure_resource_availability,
    object_level_authorization,
]
LIVE_CHECKS: Counter[str] = Counter()  # check -> times run
LIVE_CASES: Counter[str] = Counter()  # operation id -> cases sent
LIVE_STATUSES: Counter[tuple[str, str, int]] = Counter()  # (operation id, phase, status)


@dataclass
class LiveRequests:
    """Counts the requests the live server answers, by the operation under test (checks such
    as ignored_auth send some of their own)."""

    operation: str = "seed"
    counts: Counter[str] = field(default_factory=Counter)

    def __call__(self, **kwargs: Any) -> None:  # a request_started receiver
        self.counts[self.operation] += 1


LIVE_REQUESTS = LiveRequests()


def _counted(check: Callable[..., Any]) -> Callable[..., Any]:
    def counted(ctx: Any, response: Any, case: Any) -> Any:
        LIVE_CHECKS[check.__name__] += 1
        return check(ctx, response, case)

    counted.__name__ = check.__name__
    return counted


@pytest.fixture
def live_tenant(transactional_db, live_server, no_dns) -> Iterator[Tenant]:
    signals.request_started.connect(LIVE_REQUESTS)
    yield _seed("live-sandbox", factories.organization().environments.get(name="sandbox"))
    signals.request_started.disconnect(LIVE_REQUESTS)


def _steer(case: Any, operation_id: str, tenant: Tenant, n: int) -> None:
    """Two cases in three get the tenant's ids: in the path, and in a positive case's cursor
    (a negative one may be about the cursor itself). The n-th id, so each is met."""
    if n % 3 == 0:
        return
    for name in re.findall(r"\{(\w+)\}", case.operation.path):
        ids = tenant.ids(name)
        case.path_parameters[name] = ids[n % len(ids)]
    if operation_id in CURSOR_KIND and not case.meta.is_negative_at(QUERY):
        for cursor in ("starting_after", "ending_before"):
            if cursor in (case.query or {}):
                ids = tenant.ids(CURSOR_KIND[operation_id])
                case.query[cursor] = ids[n % len(ids)]


def _live_test(operation_id: str) -> Callable[..., None]:
    """Every check against the live server, for one operation."""

    @LIVE_SCHEMA.include(operation_id=operation_id).parametrize()
    @settings(
        max_examples=LIVE_MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def test(case: Any, live_server: Any, live_tenant: Tenant) -> None:
        LIVE_REQUESTS.operation = operation_id
        _steer(case, operation_id, live_tenant, LIVE_CASES[operation_id])
        LIVE_CASES[operation_id] += 1
        if "Idempotency-Key" in (case.headers or {}) and not case.meta.is_negative_at(HEADER):
            # Nothing is rolled back here: a key reused with another body would be a 409, and
            # the body would go untested.
            case.headers["Idempotency-Key"] = uuid.uuid4().hex
        checks = [*ALL_CHECKS, accepting_documented_refusals(live_tenant.environment)]
        auth = {"Authorization": f"Bearer {live_tenant.key}"}
        response = case.call(base_url=live_server.url, headers=auth)
        LIVE_STATUSES[operation_id, case.meta.phase.name.value, response.status_code] += 1
        case.validate_response(
            response,
            checks=[_counted(check) for check in checks],
            headers=auth,
            transport_kwargs={"base_url": live_server.url, "headers": auth},
        )

    return test


# A test function per operation, not one parametrized over the schema: schemathesis gives the
# tests of one function a single node id under pytest 9, and pytest-xdist, which tells tests
# apart by node id, ran one operation of the sixteen.
for _operation_id in OPERATION_IDS:
    globals()[f"test_every_check_against_a_live_server_{_operation_id}"] = _live_test(_operation_id)


def test_a_refusal_passes_only_if_documented_and_its_reason_holds(tenants):
    """The excuse the fuzzing gives a refused schema-valid request is itself checked: real
    answers of the API, one excused per documented reason, and look-alikes that are not."""
    sandbox, production = tenants[0], tenants[1]
    disabled = WebhookEndpoint.objects.get(public_id=sandbox.endpoint_ids[1])
    stopped = Delivery.objects.filter(endpoint=disabled).values_list("public_id", flat=True)[0]
    enabled_id = sandbox.endpoint_ids[0]
    long_ago = "2020-01-01T00:00:00Z"

    def reason(tenant: Tenant, operation_id: str, **parts: Any) -> str | None:
        case = SCHEMA.find_operation_by_id(operation_id).Case(**parts)
        response = case.call(headers={"Authorization": f"Bearer {tenant.key}"})
        return documented_refusal(case, response, tenant.environment)

    create, recover = "webhook_endpoints_create", "webhook_endpoints_recover"
    excused = [
        reason(sandbox, "deliveries_retry", path_parameters={"delivery_id": stopped}),
        reason(sandbox, create, body={"url": "https://api.localhost/hook"}),
        reason(production, create, body={"url": "http://example.com/hook"}),
        reason(sandbox, create, body={"url": "https://example.com", "rate_limit": 5.0}),
        reason(sandbox, "events_list", query={"starting_after": tenants[2].event_ids[0]}),
        reason(sandbox, "events_list", query={"ending_before": "\x00"}),
        reason(
            sandbox,
            recover,
            path_parameters={"webhook_endpoint_id": enabled_id},
            body={"since": long_ago},
        ),
        reason(
            sandbox,
            recover,
            path_parameters={"webhook_endpoint_id": enabled_id},
            body={"since": _seconds_ago(3600, 1), "until": _seconds_ago(7200, 0)},
        ),
    ]
    assert excused == [
        "deliveries_retry: delivery_id",
        "webhook_endpoints_create: url",
        "webhook_endpoints_create: url",
        "rate_limit written with a fraction",
        "events_list: starting_after",
        "events_list: ending_before",
        "webhook_endpoints_recover: since",
        "webhook_endpoints_recover: until",
    ]
    not_excused = [
        # A 400 on a documented parameter, for a reason of the request's form.
        reason(sandbox, create, body={"url": "https://exa mple.com/"}),
        reason(sandbox, create, body={"url": "https://example.com", "rate_limit": 0}),
        reason(
            sandbox,
            recover,
            path_parameters={"webhook_endpoint_id": enabled_id},
            body={"since": "2026-01-01T00:00:00"},
        ),
        # A 400 on a parameter with no documented refusal.
        reason(sandbox, create, body={"url": "https://example.com", "description": "d" * 501}),
        # Not a 400 at all.
        reason(sandbox, "events_list", query={"starting_after": sandbox.event_ids[0]}),
    ]
    assert not_excused == [None] * len(not_excused)


def test_empty_md_version_is_an_unknown_version(tenants):
    response = WsgiClient(APP).get(
        "/v1/webhook_endpoints",
        headers={"Authorization": f"Bearer {tenants[0].key}", "MD-Version": ""},
    )
    assert response.status_code == 400, response.get_data()
    body = response.json
    assert body is not None, response.get_data()
    assert body["error"]["code"] == "invalid_version"
    assert body["error"]["param"] == "MD-Version"


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
@pytest.mark.parametrize(
    "path",
    [
        "/v1/webhook_endpoints",
        "/v1/events",
        "/v1/webhook_endpoints/{endpoint}/deliveries",
    ],
)
@pytest.mark.parametrize("value", ["\x00", "we_\x00bc", "evt_\x00"], ids=["nul", "we", "evt"])
def test_a_nul_byte_in_a_cursor_is_a_400(api, path, cursor, value):
    endpoint = api.create_endpoint()["webhook_endpoint_id"]
    response = api.get(f"{path.format(endpoint=endpoint)}?{urlencode({cursor: value})}")
    assert_error(response, 400, "parameter_invalid", param=cursor)
