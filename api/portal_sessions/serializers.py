from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.serializers import ApiDateTimeField, InputSerializer, StrictBooleanField


class PortalSessionCreateInput(InputSerializer):
    read_only_params = frozenset({"url", "expires_at"})

    # The body's field, not Field.read_only: DRF's metaclass takes declared fields off the class.
    read_only = StrictBooleanField(  # type: ignore[assignment]
        required=False,
        default=False,
        help_text="`true`: the portal shows everything and offers no action.",
    )


class PortalSessionOutput(serializers.Serializer):
    object = serializers.SerializerMethodField()
    url = serializers.URLField(
        help_text=(
            "The one-time link. It opens once, within 5 minutes, into a browser session of the "
            "key's organization and environment; used or expired, it answers 403."
        )
    )
    read_only = serializers.BooleanField()  # type: ignore[assignment]  # as above
    expires_at = ApiDateTimeField(help_text="When the link stops opening (not the session).")

    @extend_schema_field({"type": "string", "enum": ["portal_session"]})
    def get_object(self, value: Any) -> str:
        return "portal_session"
