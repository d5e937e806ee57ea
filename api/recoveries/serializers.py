from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.serializers import ApiDateTimeField, InputSerializer, StrictCharField
from core.times import parse_zoned_datetime
from deliveries.models import Recovery

TIME_FORMAT = "an ISO 8601 time with a zone, e.g. 2026-06-12T18:40:00Z"


# RFC 3339 as core.times reads it: the format allows a leap second (`:60`) and year 0, which
# Python's datetime cannot hold; the pattern rules them out.
@extend_schema_field(
    {
        "type": "string",
        "format": "date-time",
        "pattern": (
            "^(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
            "(?:\\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
        ),
    }
)
class ZonedDateTimeField(StrictCharField):
    """A time in a request: ISO 8601 with its zone (`Z` or `±HH:MM`), as a UTC datetime."""

    def to_internal_value(self, data: Any) -> Any:
        try:
            return parse_zoned_datetime(super().to_internal_value(data))
        except ValueError:
            raise serializers.ValidationError(f"must be {TIME_FORMAT}.", code="invalid") from None


class RecoveryCreateInput(InputSerializer):
    """The window: events created from `since` (included) to `until` (excluded)."""

    read_only_params = frozenset(
        {"recovery_id", "webhook_endpoint_id", "status", "deliveries_requeued", "created_at"}
    )

    since = ZonedDateTimeField(
        help_text=f"The window's start, {TIME_FORMAT}; within the retention window."
    )
    until = ZonedDateTimeField(
        required=False, help_text=f"The window's end (excluded), {TIME_FORMAT}; default: now."
    )


class RecoveryOutput(serializers.Serializer):
    object = serializers.SerializerMethodField()
    recovery_id = serializers.CharField(source="public_id")
    webhook_endpoint_id = serializers.CharField(source="endpoint.public_id")
    since = ApiDateTimeField()
    until = ApiDateTimeField()
    status = serializers.ChoiceField(
        choices=Recovery.Status.choices,
        help_text="`running` until every matching delivery is queued again, then `completed`.",
    )
    deliveries_requeued = serializers.IntegerField(help_text="Deliveries queued again so far.")
    created_at = ApiDateTimeField()

    @extend_schema_field({"type": "string", "enum": ["recovery"]})
    def get_object(self, recovery: Recovery) -> str:
        return "recovery"
