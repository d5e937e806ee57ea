"""The endpoints' pages: the list with each one's recent figures, an endpoint's page, and the
actions on it. Reads and writes go through the API's selectors and services, within the
session's environment (request.portal)."""

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from core.errors import InvalidInput
from deliveries.figures import (
    RECENT_CAP,
    RECENT_WINDOW,
    endpoint_recent_figures,
    endpoints_recent_figures,
)
from deliveries.selectors import delivery_get
from deliveries.services import endpoint_test_event_send
from portal.access import (
    PortalRequest,
    portal_action,
    portal_form,
    portal_page,
    portal_page_and_action,
    scoped_endpoint,
)
from portal.forms import EndpointForm, RotateForm, show_refusal
from portal.paging import page_links, page_or_404, page_request
from webhooks import headers, services
from webhooks.models import WebhookEndpoint
from webhooks.selectors import endpoint_page, endpoints_of

# What the figures cover, said on the page.
FIGURES_BOUND = (
    f"Over the last {RECENT_WINDOW.total_seconds() / 3600:.0f} hours, counting at most the "
    f"{RECENT_CAP:,} newest deliveries."
)


@portal_page
def endpoint_list(request: PortalRequest) -> HttpResponse:
    environment = request.portal.environment
    asked = page_request(request)
    page = page_or_404(lambda a: endpoint_page(environment=environment, page=a), asked)
    ids = [record.id for record in page.items]
    streaks = {
        row["id"]: row
        for row in endpoints_of(environment)
        .filter(id__in=ids)
        .values("id", "consecutive_failures", "failing_since", "disabled_reason")
    }
    # One read for the whole page's figures, not one an endpoint.
    figures = endpoints_recent_figures(endpoint_ids=ids, now=timezone.now())
    rows = [
        {"endpoint": record, "streak": streaks.get(record.id, {}), "figures": figures[record.id]}
        for record in page.items
    ]
    return render(
        request,
        "portal/endpoints/list.html",
        {
            "rows": rows,
            "links": page_links(request, asked, page),
            "figures_bound": FIGURES_BOUND,
        },
    )


@portal_page
def endpoint_detail(request: PortalRequest, endpoint_id: str) -> HttpResponse:
    endpoint = scoped_endpoint(request, endpoint_id)
    return render(
        request,
        "portal/endpoints/detail.html",
        {
            "endpoint": endpoint,
            "headers": headers.masked(endpoint.headers),
            "figures": endpoint_recent_figures(endpoint_id=endpoint.pk, now=timezone.now()),
            "figures_bound": FIGURES_BOUND,
        },
    )


def _secret_page(
    request: PortalRequest,
    endpoint: WebhookEndpoint,
    signing_secret: str,
    *,
    status: int = 200,
    **rotation: Any,
) -> HttpResponse:
    """The page that shows a new signing secret: on this response only (it is stored
    encrypted and never shown again). `rotation` says what became of the previous one."""
    context = {"endpoint": endpoint, "signing_secret": signing_secret, "created": not rotation}
    return render(request, "portal/endpoints/secret.html", {**context, **rotation}, status=status)


@portal_form
def endpoint_new(request: PortalRequest) -> HttpResponse:
    form = EndpointForm(request.POST or None, initial={"enabled_events": ["*"]})
    if request.method == "POST" and form.is_valid():
        try:
            created = services.endpoint_create(
                environment=request.portal.environment, **form.service_arguments()
            )
        except InvalidInput as refusal:
            show_refusal(form, refusal)
        else:
            return _secret_page(request, created.endpoint, created.signing_secret, status=201)
    return render(request, "portal/endpoints/form.html", {"form": form, "endpoint": None})


@portal_form
def endpoint_edit(request: PortalRequest, endpoint_id: str) -> HttpResponse:
    endpoint = scoped_endpoint(request, endpoint_id)
    form = EndpointForm(request.POST or None, initial=EndpointForm.initial_for(endpoint))
    if request.method == "POST" and form.is_valid():
        try:
            services.endpoint_update(endpoint=endpoint, **form.service_arguments(endpoint))
        except InvalidInput as refusal:
            show_refusal(form, refusal)
        else:
            messages.success(request, "Saved.")
            return redirect("portal:endpoint", endpoint_id=endpoint.public_id)
    return render(request, "portal/endpoints/form.html", {"form": form, "endpoint": endpoint})


@portal_action
def endpoint_toggle(request: PortalRequest, endpoint_id: str) -> HttpResponse:
    """Sets the status the button asked for (so a second click changes nothing)."""
    endpoint = scoped_endpoint(request, endpoint_id)
    status = request.POST.get("status", "")
    try:
        services.endpoint_update(endpoint=endpoint, status=status)
    except InvalidInput:
        messages.error(request, "Choose enabled or disabled.")
    else:
        messages.success(
            request,
            "Enabled: new events are delivered again."
            if status == WebhookEndpoint.Status.ENABLED
            else "Disabled: nothing queued is sent to it any more.",
        )
    return redirect("portal:endpoint", endpoint_id=endpoint.public_id)


@portal_form
def endpoint_delete(request: PortalRequest, endpoint_id: str) -> HttpResponse:
    """GET: the confirmation page; POST: the deletion."""
    endpoint = scoped_endpoint(request, endpoint_id)
    if request.method == "POST":
        services.endpoint_delete(endpoint=endpoint)
        messages.success(request, f"Endpoint {endpoint.public_id} deleted.")
        return redirect("portal:endpoints")
    return render(request, "portal/endpoints/delete.html", {"endpoint": endpoint})


@portal_form
def endpoint_rotate(request: PortalRequest, endpoint_id: str) -> HttpResponse:
    endpoint = scoped_endpoint(request, endpoint_id)
    form = RotateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            rotated = services.endpoint_secret_rotate(
                endpoint=endpoint, overlap_seconds=form.cleaned_data["overlap_seconds"]
            )
        except InvalidInput as refusal:
            show_refusal(form, refusal)
        else:
            return _secret_page(
                request,
                endpoint,
                rotated.signing_secret,
                previous_expires_at=rotated.previous_expires_at,
                overlap=form.cleaned_data["overlap_seconds"] > 0,
            )
    return render(request, "portal/endpoints/rotate.html", {"form": form, "endpoint": endpoint})


@portal_page_and_action
def endpoint_test(request: PortalRequest, endpoint_id: str) -> HttpResponse:
    """POST sends a test event; GET `?delivery=` shows how it went (htmx polls the outcome
    while its first attempt is to come)."""
    endpoint = scoped_endpoint(request, endpoint_id)
    if request.method == "POST":
        try:
            sent = endpoint_test_event_send(endpoint=endpoint)
        except InvalidInput as refusal:
            messages.error(request, refusal.message)
            return redirect("portal:endpoint", endpoint_id=endpoint.public_id)
        return redirect(f"{request.path}?delivery={sent.public_id}")
    delivery = delivery_get(
        environment=request.portal.environment, public_id=request.GET.get("delivery", "")
    )
    if delivery is None or delivery.endpoint_id != endpoint.pk:
        raise Http404
    context: dict[str, Any] = {"endpoint": endpoint, "delivery": delivery}
    if request.headers.get("HX-Request"):
        return render(request, "portal/endpoints/_test_outcome.html", context)
    return render(request, "portal/endpoints/test.html", context)
