from typing import TYPE_CHECKING, Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.serializers import (
    ApiDateTimeField,
    InputSerializer,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
    StrictObjectField,
)
from api.webhooks import openapi as docs
from webhooks.models import WebhookEndpoint
from webhooks.representation import endpoint_object
from webhooks.services import MAX_DESCRIPTION_LENGTH, MAX_RATE_LIMIT, MAX_ROTATION_OVERLAP
from webhooks.url_policy import MAX_URL_LENGTH

if TYPE_CHECKING:
    from webhooks.services import CreatedEndpoint, RotatedSecret

READ_ONLY_PARAMS = frozenset({"webhook_endpoint_id", "signing_secret", "created_at"})
MAX_FILTER_ENTRIES = 256


# The catalog and the URL policy check these in the service (webhooks.services); the schema says
# what they take.
@extend_schema_field(docs.enabled_events_schema(MAX_FILTER_ENTRIES))
class EnabledEventsField(serializers.ListField):
    pass


@extend_schema_field(docs.ENABLED_EVENTS_OUTPUT)
class EnabledEventsOutputField(serializers.ListField):
    pass


@extend_schema_field(docs.URL_INPUT)
class UrlField(StrictCharField):
    pass


def _events_field(required: bool) -> serializers.ListField:
    return EnabledEventsField(
        child=StrictCharField(max_length=200), required=required, max_length=MAX_FILTER_ENTRIES
    )


# Metadata's and headers' entries are checked by the service (webhooks.services,
# webhooks.headers), so that an error names the field; these say what they take.
@extend_schema_field(docs.METADATA_INPUT)
class MetadataInputField(StrictObjectField):
    pass


@extend_schema_field(docs.HEADERS_INPUT)
class HeadersInputField(StrictObjectField):
    pass


@extend_schema_field(docs.DESCRIPTION_INPUT)
class DescriptionInputField(StrictCharField):
    pass


@extend_schema_field(docs.METADATA_OUTPUT)
class MetadataOutputField(serializers.DictField):
    pass


@extend_schema_field(docs.HEADERS_OUTPUT)
class HeadersOutputField(serializers.DictField):
    pass


class DeliveryControlInput(InputSerializer):
    """The fields of the contract's "Delivery control", on create and update alike."""

    description = DescriptionInputField(
        required=False, allow_null=True, allow_blank=True, max_length=MAX_DESCRIPTION_LENGTH
    )
    metadata = MetadataInputField(required=False, allow_null=True)
    headers = HeadersInputField(required=False)
    rate_limit = StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_RATE_LIMIT,
        help_text=docs.RATE_LIMIT_HELP,
    )
    delivery_order = StrictChoiceField(
        choices=WebhookEndpoint.DeliveryOrder.choices,
        required=False,
        help_text=docs.DELIVERY_ORDER_HELP,
    )


class WebhookEndpointCreateInput(DeliveryControlInput):
    read_only_params = READ_ONLY_PARAMS
    later_params = {
        "status": "status can only be changed by an update: a new endpoint is enabled; "
        "disable it with PATCH /v1/webhook_endpoints/{id}.",
    }

    url = UrlField(max_length=MAX_URL_LENGTH)
    enabled_events = _events_field(required=False)


class WebhookEndpointUpdateInput(DeliveryControlInput):
    read_only_params = READ_ONLY_PARAMS

    url = UrlField(max_length=MAX_URL_LENGTH, required=False)
    enabled_events = _events_field(required=False)
    status = StrictChoiceField(choices=WebhookEndpoint.Status.choices, required=False)


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
    representation itself is webhooks.representation's, a dict built directly.
    """

    webhook_endpoint_id = serializers.CharField(source="public_id")
    url = serializers.CharField()
    enabled_events = EnabledEventsOutputField(child=serializers.CharField())
    status = serializers.ChoiceField(choices=WebhookEndpoint.Status.choices)
    created_at = ApiDateTimeField()
    description = serializers.CharField(allow_null=True, max_length=MAX_DESCRIPTION_LENGTH)
    metadata = MetadataOutputField()
    headers = HeadersOutputField()
    rate_limit = serializers.IntegerField(
        allow_null=True, min_value=1, max_value=MAX_RATE_LIMIT, help_text=docs.RATE_LIMIT_HELP
    )
    delivery_order = serializers.ChoiceField(
        choices=WebhookEndpoint.DeliveryOrder.choices, help_text=docs.DELIVERY_ORDER_HELP
    )

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return endpoint_object(instance)


class WebhookEndpointCreatedOutput(WebhookEndpointOutput):
    """The create response: the only time the signing secret is shown."""

    signing_secret = serializers.CharField(
        help_text="Returned once, on this response only. Store it to verify MD-Signature."
    )

    def to_representation(self, instance: "CreatedEndpoint | RotatedSecret") -> dict[str, Any]:
        # The secret where the reference shows it, before created_at.
        shown = list(endpoint_object(instance.endpoint).items())
        at = [name for name, _ in shown].index("created_at")
        shown.insert(at, ("signing_secret", instance.signing_secret))
        return dict(shown)


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
