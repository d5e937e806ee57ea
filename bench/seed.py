"""Data for the bench: tenants with real API keys, and endpoints inserted in bulk.

Keys are made by `accounts.services` (the product's own code), in the bench database, from the
bench process. Endpoints for size tests are inserted by one `INSERT … SELECT generate_series`
statement: PostgreSQL builds the rows itself, so 1,000,000 take seconds, not minutes.
"""

import time
from dataclasses import dataclass
from typing import Any

from django.db import connection

from accounts import scopes
from accounts.models import Environment
from accounts.services import api_key_create, organization_create
from core.ids import BASE62
from core.sql import column_name
from webhooks.models import WebhookEndpoint

# Public ids are `we_` + 14 base62: 9 random characters, then the row number in base62 over 5
# characters (62**5 > 900 million), which makes every id distinct without a retry loop.
_RANDOM_CHARS = 9
_COUNTER_CHARS = 5


@dataclass(frozen=True)
class Tenant:
    environment: Environment
    raw_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.raw_key}", "MD-Version": "2026-06-11"}


def tenant(slug: str) -> Tenant:
    """A new organization's sandbox and a key that may read and write its endpoints."""
    organization = organization_create(slug=slug)
    environment = organization.environments.get(name=Environment.Name.SANDBOX)
    _, raw = api_key_create(
        environment=environment,
        scopes=[scopes.WEBHOOK_ENDPOINTS_READ, scopes.WEBHOOK_ENDPOINTS_WRITE],
        name="bench",
    )
    return Tenant(environment=environment, raw_key=raw)


def _id_expression() -> str:
    alphabet = f"'{BASE62}'"
    random_part = " || ".join(
        f"substr({alphabet}, floor(random() * 62)::int + 1, 1)" for _ in range(_RANDOM_CHARS)
    )
    counter_part = " || ".join(
        f"substr({alphabet}, ((g / {62**k}) %% 62)::int + 1, 1)"
        for k in reversed(range(_COUNTER_CHARS))
    )
    return f"'we_' || {random_part} || {counter_part}"


def endpoints(environment: Environment, count: int) -> float:
    """Inserts `count` live endpoints, newest first by row number; returns the seconds taken.

    Row g is created g seconds before the statement ran: every created_at is distinct and older
    than anything the API creates afterwards. Columns the bench does not care about get the
    model's default, so a new field does not break seeding.
    """
    if count >= 62**_COUNTER_CHARS:
        raise ValueError("too many endpoints for the id scheme")
    meta = WebhookEndpoint._meta
    timestamp = "statement_timestamp() - make_interval(secs => g)"
    chosen = {
        "public_id": _id_expression(),
        "environment": "%(environment_id)s",
        "url": "'https://hooks.example.com/bench/' || g",
        "enabled_events": "'[\"*\"]'::jsonb",
        "status": "'enabled'",
        "created_at": timestamp,
        "updated_at": timestamp,
        "deleted_at": "NULL",
    }
    columns: list[str] = []
    values: list[str] = []
    params: dict[str, Any] = {"environment_id": environment.pk, "count": count}
    for model_field in meta.concrete_fields:
        if model_field.primary_key:
            continue
        columns.append(connection.ops.quote_name(column_name(model_field)))
        if model_field.name in chosen:
            values.append(chosen[model_field.name])
        elif model_field.null and not model_field.has_default():
            values.append("NULL")
        else:
            name = f"default_{model_field.column}"
            default = model_field.get_default()
            params[name] = model_field.get_db_prep_save(default, connection)
            values.append(f"%({name})s")
    statement = f"""
        INSERT INTO {connection.ops.quote_name(meta.db_table)} ({", ".join(columns)})
        SELECT {", ".join(values)}
        FROM generate_series(1, %(count)s) AS g
    """  # noqa: S608  table and column names come from the model, values are parameters
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        # Statistics as a table that grew in production would have them (autovacuum's ANALYZE).
        cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(meta.db_table)}")
    return time.perf_counter() - started


def public_id_at(environment: Environment, position: int) -> str:
    """The id of the endpoint at `position` (0 = newest) of the environment's list order."""
    # OFFSET is fine here: the bench looks the row up once; the API never pages this way.
    endpoint = (
        WebhookEndpoint.objects.for_environment(environment.pk)
        .order_by("-created_at", "-id")
        .only("public_id")[position]
    )
    return endpoint.public_id
