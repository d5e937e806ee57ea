"""Events, deliveries and attempts in the operators' console: read-only, the biggest tables of
the service, with one action, "retry now", through `delivery_retry_now` (from the list or the
delivery's page); and recoveries, read only (they are asked for from an endpoint's actions, the
API or `recover_deliveries`). An endpoint's page shows its newest deliveries from here."""

import json
from collections import defaultdict
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.db.models import Prefetch, QuerySet
from django.db.models.functions import Substr
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from console.base import (
    EMPTY,
    BigTableAdmin,
    CappedInlineFormSet,
    EnvironmentFilter,
    ObjectActions,
    PublicIdSearchMixin,
    ReadOnlyTabularInline,
    action_targets,
    clipped,
    organization_filter,
    utc_time,
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


class DeliveryColumns:
    """A delivery's columns shared by its list, its page and the tables of other pages (they
    read `event` joined)."""

    @admin.display(description="event type")
    def event_type(self, delivery: Delivery) -> str:
        return delivery.event.type

    @admin.display(description="attempts")
    def attempts(self, delivery: Delivery) -> int:
        return delivery.attempt_count

    @admin.display(description="last response")
    def last_response(self, delivery: Delivery) -> str:
        """The last attempt's status code and the delivery's error: "503", "connection_error",
        "503 · endpoint disabled"; an error "http_503" only repeats the code."""
        code, error = delivery.last_status_code, delivery.last_error
        parts = [str(code)] if code is not None else []
        if error and error != f"http_{code}":
            parts.append(error)
        return " · ".join(parts) or EMPTY


class EndpointLinkMixin:
    """Columns and fields naming a row's endpoint (a delivery's, a recovery's): its id linked
    to its page, and its URL."""

    @admin.display(description="endpoint")
    def endpoint_link(self, row: Delivery | Recovery) -> str:
        return _link(
            "admin:webhooks_webhookendpoint_change", row.endpoint_id, row.endpoint.public_id
        )

    @admin.display(description="endpoint")
    def endpoint_and_url(self, row: Delivery | Recovery) -> str:
        """The endpoint's id, linked, over its URL (cut to the column, whole in the tooltip)."""
        return format_html("{}<br>{}", self.endpoint_link(row), clipped(row.endpoint.url))

    @admin.display(description="endpoint URL")
    def endpoint_url(self, row: Delivery | Recovery) -> str:
        return row.endpoint.url


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
        value = self.value()
        if not value:
            return queryset
        # Only the catalog's types are offered; anything else typed into the URL is no type.
        return queryset.filter(type=value) if value in EVENT_TYPES else queryset.none()


class DeliveryRows(DeliveryColumns, ReadOnlyTabularInline):
    """Deliveries as rows of another object's page, each linked to its own."""

    model = Delivery
    formset = CappedInlineFormSet
    ordering: ClassVar[tuple[str, ...]] = ("-pk",)

    @admin.display(description="delivery")
    def delivery(self, delivery: Delivery) -> str:
        return _link("admin:deliveries_delivery_change", delivery.pk, delivery.public_id)


class DeliveryInline(DeliveryRows):
    fields = (
        "delivery",
        "endpoint",
        "status",
        "attempts",
        "last_response",
        "next_attempt_at",
    )
    readonly_fields = fields
    verbose_name_plural = f"deliveries (the newest {CappedInlineFormSet.max_rows})"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).select_related("endpoint")


class NewestTwenty(CappedInlineFormSet):
    max_rows = 20


class EndpointDeliveryInline(DeliveryRows):
    """An endpoint's newest deliveries, on its page: one query, newest first along
    delivery_endpoint_idx; the rest are in the deliveries list, filtered by the endpoint."""

    formset = NewestTwenty
    fields = (
        "delivery",
        "status",
        "event_type",
        "attempts",
        "last_response",
        "created_at",
        "last_attempt_at",
    )
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    verbose_name_plural = f"recent deliveries (the newest {NewestTwenty.max_rows})"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).select_related("event").defer("event__body")


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
        except (ValueError, RecursionError):  # a body too deep to indent is shown as stored
            pretty = event.body
        return format_html("<pre>{}</pre>", pretty)


class AttemptInline(ReadOnlyTabularInline):
    model = DeliveryAttempt
    formset = CappedInlineFormSet
    fields = (
        "attempt",
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

    @admin.display(description="attempt")
    def attempt(self, attempt: DeliveryAttempt) -> str:
        # Its page has the whole response body.
        return _link("admin:deliveries_deliveryattempt_change", attempt.pk, f"#{attempt.number}")

    @admin.display(description="response (start)")
    def response_excerpt(self, attempt: DeliveryAttempt) -> str:
        start: str = attempt.response_start  # type: ignore[attr-defined]
        return Truncator(start).chars(RESPONSE_EXCERPT_CHARS)


# The statuses delivery_outcome_idx holds.
OUTCOME_STATUSES = (Delivery.Status.FAILED, Delivery.Status.CANCELLED)


@admin.register(Delivery)
class DeliveryAdmin(
    ObjectActions, DeliveryColumns, EndpointLinkMixin, PublicIdSearchMixin, BigTableAdmin
):
    list_display = (
        "public_id",
        "event_shown",
        "endpoint_and_url",
        "status",
        "attempts",
        "last_response",
        "created_and_next",
    )
    # The events come in a query of their own (get_queryset): see there.
    list_select_related = ("endpoint",)
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
        "endpoint_url",
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
    object_actions = {"retry_now": "Retry now"}

    def get_ordering(self, request: HttpRequest) -> Any:
        # Each filtered list in the order of the index that holds its rows. A failed or
        # cancelled list newest first, as delivery_outcome_idx holds those rows. By
        # id, PostgreSQL read back through each day's partition until a row of that status:
        # all of a day with none (190,500 rows of today's, 57 ms, in bench.volume at 20 M).
        status = request.GET.get("status__exact")
        if status in OUTCOME_STATUSES:
            return ("-created_at", "-id")
        # The pending ones soonest due first, as delivery_due_idx holds them (the parked ones of
        # ordered endpoints, due when their turn comes, last). By id it read 5.5 s at 20 M.
        if status == Delivery.Status.PENDING:
            return ("next_attempt_at", "-id")
        return super().get_ordering(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        # The page's events are read by their ids, which PostgreSQL finds in their partitions
        # alone; joined, the planner read all 2 M events of bench.volume to sort a pending
        # list (1.1 s). The body is never shown here.
        events = Event.objects.defer("body")
        return (
            super()
            .get_queryset(request)
            .select_related(*self.list_select_related)
            .prefetch_related(Prefetch("event", queryset=events))
        )

    @admin.display(description="event")
    def event_link(self, delivery: Delivery) -> str:
        return _link("admin:deliveries_event_change", delivery.event_id, delivery.event.public_id)

    @admin.display(description="created / next attempt")
    def created_and_next(self, delivery: Delivery) -> str:
        """Two times in one column, as the endpoint column is two lines: the list fits a
        laptop beside its filters."""
        if delivery.next_attempt_at is None:
            return utc_time(delivery.created_at)
        return format_html(
            '{}<br><span class="kinetic-line">next {}</span>',
            utc_time(delivery.created_at),
            utc_time(delivery.next_attempt_at),
        )

    @admin.display(description="event")
    def event_shown(self, delivery: Delivery) -> str:
        """The event's type, linked to its page; its id is the tooltip."""
        event = delivery.event
        url = reverse("admin:deliveries_event_change", args=[event.pk])
        return format_html('<a href="{}" title="{}">{}</a>', url, event.public_id, event.type)

    # Needs deliveries.change_delivery (see has_operate_permission).
    @admin.action(description="Retry now (one more attempt)", permissions=["operate"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        targets = action_targets(self, request, queryset)
        if targets is None:
            return
        queued, refused = 0, defaultdict[str, list[str]](list)
        for delivery in targets:
            try:
                delivery_retry_now(delivery=delivery)
            except InvalidInput as why:  # an attempt in flight, or its endpoint disabled
                refused[why.message].append(delivery.public_id)
                continue
            self.log_change(request, delivery, "Retry requested.")
            queued += 1
        if queued:
            self.message_user(
                request, f"Queued {queued} delivery(ies) for another attempt.", messages.SUCCESS
            )
        for message, public_ids in refused.items():
            self.message_user(
                request, f"Not retried: {', '.join(public_ids)}. {message}", messages.WARNING
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
