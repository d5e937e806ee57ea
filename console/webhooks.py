"""Webhook endpoints in the operators' console: find failing ones, enable, disable, rotate a
signing secret (shown once, on the page that follows), send a test event, recover, edit delivery
control (description, metadata, headers, rate limit, order) through the same service as the API.
The actions run from the list or as buttons on an endpoint's page, which also shows its newest
deliveries.

Signing secrets are never shown here, nor their ciphertext: `EndpointSecret` has no admin, and
an endpoint's page shows only how many secrets sign and when they were made and expire.
"""

import json
from collections.abc import Mapping
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from console.base import (
    EMPTY,
    BigTableAdmin,
    EnvironmentFilter,
    IsSetFilter,
    ObjectActions,
    ObjectTool,
    PublicIdSearchMixin,
    action_targets,
    clipped,
    organization_filter,
    utc,
    utc_time,
)
from console.deliveries import EndpointDeliveryInline
from core.errors import InvalidInput
from deliveries.models import Delivery
from deliveries.recovery import recovery_create
from deliveries.services import endpoint_test_event_send
from webhooks import headers
from webhooks.catalog import ALL_EVENTS
from webhooks.models import ENDPOINT_ID_PREFIX, WebhookEndpoint
from webhooks.services import (
    DEFAULT_ROTATION_OVERLAP,
    MAX_ROTATION_OVERLAP,
    endpoint_secret_rotate,
    endpoint_update,
)


class FailingFilter(admin.SimpleListFilter):
    title = "failing"
    parameter_name = "failing"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Failing now"), ("no", "Not failing")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":  # a deleted endpoint is tried no more: not failing now
            return queryset.filter(consecutive_failures__gt=0, deleted_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(consecutive_failures=0)
        return queryset


class DeletedFilter(IsSetFilter):
    title = "deleted"
    parameter_name = "deleted"
    field = "deleted_at"
    labels = [("no", "Live"), ("yes", "Deleted")]


class RateLimitedFilter(IsSetFilter):
    title = "rate limit"
    parameter_name = "rate_limited"
    field = "rate_limit"
    labels = [("yes", "Rate-limited"), ("no", "No limit")]


class ReadableJSONDecoder(json.JSONDecoder):
    """JSON as a form field reads it: nesting too deep for Python's recursion limit, or an
    integer past int()'s digit limit, is invalid JSON like any other (forms.JSONField only
    turns a JSONDecodeError into the field's error; these were a 500)."""

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().decode(s, *args, **kwargs)
        except json.JSONDecodeError:
            raise
        except (RecursionError, ValueError):
            raise json.JSONDecodeError("nested too deeply or a number too long", s, 0) from None


class DeliveryControlForm(forms.Form):
    """Delivery control as a whole: the page shows every field and sends it back whole; the
    service's rules (webhooks.services, webhooks.headers) decide what is valid."""

    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    metadata = forms.JSONField(
        required=False,
        decoder=ReadableJSONDecoder,
        help_text='A JSON object of string keys to string values, e.g. {"team": "billing"}.',
    )
    headers = forms.JSONField(
        required=False,
        decoder=ReadableJSONDecoder,
        help_text=(
            "A JSON object of header name to value, sent on every delivery. A sensitive value "
            f"shows as {headers.MASK}; leave it so to keep it, or type a new value."
        ),
    )
    rate_limit = forms.IntegerField(
        required=False, help_text="Deliveries per second to this endpoint; empty for no limit."
    )
    delivery_order = forms.ChoiceField(choices=WebhookEndpoint.DeliveryOrder.choices)

    @classmethod
    def initial_for(cls, endpoint: WebhookEndpoint) -> dict[str, Any]:
        return {
            "description": endpoint.description or "",
            "metadata": endpoint.metadata,
            "headers": headers.masked(endpoint.headers),
            "rate_limit": endpoint.rate_limit,
            "delivery_order": endpoint.delivery_order,
        }

    def update(self, endpoint: WebhookEndpoint) -> dict[str, Any]:
        """The service's update that leaves the endpoint as the form shows it (the service
        merges metadata and headers: what the form no longer shows is removed)."""
        data = self.cleaned_data
        metadata = {} if data["metadata"] is None else data["metadata"]
        if isinstance(metadata, Mapping):
            removed = {key: "" for key in endpoint.metadata if key not in metadata}
            metadata = {**removed, **metadata}
        wanted = {} if data["headers"] is None else data["headers"]
        if isinstance(wanted, Mapping):
            wanted = headers.replacing(endpoint.headers, wanted)
        return {
            "description": data["description"] or None,
            "metadata": metadata,
            "headers": wanted,
            "rate_limit": data["rate_limit"],
            "delivery_order": data["delivery_order"],
        }


class RecoverForm(forms.Form):
    since = forms.DateTimeField(
        label="Since (UTC)",
        help_text="Events created at or after this time, e.g. 2026-06-12 00:00.",
    )
    until = forms.DateTimeField(
        label="Until (UTC)",
        required=False,
        help_text="Events created before this time; empty: now.",
    )


class RotateSecretForm(forms.Form):
    overlap_seconds = forms.IntegerField(
        min_value=0,
        max_value=MAX_ROTATION_OVERLAP,
        initial=DEFAULT_ROTATION_OVERLAP,
        label="Overlap (seconds)",
        help_text=(
            "How long the current secret keeps signing beside the new one, so the receiver can "
            "switch without rejecting a delivery. 86400 is a day; 0 revokes it at once."
        ),
    )


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ObjectActions, PublicIdSearchMixin, BigTableAdmin):
    # What on-call looks at, narrow enough for a laptop beside the filters: the event filter,
    # creation time and the rest are on the endpoint's page.
    list_display = (
        "public_id",
        "environment_shown",
        "url_shown",
        "state",
        "order_and_rate",
        "last_delivery",
        "failure_streak",
    )
    list_select_related = ("environment__organization",)
    list_filter = (
        organization_filter("environment__organization__slug"),
        ("environment__name", EnvironmentFilter),
        "status",
        FailingFilter,
        DeletedFilter,
        "delivery_order",
        RateLimitedFilter,
    )
    # Worst first is the question operators ask: a single-table sort.
    sortable_by = ("failure_streak",)
    search_fields = ("public_id", "url", "environment__organization__slug")
    search_help_text = "Endpoint id (we_…, exact), part of the URL, or organization slug (exact)."
    public_id_search = {ENDPOINT_ID_PREFIX: "public_id"}
    fields = (
        "public_id",
        "environment",
        "url",
        "state",
        "disabled_reason",
        "event_filter",
        "description",
        "metadata_shown",
        "headers_shown",
        "rate_limit_shown",
        "delivery_order",
        "failure_streak",
        "last_delivery",
        "signing_secrets",
        "deliveries",
        "created_at",
        "updated_at",
        "deleted_at",
    )
    readonly_fields = fields
    inlines = (EndpointDeliveryInline,)
    actions = ("enable", "disable", "rotate_secret", "send_test_event", "recover")
    object_actions = {
        "send_test_event": "Send test event",
        "recover": "Recover…",
        "rotate_secret": "Rotate secret…",
        "enable": "Enable",
        "disable": "Disable",
    }

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEndpoint]:
        # The newest delivery's outcome, per row, in the page's own query: two index probes
        # per endpoint on delivery_endpoint_idx, instead of a query per row.
        newest = Delivery.objects.filter(endpoint=OuterRef("pk")).order_by("-created_at", "-id")
        return (
            super()
            .get_queryset(request)
            .select_related(*self.list_select_related)  # for the object page too
            .annotate(
                last_delivery_status=Subquery(newest.values("status")[:1]),
                last_delivery_status_code=Subquery(newest.values("last_status_code")[:1]),
            )
        )

    def search_other(
        self, request: HttpRequest, queryset: QuerySet[Any], term: str
    ) -> QuerySet[Any]:
        return queryset.filter(Q(url__icontains=term) | Q(environment__organization__slug=term))

    # --- columns ------------------------------------------------------------------------

    @admin.display(description="environment")
    def environment_shown(self, endpoint: WebhookEndpoint) -> str:
        return str(endpoint.environment)  # organization/name

    @admin.display(description="URL")
    def url_shown(self, endpoint: WebhookEndpoint) -> str:
        return clipped(endpoint.url)

    @admin.display(description="status")
    def state(self, endpoint: WebhookEndpoint) -> str:
        return "deleted" if endpoint.deleted_at else endpoint.status

    @admin.display(description="event filter")
    def event_filter(self, endpoint: WebhookEndpoint) -> str:
        if ALL_EVENTS in endpoint.enabled_events:
            return "every event (*)"
        return ", ".join(endpoint.enabled_events)

    @admin.display(description="order / rate")
    def order_and_rate(self, endpoint: WebhookEndpoint) -> str:
        """What differs from the defaults (unordered, no limit): "ordered · 25/s", "25/s"."""
        shown = [
            *(["ordered"] if endpoint.is_ordered else []),
            *([f"{endpoint.rate_limit}/s"] if endpoint.rate_limit is not None else []),
        ]
        return format_html('<span class="kinetic-line">{}</span>', " · ".join(shown) or EMPTY)

    @admin.display(description="last delivery")
    def last_delivery(self, endpoint: WebhookEndpoint) -> str:
        status = getattr(endpoint, "last_delivery_status", None)
        if status is None:
            return "—"
        code = getattr(endpoint, "last_delivery_status_code", None)
        shown = f"{status} ({code})" if code is not None else status
        return format_html('<span class="kinetic-line">{}</span>', shown)

    @admin.display(description="failure streak", ordering="consecutive_failures")
    def failure_streak(self, endpoint: WebhookEndpoint) -> str:
        """One line: "12 failures since 03:14:07Z" (the date too when it is not today's)."""
        count = endpoint.consecutive_failures
        if not count:
            return EMPTY
        return format_html(
            '<span class="kinetic-line">{} failure{} since {}</span>',
            count,
            "" if count == 1 else "s",
            utc_time(endpoint.failing_since, short=True),
        )

    @admin.display(description="metadata")
    def metadata_shown(self, endpoint: WebhookEndpoint) -> str:
        return _pairs(endpoint.metadata)

    @admin.display(description="headers")
    def headers_shown(self, endpoint: WebhookEndpoint) -> str:
        return _pairs(headers.masked(endpoint.headers))

    @admin.display(description="rate limit")
    def rate_limit_shown(self, endpoint: WebhookEndpoint) -> str:
        return "no limit" if endpoint.rate_limit is None else f"{endpoint.rate_limit} per second"

    @admin.display(description="signing secrets")
    def signing_secrets(self, endpoint: WebhookEndpoint) -> str:
        # Dates only: the ciphertext is not even read.
        rows = list(endpoint.secrets.signing().values_list("created_at", "expires_at"))
        if not rows:
            return "none"
        return format_html(
            "{} signing: {}",
            len(rows),
            format_html_join(
                "; ",
                "created {}, {}",
                (
                    (utc(created), f"expires {utc(expires)}" if expires else "current (no expiry)")
                    for created, expires in rows
                ),
            ),
        )

    @admin.display(description="deliveries")
    def deliveries(self, endpoint: WebhookEndpoint) -> str:
        url = reverse("admin:deliveries_delivery_changelist")
        return format_html(
            '<a href="{}?endpoint={}">Deliveries to this endpoint</a>', url, endpoint.pk
        )

    # --- the page's buttons, and delivery control (both need webhooks.change_webhookendpoint) -

    def object_actions_for(self, endpoint: WebhookEndpoint) -> list[str]:
        # What the actions would refuse or skip gets no button: deleted endpoints, sending to
        # or recovering a disabled one.
        if endpoint.deleted_at is not None:
            return []
        if endpoint.is_enabled:
            return ["send_test_event", "recover", "rotate_secret", "disable"]
        return ["rotate_secret", "enable"]

    def object_tools(self, request: HttpRequest, endpoint: WebhookEndpoint) -> list[ObjectTool]:
        tools = super().object_tools(request, endpoint)
        if endpoint.deleted_at is None and self.has_operate_permission(request):
            url = reverse("admin:webhooks_webhookendpoint_delivery_control", args=[endpoint.pk])
            tools.append(ObjectTool("Delivery control", url, post=False))
        return tools

    def get_urls(self) -> list[URLPattern]:
        edit = path(
            "<path:object_id>/delivery_control/",
            self.admin_site.admin_view(self.delivery_control_view),
            name="webhooks_webhookendpoint_delivery_control",
        )
        return [edit, *super().get_urls()]

    def delivery_control_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The endpoint's delivery control as a form; saving calls `endpoint_update`, so its
        rules (and its refusals, shown on the form) are the API's."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        endpoint = self.get_object(request, object_id)
        if endpoint is None or endpoint.deleted_at is not None:
            raise Http404("No such live endpoint.")
        form = DeliveryControlForm(
            request.POST if request.method == "POST" else None,
            initial=DeliveryControlForm.initial_for(endpoint),
        )
        if form.is_valid():
            try:
                endpoint_update(endpoint=endpoint, **form.update(endpoint))
            except InvalidInput as exc:
                form.add_error(exc.param if exc.param in form.fields else None, exc.message)
            else:
                # Which fields, never their values: a header value may be a credential.
                changed = ", ".join(name for name in form.fields if name in form.changed_data)
                self.log_change(request, endpoint, f"Changed delivery control: {changed or '—'}.")
                self.message_user(request, "Delivery control saved.", messages.SUCCESS)
                return HttpResponseRedirect(
                    reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk])
                )
        context = {
            **self._page_context(request, f"Delivery control of {endpoint.public_id}"),
            "endpoint": endpoint,
            "form": form,
        }
        return TemplateResponse(
            request, "admin/webhooks/webhookendpoint/delivery_control.html", context
        )

    # --- actions (need webhooks.change_webhookendpoint: see has_operate_permission) ------

    def _live_targets(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]
    ) -> list[WebhookEndpoint] | None:
        targets = action_targets(self, request, queryset.select_related("environment"))
        if targets is None:
            return None
        deleted = [e.public_id for e in targets if e.deleted_at is not None]
        if deleted:
            self.message_user(
                request, f"Skipped deleted endpoint(s): {', '.join(deleted)}.", messages.WARNING
            )
        return [e for e in targets if e.deleted_at is None]

    def _set_status(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint], status: str
    ) -> None:
        targets = self._live_targets(request, queryset)
        if targets is None:
            return
        changed = [e for e in targets if e.status != status]
        for endpoint in changed:
            # The service, not a bulk UPDATE: disabling also cancels what is queued.
            endpoint_update(endpoint=endpoint, status=status)
            self.log_change(request, endpoint, f"Status set to {status}.")
        self.message_user(
            request,
            f"{status.capitalize()} {len(changed)} endpoint(s)"
            + (
                f"; {len(targets) - len(changed)} already were."
                if len(changed) < len(targets)
                else "."
            ),
            messages.SUCCESS,
        )

    @admin.action(description="Enable selected endpoints", permissions=["operate"])
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        self._set_status(request, queryset, WebhookEndpoint.Status.ENABLED)

    @admin.action(
        description="Disable selected endpoints (cancels queued deliveries)",
        permissions=["operate"],
    )
    def disable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        self._set_status(request, queryset, WebhookEndpoint.Status.DISABLED)

    @admin.action(description="Rotate signing secret…", permissions=["operate"])
    def rotate_secret(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]
    ) -> HttpResponse | None:
        """First a page asking for the overlap; its submit comes back here with `confirm`,
        rotates, and answers with the new secrets: the only page that ever shows them."""
        targets = self._live_targets(request, queryset)
        if not targets:
            return None
        form = RotateSecretForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            overlap = form.cleaned_data["overlap_seconds"]
            try:
                # All or none: a secret made but never shown would leave its receiver unable
                # to verify anything once the overlap ends.
                with transaction.atomic():
                    rotated = [
                        endpoint_secret_rotate(endpoint=endpoint, overlap_seconds=overlap)
                        for endpoint in targets
                    ]
            except InvalidInput as exc:  # deleted since the confirmation page
                self.message_user(request, f"Nothing rotated: {exc.message}", messages.ERROR)
                return None
            for result in rotated:
                until = result.previous_expires_at or timezone.now()
                self.log_change(
                    request,
                    result.endpoint,
                    f"Rotated the signing secret; the previous one signs until {utc(until)}.",
                )
            context = {
                **self._page_context(request, "New signing secrets"),
                "rotated": rotated,
                "overlap_seconds": overlap,
            }
            return TemplateResponse(
                request, "admin/webhooks/webhookendpoint/rotate_secret_done.html", context
            )
        return self._ask(request, "rotate_secret", "Rotate signing secrets", targets, form)

    @admin.action(description="Send a test event (ping)", permissions=["operate"])
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        targets = self._live_targets(request, queryset)
        if targets is None:
            return
        sent: list[str] = []
        for endpoint in targets:
            try:
                delivery = endpoint_test_event_send(endpoint=endpoint)
            except InvalidInput as exc:
                self.message_user(request, f"{endpoint.public_id}: {exc.message}", messages.ERROR)
                continue
            self.log_change(request, endpoint, f"Sent a test event ({delivery.public_id}).")
            sent.append(f"{endpoint.public_id} ({delivery.public_id})")
        if sent:
            self.message_user(
                request, f"Test event queued for {', '.join(sent)}.", messages.SUCCESS
            )

    @admin.action(description="Recover failed and cancelled deliveries…", permissions=["operate"])
    def recover(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]
    ) -> HttpResponse | None:
        """First a page asking for the window; its submit comes back here with `confirm` and
        starts a recovery per endpoint (deliveries.recovery), all or none, each followed on the
        Recoveries page."""
        targets = self._live_targets(request, queryset)
        if not targets:
            return None
        disabled = [e.public_id for e in targets if not e.is_enabled]
        if disabled:
            self.message_user(
                request, f"Skipped disabled endpoint(s): {', '.join(disabled)}.", messages.WARNING
            )
        targets = [e for e in targets if e.is_enabled]
        if not targets:
            return None
        form = RecoverForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            try:
                with transaction.atomic():
                    started = [
                        recovery_create(endpoint=endpoint, **form.cleaned_data)
                        for endpoint in targets
                    ]
            except InvalidInput as exc:
                form.add_error(exc.param if exc.param in form.fields else None, exc.message)
            else:
                for recovery in started:
                    self.log_change(request, recovery.endpoint, f"Recovery {recovery.public_id}.")
                self.message_user(
                    request,
                    "Recovering: "
                    + ", ".join(f"{r.endpoint.public_id} ({r.public_id})" for r in started)
                    + ". Their progress is on the Recoveries page.",
                    messages.SUCCESS,
                )
                return None
        title = "Recover failed and cancelled deliveries"
        return self._ask(request, "recover", title, targets, form)

    def _ask(
        self,
        request: HttpRequest,
        action: str,
        title: str,
        targets: list[WebhookEndpoint],
        form: forms.Form,
    ) -> TemplateResponse:
        """The page an action asks for its values on (`<action>_confirm.html`); submitted with
        `confirm`, it runs the action on the same endpoints."""
        return TemplateResponse(
            request,
            f"admin/webhooks/webhookendpoint/{action}_confirm.html",
            {
                **self._page_context(request, title),
                "endpoints": targets,
                "form": form,
                "action": action,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )

    def _page_context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "media": self.media,
        }


def _pairs(values: Mapping[str, str]) -> str:
    if not values:
        return "—"
    return format_html_join(mark_safe("<br>"), "{}: {}", sorted(values.items()))
