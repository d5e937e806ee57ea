from typing import TYPE_CHECKING, Any

from rest_framework import serializers

from api.serializers import (
    ApiDateTimeField,
    InputSerializer,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
)
from core.times import api_datetime
from webhooks.models import WebhookEndpoint
from webhooks.url_policy import MAX_URL_LENGTH

if TYPE_CHECKING:
    from webhooks.services import CreatedEndpoint

READ_ONLY_PARAMS = frozenset({"webhook_endpoint_id", "signing_secret", "created_at"})
MAX_FILTER_ENTRIES = 256


def _events_field(required: bool) -> serializers.ListField:
    return serializers.ListField(
        child=StrictCharField(max_length=200),
        required=required,
        max_length=MAX_FILTER_ENTRIES,
        help_text='Event types to receive; omit or send ["*"] for every event.',
    )


class WebhookEndpointCreateInput(InputSerializer):
    read_only_params = READ_ONLY_PARAMS
    later_params = {
        "status": "status can only be changed by an update: a new endpoint is enabled; "
        "disable it with PATCH /v1/webhook_endpoints/{id}.",
    }

    url = StrictCharField(max_length=MAX_URL_LENGTH)
    enabled_events = _events_field(required=False)


class WebhookEndpointUpdateInput(InputSerializer):
    read_only_params = READ_ONLY_PARAMS

    url = StrictCharField(max_length=MAX_URL_LENGTH, required=False)
    enabled_events = _events_field(required=False)
    status = StrictChoiceField(choices=WebhookEndpoint.Status.choices, required=False)


MAX_ROTATION_OVERLAP = 7 * 24 * 3600


class RotateSecretInput(InputSerializer):
    overlap_seconds = StrictIntegerField(
        required=False,
        min_value=0,
        max_value=MAX_ROTATION_OVERLAP,
        help_text=(
            "How long the current secret keeps signing beside the new one (default 86400; "
            "0 revokes it at once)."
        ),
    )


class WebhookEndpointOutput(serializers.Serializer):
    """An endpoint as every response shows it.

    The fields describe it for the OpenAPI schema (the tests check responses against it); the
    representation itself is built directly, a dict per endpoint, where DRF's field-by-field
    path costs a list page several times more (docs/scaling.md).
    """

    webhook_endpoint_id = serializers.CharField(source="public_id")
    url = serializers.CharField()
    enabled_events = serializers.ListField(child=serializers.CharField())
    status = serializers.ChoiceField(choices=WebhookEndpoint.Status.choices)
    created_at = ApiDateTimeField()

    def to_representation(self, instance: WebhookEndpoint) -> dict[str, Any]:
        return {
            "webhook_endpoint_id": instance.public_id,
            "url": instance.url,
            "enabled_events": instance.enabled_events,
            "status": instance.status,
            "created_at": api_datetime(instance.created_at),
        }


class WebhookEndpointCreatedOutput(serializers.Serializer):
    """The create response: the only time the signing secret is shown."""

    webhook_endpoint_id = serializers.CharField(source="endpoint.public_id")
    url = serializers.CharField(source="endpoint.url")
    enabled_events = serializers.ListField(
        child=serializers.CharField(), source="endpoint.enabled_events"
    )
    status = serializers.ChoiceField(
        choices=WebhookEndpoint.Status.choices, source="endpoint.status"
    )
    signing_secret = serializers.CharField(
        help_text="Returned once, on this response only. Store it to verify MD-Signature."
    )
    created_at = ApiDateTimeField(source="endpoint.created_at")

    def to_representation(self, instance: "CreatedEndpoint") -> dict[str, Any]:
        shown = WebhookEndpointOutput().to_representation(instance.endpoint)
        created_at = shown.pop("created_at")
        return {**shown, "signing_secret": instance.signing_secret, "created_at": created_at}


class WebhookEndpointDeletedOutput(serializers.Serializer):
    webhook_endpoint_id = serializers.CharField()
    deleted = serializers.BooleanField()


# DRF's metaclass takes declared fields off the class, so a field may be called `data`; the stubs
# still see Serializer.data there (typeddjango/djangorestframework-stubs#78).
class WebhookEndpointListOutput(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = WebhookEndpointOutput(many=True)  # type: ignore[assignment]  # a field named data
    has_more = serializers.BooleanField()


class EventTypeOutput(serializers.Serializer):
    type = serializers.CharField()
    description = serializers.CharField()


class EventTypeListOutput(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = EventTypeOutput(many=True)  # type: ignore[assignment]  # a field named data
    has_more = serializers.BooleanField()
