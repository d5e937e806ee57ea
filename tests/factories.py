"""Objects for tests, made through the same services the product uses."""

import itertools
import json
from typing import Any

from django.test import Client

from accounts.models import ApiKey, Environment, Organization
from accounts.scopes import SCOPES
from accounts.services import api_key_create, organization_create

_counter = itertools.count(1)


def organization(slug: str | None = None) -> Organization:
    return organization_create(slug=slug or f"org-{next(_counter)}")


def environment(org: Organization | None = None, name: str = "sandbox") -> Environment:
    org = org or organization()
    return org.environments.get(name=name)


def api_key(env: Environment, scopes: list[str] | None = None) -> tuple[ApiKey, str]:
    return api_key_create(environment=env, scopes=list(SCOPES) if scopes is None else scopes)


class ApiClient:
    """The public API as a client sees it: JSON in, JSON out, a bearer key on every call."""

    def __init__(self, raw_key: str | None, environment: Environment | None = None) -> None:
        self.raw_key = raw_key
        self.environment = environment
        self.client = Client()

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"MD-Version": "2026-06-11"}
        if self.raw_key is not None:
            headers["Authorization"] = f"Bearer {self.raw_key}"
        headers.update(extra or {})
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Any:
        data: Any = raw if raw is not None else (json.dumps(body) if body is not None else "")
        call = getattr(self.client, method.lower())
        kwargs: dict[str, Any] = {"headers": self.headers(headers)}
        if method.upper() in ("POST", "PATCH", "PUT", "DELETE"):
            kwargs["data"] = data
            kwargs["content_type"] = content_type
        return call(path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, body, **kwargs)

    def patch(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("PATCH", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def create_endpoint(self, url: str = "https://example.com/hook", **fields: Any) -> Any:
        response = self.post("/v1/webhook_endpoints", {"url": url, **fields})
        assert response.status_code == 201, response.content
        return response.json()


def api_client(env: Environment | None = None, scopes: list[str] | None = None) -> ApiClient:
    env = env or environment()
    _, raw = api_key(env, scopes)
    return ApiClient(raw, env)


def deliver_here(environment: Environment, type_: str = "packet.created") -> Any:
    """Publishes an event and runs its fan-out and delivery once, in this process, now.

    The real services (no Celery hop), for tests that control DNS or read this process's
    metrics. Returns the event.
    """
    from deliveries.dispatch import deliveries_send
    from deliveries.models import Delivery
    from deliveries.services import event_fan_out, event_publish

    event = event_publish(environment=environment, type=type_, data={"n": 1})
    event_fan_out(event_id=event.pk)
    deliveries_send(
        delivery_ids=list(Delivery.objects.filter(event=event).values_list("id", flat=True)),
        wait_for_all=True,  # the test's transaction is invisible to other threads' connections
    )
    return event
