"""Events, deliveries and attempts in the operators' console: read-only, the biggest tables of
the service, with one action, "retry now", through `delivery_retry_now`; and recoveries, read
only (they are asked for from an endpoint's actions, the API or `recover_deliveries`)."""

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.db.models.functions import Substr
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from console.base import (
    BigTableAdmin,
    CappedInlineFormSet,
    EnvironmentFilter,
    PublicIdSearchMixin,
    ReadOnlyTabularInline,
    action_targets,
    organization_filter,
)
from core.errors import InvalidInput
from deliveries.models import (
    DELIVERY_ID_PREFIX,
    EVENT_ID_PREFIX,
    RECOVERY_ID_PREFIX,
    Delivery,
    DeliveryAttempt,
    Event,
    Recovery,
)
from deliveries.services import delivery_retry_now
from webhooks.catalog import EVENT_TYPES
from webhooks.models import ENDPOINT_ID_PREFIX

RESPONSE_EXCERPT_CHARS = 200


def _link(viewname: str, pk: int, text: str) -> str:
    return format_html('<a href="{}">{}</a>', reverse(viewname, args=[pk]), text)


class EndpointLinkMixin:
    """A column and field linking a row (a delivery, a recovery) to its endpoint's page."""

    @admin.display(description="endpoint")
    def endpoint_link(self, row: Delivery | Recovery) -> str:
        return _link(
            "admin:webhooks_webhookendpoint_change", row.endpoint_id, row.endpoint.public_id
        )


# A delivery's or a recovery's tenant, through its endpoint.
BY_ENDPOINT_TENANT = (
    ("endpoint__environment__name", EnvironmentFilter),
    organization_filter("endpoint__environment__organization__slug"),
)


class EventTypeFilter(admin.SimpleListFilter):
    # From the catalog: Django's own filter on `type` would SELECT DISTINCT over every event.
    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(event_type, event_type) for event_type in EVENT_TYPES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(type=self.value()) if self.value() else queryset


class DeliveryInline(ReadOnlyTabularInline):
    model = Delivery
    formset = CappedInlineFormSet
    fields = (
        "delivery",
        "endpoint",
        "status",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
    )
    readonly_fields = fields
    ordering = ("-pk",)
    show_change_link = False
    verbose_name_plural = f"deliveries (the newest {CappedInlineFormSet.max_rows})"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).select_related("endpoint")

    @admin.display(description="delivery")
    def delivery(self, delivery: Delivery) -> str:
        return _link("admin:deliveries_delivery_change", delivery.pk, delivery.public_id)


@admin.register(Event)
class EventAdmin(PublicIdSearchMixin, BigTableAdmin):
    list_display = (
        "public_id",
        "organization",
        "environment_name",
        "type",
        "created_at",
        "fanned_out_at",
    )
    list_select_related = ("environment__organization",)
    list_filter = (
        organization_filter("environment__organization__slug"),
        ("environment__name", EnvironmentFilter),
        EventTypeFilter,
    )
    search_fields = ("public_id",)
    search_help_text = "Event id (evt_…, exact)."
    public_id_search = {EVENT_ID_PREFIX: "public_id"}
    fields = (
        "public_id",
        "environment",
        "type",
        "api_version",
        "created_at",
        "fanned_out_at",
        "deliveries",
        "payload",
    )
    readonly_fields = fields
    inlines = (DeliveryInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        # The body is up to 64 KiB per row: a page of events never needs it (the event's own
        # page reads it once). The join serves the object page too.
        return super().get_queryset(request).select_related(*self.list_select_related).defer("body")

    @admin.display(description="organization")
    def organization(self, event: Event) -> str:
        return event.environment.organization.slug

    @admin.display(description="environment")
    def environment_name(self, event: Event) -> str:
        return event.environment.name

    @admin.display(description="deliveries")
    def deliveries(self, event: Event) -> str:
        url = reverse("admin:deliveries_delivery_changelist")
        count = event.deliveries.count()  # one index range (delivery_once_per_endpoint)
        return format_html('<a href="{}?event={}">{} deliveries</a>', url, event.pk, count)

    @admin.display(description="payload (as delivered)")
    def payload(self, event: Event) -> str:
        try:
            pretty = json.dumps(json.loads(event.body), indent=2, ensure_ascii=False)
        except ValueError:
            pretty = event.body
        return format_html("<pre>{}</pre>", pretty)


class AttemptInline(ReadOnlyTabularInline):
    model = DeliveryAttempt
    formset = CappedInlineFormSet
    fields = (
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "error",
        "response_excerpt",
        "succeeded",
    )
    readonly_fields = fields
    ordering = ("number",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeliveryAttempt]:
        # Up to 16 KiB of body per attempt: read only the start the column shows.
        return (
            super()
            .get_queryset(request)
            .defer("response_body")
            .annotate(response_start=Substr("response_body", 1, RESPONSE_EXCERPT_CHARS + 1))
        )

    @admin.display(description="response (start)")
    def response_excerpt(self, attempt: DeliveryAttempt) -> str:
        start: str = attempt.response_start  # type: ignore[attr-defined]
        return Truncator(start).chars(RESPONSE_EXCERPT_CHARS)


@admin.register(Delivery)
class DeliveryAdmin(EndpointLinkMixin, PublicIdSearchMixin, BigTableAdmin):
    list_display = (
        "public_id",
        "event_link",
        "event_type",
        "endpoint_link",
        "status",
        "attempt_count",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
    )
    list_select_related = ("event", "endpoint")
    list_filter = ("status", *BY_ENDPOINT_TENANT)
    search_fields = ("public_id",)
    search_help_text = "Delivery (dlv_…), event (evt_…) or endpoint (we_…) id, exact."
    public_id_search = {
        DELIVERY_ID_PREFIX: "public_id",
        EVENT_ID_PREFIX: "event__public_id",
        ENDPOINT_ID_PREFIX: "endpoint__public_id",
    }
    fields = (
        "public_id",
        "event_link",
        "event_type",
        "endpoint_link",
        "status",
        "attempt_count",
        "next_attempt_at",
        "last_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "completed_at",
        "enqueued_at",
        "claimed_until",
    )
    readonly_fields = fields
    inlines = (AttemptInline,)
    actions = ("retry_now",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        # The joins serve the object page too; the event's body is never shown here.
        return (
            super()
            .get_queryset(request)
            .select_related(*self.list_select_related)
            .defer("event__body")
        )

    @admin.display(description="event")
    def event_link(self, delivery: Delivery) -> str:
        return _link("admin:deliveries_event_change", delivery.event_id, delivery.event.public_id)

    @admin.display(description="type")
    def event_type(self, delivery: Delivery) -> str:
        return delivery.event.type

    # Needs deliveries.change_delivery (see has_operate_permission).
    @admin.action(description="Retry now (one more attempt)", permissions=["operate"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        targets = action_targets(self, request, queryset)
        if targets is None:
            return
        queued, in_flight = 0, []
        for delivery in targets:
            try:
                delivery_retry_now(delivery=delivery)
            except InvalidInput:
                in_flight.append(delivery.public_id)
                continue
            self.log_change(request, delivery, "Retry requested.")
            queued += 1
        if queued:
            self.message_user(
                request, f"Queued {queued} delivery(ies) for another attempt.", messages.SUCCESS
            )
        if in_flight:
            self.message_user(
                request,
                f"Not retried, an attempt is in progress: {', '.join(in_flight)}. "
                "Retry once it has ended.",
                messages.WARNING,
            )


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(PublicIdSearchMixin, BigTableAdmin):
    list_display = (
        "delivery",
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "error",
        "succeeded",
    )
    list_select_related = ("delivery",)
    list_filter = ("succeeded",)
    search_fields = ("delivery__public_id",)
    search_help_text = "Delivery id (dlv_…, exact)."
    public_id_search = {DELIVERY_ID_PREFIX: "delivery__public_id"}
    fields = (
        "delivery",
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "error",
        "succeeded",
        "response",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeliveryAttempt]:
        return super().get_queryset(request).defer("response_body")

    @admin.display(description="response body (first 16 KiB)")
    def response(self, attempt: DeliveryAttempt) -> str:
        return format_html("<pre>{}</pre>", attempt.response_body)


@admin.register(Recovery)
class RecoveryAdmin(EndpointLinkMixin, PublicIdSearchMixin, BigTableAdmin):
    list_display = (
        "public_id",
        "organization",
        "environment_name",
        "endpoint_link",
        "since",
        "until",
        "status",
        "deliveries_requeued",
        "created_at",
        "completed_at",
    )
    list_select_related = ("endpoint__environment__organization",)
    list_filter = ("status", *BY_ENDPOINT_TENANT)
    search_fields = ("public_id",)
    search_help_text = "Recovery (rcv_…) or endpoint (we_…) id, exact."
    public_id_search = {
        RECOVERY_ID_PREFIX: "public_id",
        ENDPOINT_ID_PREFIX: "endpoint__public_id",
    }
    fields = list_display
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Recovery]:
        return super().get_queryset(request).select_related(*self.list_select_related)

    @admin.display(description="organization")
    def organization(self, recovery: Recovery) -> str:
        return recovery.endpoint.environment.organization.slug

    @admin.display(description="environment")
    def environment_name(self, recovery: Recovery) -> str:
        return recovery.endpoint.environment.name
