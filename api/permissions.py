from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from api.errors import ApiError


class HasRequiredScope(BasePermission):
    """Every API view names the scope each of its operations needs (`required_scope`)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        api_key = request.auth
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
