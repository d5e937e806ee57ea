from typing import Any, cast

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from accounts.models import ApiKey
from api.errors import ApiError


class HasRequiredScope(BasePermission):
    """Every API view names the scope each of its operations needs (`required_scope`)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        # What the API's authentication class returns; the stubs know only DRF's own Token.
        api_key = cast("ApiKey | None", request.auth)
        if api_key is None:
            raise exceptions.NotAuthenticated(
                "No API key provided. Send `Authorization: Bearer <key>`."
            )
        scope = view.get_required_scope()
        if scope is not None and not api_key.has_scope(scope):
            raise ApiError(
                "insufficient_scope",
                f"This API key does not have the '{scope}' scope this request needs.",
            )
        return True
