import json
from typing import Any

import orjson
from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.deliveries import openapi as docs
from api.parsers import nesting
from api.serializers import ApiDateTimeField, InputSerializer, StrictCharField
from deliveries.models import Delivery, Event
from deliveries.services import event_body_parts
from webhooks.catalog import EVENT_TYPES


# deliveries.services.event_publish checks both; the schema says what it takes.
@extend_schema_field({"type": "string", "enum": docs.PUBLISHABLE_EVENT_TYPES})
class PublishedTypeField(StrictCharField):
    pass


@extend_schema_field({"type": "object", "additionalProperties": True})
class EventDataField(serializers.JSONField):
    pass


# DRF's metaclass takes declared fields off the class, so a field may be called `data`; the stubs
# still see Serializer.data there (typeddjango/djangorestframework-stubs#78).
class EventCreateInput(InputSerializer):
    read_only_params = frozenset({"event_id", "id", "created_at", "api_version", "environment"})

    type = PublishedTypeField(
        max_length=100,
        help_text=(
            "An event type from GET /v1/event_types, but `ping`, `webhook_endpoint.disabled` and "
            "`delivery.exhausted`: the service sends those itself."
        ),
    )
    data = EventDataField(  # type: ignore[assignment]  # a field named data
        required=False,
        help_text=(
            "A JSON object: the event's payload, delivered as `data`. At most "
            f"{settings.WEBHOOKS_EVENT_DATA_MAX_BYTES} bytes as compact JSON with non-ASCII "
            "characters escaped."
        ),
    )


def _timestamp() -> ApiDateTimeField:
    return ApiDateTimeField(allow_null=True)


class AttemptOutput(serializers.Serializer):
    number = serializers.IntegerField()
    started_at = _timestamp()
    duration_ms = serializers.IntegerField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(help_text="Empty on success; otherwise what went wrong.")
    response_body = serializers.CharField(help_text="The first 16 KiB of the response.")


class DeliveryOutput(serializers.Serializer):
    delivery_id = serializers.CharField(source="public_id")
    event_id = serializers.CharField(source="event.public_id")
    event_type = serializers.CharField(source="event.type")
    webhook_endpoint_id = serializers.CharField(source="endpoint.public_id")
    status = serializers.ChoiceField(choices=Delivery.Status.choices)
    attempt_count = serializers.IntegerField()
    next_attempt_at = _timestamp()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    created_at = _timestamp()
    completed_at = _timestamp()


class DeliveryWithAttemptsOutput(DeliveryOutput):
    attempts = AttemptOutput(many=True)


class EventDeliveryOutput(serializers.Serializer):
    delivery_id = serializers.CharField(source="public_id")
    webhook_endpoint_id = serializers.CharField(source="endpoint.public_id")
    status = serializers.ChoiceField(choices=Delivery.Status.choices)
    attempt_count = serializers.IntegerField()
    next_attempt_at = _timestamp()
    last_status_code = serializers.IntegerField(allow_null=True)


class EventOutput(serializers.Serializer):
    event_id = serializers.CharField(source="public_id")
    type = serializers.ChoiceField(choices=list(EVENT_TYPES))
    api_version = serializers.CharField()
    environment = serializers.SerializerMethodField()
    created_at = _timestamp()
    data = serializers.SerializerMethodField(  # type: ignore[assignment]  # a field named data
        help_text="The event's payload, as delivered."
    )
    delivery_counts = serializers.SerializerMethodField(
        help_text="Deliveries by status: pending, succeeded, failed, cancelled."
    )

    def _body(self, event: Event) -> dict[str, Any]:
        # `environment` and `data` come from the delivered body itself, decoded once.
        cached = getattr(event, "_decoded_body", None)
        if cached is None:
            if nesting(event.body).too_deep:
                # Published before request bodies were bounded, or by a producer that is not
                # the API: decoding and encoding it again could pass Python's recursion limit,
                # so its data is written out as stored.
                head, data = event_body_parts(event.body)
                cached = {**json.loads(head), "data": orjson.Fragment(data)}
            else:
                cached = json.loads(event.body)
            event._decoded_body = cached  # type: ignore[attr-defined]
        return cached

    @extend_schema_field({"type": "string", "enum": ["sandbox", "production"]})
    def get_environment(self, event: Event) -> str:
        return str(self._body(event)["environment"])

    @extend_schema_field({"type": "object", "additionalProperties": True})
    def get_data(self, event: Event) -> dict[str, Any]:
        data: dict[str, Any] = self._body(event)["data"]
        return data

    @extend_schema_field(
        {
            "type": "object",
            "properties": {s: {"type": "integer"} for s in Delivery.Status.values},
            "required": list(Delivery.Status.values),
        }
    )
    def get_delivery_counts(self, event: Event) -> dict[str, int]:
        counts = self.context["delivery_counts"].get(event.pk, {})
        return {status: counts.get(status, 0) for status in Delivery.Status.values}


class EventDetailOutput(EventOutput):
    deliveries = serializers.SerializerMethodField(
        help_text="The event's deliveries, newest first (the first 100)."
    )

    @extend_schema_field(EventDeliveryOutput(many=True))
    def get_deliveries(self, event: Event) -> list[dict[str, Any]]:
        return EventDeliveryOutput(self.context["deliveries"], many=True).data  # type: ignore[return-value]


class EventListOutput(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = EventOutput(many=True)  # type: ignore[assignment]  # a field named data
    has_more = serializers.BooleanField()


class DeliveryListOutput(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = DeliveryWithAttemptsOutput(many=True)  # type: ignore[assignment]  # a field named data
    has_more = serializers.BooleanField()
