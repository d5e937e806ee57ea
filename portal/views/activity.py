"""The portal's activity pages: an endpoint's deliveries, a delivery as it was sent, retry and
recover, the environment's events, the event catalog, and how to verify a delivery.

Every read and action goes through the selectors and services the API uses, in the session's
environment (request.portal): an id from anywhere else is the 404 page.
"""

from datetime import UTC, datetime

from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render

from core.errors import InvalidInput
from core.pagination import PageRequest
from deliveries import recovery as recoveries
from deliveries import samples, selectors, services, signature
from deliveries.as_sent import request_as_sent
from deliveries.models import Delivery, DeliveryAttempt
from portal.access import (
    PortalRequest,
    portal_action,
    portal_form,
    portal_page,
    scoped_endpoint,
)
from portal.paging import page_links, page_or_404, page_request
from webhooks.catalog import EVENT_TYPES
from webhooks.selectors import endpoint_page

# The datetime-local input's value: minutes, or seconds, no zone (the page says UTC).
SINCE_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def _delivery(request: PortalRequest, delivery_id: str) -> Delivery:
    delivery = selectors.delivery_get(environment=request.portal.environment, public_id=delivery_id)
    if delivery is None:
        raise Http404
    return delivery


@portal_page
def endpoint_deliveries(request: PortalRequest, endpoint_id: str) -> HttpResponse:
    """An endpoint's deliveries, newest first, by status; and the form to recover some."""
    endpoint = scoped_endpoint(request, endpoint_id)
    status = request.GET.get("status") or ""
    if status not in Delivery.Status.values:
        status = ""
    asked = page_request(request)
    page = page_or_404(
        lambda p: selectors.endpoint_delivery_page(
            environment=request.portal.environment,
            endpoint=endpoint,
            page=p,
            status=status or None,
        ),
        asked,
    )
    return render(
        request,
        "portal/activity/endpoint_deliveries.html",
        {
            "endpoint": endpoint,
            "deliveries": page.items,
            "links": page_links(request, asked, page),
            "status": status,
            "statuses": Delivery.Status.choices,
        },
    )


@portal_page
def delivery(request: PortalRequest, delivery_id: str) -> HttpResponse:
    """One delivery: the request as sent (of the attempt chosen, the last by default) and
    every attempt."""
    found = _delivery(request, delivery_id)
    attempts = list(found.attempts.order_by("number", "started_at"))
    shown = _chosen_attempt(request, attempts)
    return render(
        request,
        "portal/activity/delivery.html",
        {
            "delivery": found,
            "endpoint": found.endpoint,
            "attempts": attempts,
            "shown": shown,
            "shown_number": attempts.index(shown) + 1 if shown else None,
            "as_sent": request_as_sent(found, shown) if shown else None,
            "body": found.event.body,
            "can_retry": found.endpoint.is_enabled,
        },
    )


def _chosen_attempt(
    request: PortalRequest, attempts: list[DeliveryAttempt]
) -> DeliveryAttempt | None:
    asked = request.GET.get("attempt", "")
    # ASCII digits only, and few of them: `int()` refuses "²" (a digit to isdigit) and 5,000 9s.
    if asked.isascii() and asked.isdigit() and len(asked) <= 6 and 1 <= int(asked) <= len(attempts):
        return attempts[int(asked) - 1]
    return attempts[-1] if attempts else None


@portal_action
def delivery_retry(request: PortalRequest, delivery_id: str) -> HttpResponse:
    """One more attempt now (POST /v1/deliveries/{id}/retry)."""
    found = _delivery(request, delivery_id)
    try:
        with transaction.atomic():
            services.delivery_retry_now(delivery=found)
    except InvalidInput as refused:  # its endpoint disabled, or an attempt in flight
        messages.error(request, refused.message)
    else:
        messages.success(request, "Retry queued: one more attempt is on its way.")
    return redirect("portal:delivery", delivery_id=found.public_id)


@portal_form
def endpoint_recover(request: PortalRequest, endpoint_id: str) -> HttpResponse:
    """Sends again the endpoint's failed and cancelled deliveries since a time (POST
    /v1/webhook_endpoints/{id}/recover), then shows its progress; GET asks when from."""
    endpoint = scoped_endpoint(request, endpoint_id)
    since_text = request.POST.get("since", "").strip()
    error = None
    if request.method == "POST":
        since = _utc_time(since_text)
        if since is None:
            error = "Give the time to recover from, in UTC, as 2026-06-12T18:40."
        else:
            try:
                with transaction.atomic():
                    made = recoveries.recovery_create(endpoint=endpoint, since=since)
            except InvalidInput as refused:
                error = refused.message
            else:
                return redirect("portal:recovery", recovery_id=made.public_id)
    return render(
        request,
        "portal/activity/recover.html",
        {"endpoint": endpoint, "since": since_text, "error": error},
        status=400 if error else 200,
    )


def _utc_time(text: str) -> datetime | None:
    for pattern in SINCE_FORMATS:
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


@portal_page
def recovery(request: PortalRequest, recovery_id: str) -> HttpResponse:
    """A recovery's progress; htmx asks for the fragment again while it runs."""
    found = selectors.recovery_get(environment=request.portal.environment, public_id=recovery_id)
    if found is None:
        raise Http404
    template = (
        "portal/activity/recovery_progress.html"
        if request.headers.get("HX-Request")
        else "portal/activity/recovery.html"
    )
    return render(request, template, {"recovery": found, "endpoint": found.endpoint})


@portal_page
def events(request: PortalRequest) -> HttpResponse:
    """The environment's events, newest first, by type, with their deliveries' states."""
    environment = request.portal.environment
    event_type = request.GET.get("type") or ""
    if event_type not in EVENT_TYPES:
        event_type = ""
    asked = page_request(request)
    page = page_or_404(
        lambda p: selectors.event_page(environment=environment, page=p, type=event_type or None),
        asked,
    )
    counts = selectors.delivery_counts([event.pk for event in page.items])
    return render(
        request,
        "portal/activity/events.html",
        {
            "rows": [(event, sorted(counts[event.pk].items())) for event in page.items],
            "links": page_links(request, asked, page),
            "type": event_type,
            "types": list(EVENT_TYPES),
        },
    )


@portal_page
def event(request: PortalRequest, event_id: str) -> HttpResponse:
    """One event: its payload and its deliveries (the newest 100, as the API shows)."""
    found = selectors.event_get(environment=request.portal.environment, public_id=event_id)
    if found is None:
        raise Http404
    return render(
        request,
        "portal/activity/event.html",
        {
            "event": found,
            "deliveries": selectors.event_deliveries(found),
            "shown_at_most": selectors.EVENT_DELIVERIES_SHOWN,
        },
    )


@portal_page
def catalog(request: PortalRequest) -> HttpResponse:
    """Every event type, with what it means and a sample payload."""
    return render(
        request,
        "portal/activity/catalog.html",
        {"samples": samples.catalog_samples(request.portal.environment)},
    )


@portal_page
def verifying(request: PortalRequest) -> HttpResponse:
    """How to check a delivery's signature, for one endpoint (never with its secret)."""
    environment = request.portal.environment
    endpoint_id = request.GET.get("endpoint", "")
    endpoint = scoped_endpoint(request, endpoint_id) if endpoint_id else None
    choices = endpoint_page(environment=environment, page=PageRequest(limit=100)).items
    return render(
        request,
        "portal/activity/verifying.html",
        {
            "endpoint": endpoint,
            "endpoint_id": endpoint.public_id if endpoint else "we_…",
            "choices": choices,
            "tolerance": signature.DEFAULT_TOLERANCE,
        },
    )
