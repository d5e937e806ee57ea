"""Strict input: JSON types as declared, unknown and read-only fields refused by name."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from rest_framework import serializers

from api.errors import ApiError
from core.times import api_datetime


class ApiDateTimeField(serializers.DateTimeField):
    """A time in a response, written by `api_datetime` (DRF's own formatting goes through
    strftime, which writes years before 1000 with fewer than four digits)."""

    def to_representation(  # type: ignore[override]  # DRF's answers None too; stubs say str
        self, value: datetime | None
    ) -> str | None:
        return None if value is None else api_datetime(value)


class StrictCharField(serializers.CharField):
    """A JSON string, and only a string (DRF would turn `123` into `"123"`)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("must be a string.", code="invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: not `"5"`, not `5.0`, not `true`."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError("must be an integer.", code="invalid")
        return int(super().to_internal_value(data))


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean: not `"true"`, not `1`."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError("must be a boolean.", code="invalid")
        return data


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str) or data not in self.choices:
            raise serializers.ValidationError(
                f"must be one of: {', '.join(map(str, self.choices))}.", code="invalid_choice"
            )
        return data


class StrictObjectField(serializers.Field):
    """A JSON object, passed on whole: the service that takes it checks its entries, so an
    error names this field whichever entry is wrong."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError("must be an object.", code="invalid")
        return dict(data)

    def to_representation(self, value: Any) -> Any:
        return value


class InputSerializer(serializers.Serializer):
    """Refuses fields it does not declare: `read_only_params` by name, `later_params` (fields
    another operation sets) with what that operation is, others as unknown."""

    read_only_params: ClassVar[frozenset[str]] = frozenset()
    later_params: ClassVar[dict[str, str]] = {}

    def run_validation(self, data: Any = serializers.empty) -> Any:
        if not isinstance(data, Mapping):  # `null`, a list, a string: never "no data"
            raise ApiError("parameter_invalid", "The request body must be a JSON object.")
        return super().run_validation(data)

    def to_internal_value(self, data: Any) -> Any:
        for name in data:
            if name in self.fields:
                continue
            if name in self.read_only_params:
                raise ApiError(
                    "parameter_invalid", f"{name} is read-only and cannot be set.", param=name
                )
            if name in self.later_params:
                raise ApiError("parameter_invalid", self.later_params[name], param=name)
            shown = str(name)[:100]
            raise ApiError(
                "parameter_unknown", f"Received unknown parameter: {shown}.", param=shown
            )
        return super().to_internal_value(data)

    def create(self, validated_data: Any) -> Any:  # pragma: no cover - input only
        raise NotImplementedError

    def update(self, instance: Any, validated_data: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


# The actions that take no body (send a test event, retry, delete) read it all the same, so
# that a body that is not JSON is a 415 or a 400 as on every other action, and a field sent in
# it is refused rather than silently ignored.
class NoInput(InputSerializer):
    """No body, or an empty JSON object. A field is refused (`400 parameter_unknown`), and so
    is a body that is not JSON (`415 unsupported_media_type`)."""
