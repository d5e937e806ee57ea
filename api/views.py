"""The base of every public API view: scopes, strict query strings, tenancy, idempotency."""

from typing import Any, ClassVar, cast

from django.http import HttpResponse
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import ViewSet

from accounts.models import ApiKey, Environment
from api import idempotency
from api.errors import ApiError


class ApiViewSet(ViewSet):
    """Subclasses declare, per action, the scope it needs and the query parameters it takes.

    Everything an action reads or writes is reached through `self.environment`, the caller's
    organization and environment, so no view can forget the tenant.
    """

    # No OPTIONS: its metadata would describe the API without a scope check.
    http_method_names = ["get", "post", "patch", "delete", "head"]
    required_scopes: ClassVar[dict[str, str | None]] = {}
    query_params: ClassVar[dict[str, frozenset[str]]] = {}

    def get_required_scope(self) -> str | None:
        method = self.request.method or ""
        if self.action is None or method.lower() not in self.http_method_names:
            raise exceptions.MethodNotAllowed(method)
        action = self.action
        if action not in self.required_scopes:
            # A new action without a declared scope is a programming error, never open access.
            raise RuntimeError(f"{type(self).__name__}.{action} declares no required scope")
        return self.required_scopes[action]

    @property
    def api_key(self) -> ApiKey:
        # Set by the API's authentication class; the stubs know only DRF's own Token.
        return cast(ApiKey, self.request.auth)

    @property
    def environment(self) -> Environment:
        return self.api_key.environment

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        allowed = self.query_params.get(self.action or "", frozenset())
        for name, values in request.query_params.lists():
            if name not in allowed:
                raise ApiError(
                    "parameter_unknown",
                    f"Received unknown query parameter: {name[:100]}.",
                    param=name[:100],
                )
            if len(values) > 1:
                # `?limit=1&limit=2`: which one was meant cannot be known; refused, not guessed.
                raise ApiError("parameter_invalid", f"{name} is given more than once.", param=name)

    def validated(self, serializer_class: type[serializers.Serializer], data: Any) -> Any:
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        """DRF's dispatch, with POSTs carrying an Idempotency-Key run through the key store."""
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            method = (request.method or "").lower()
            handler = getattr(self, method, None) if method in self.http_method_names else None
            if handler is None:
                handler = self.http_method_not_allowed
            key = idempotency.header_value(request._request) if method == "post" else None
            if key is None:
                response = handler(request, *args, **kwargs)
            else:

                def run() -> HttpResponse:
                    result = self.finalize_response(
                        request, handler(request, *args, **kwargs), *args, **kwargs
                    )
                    if isinstance(result, Response):
                        result.render()
                    return result

                response = idempotency.run_idempotently(request._request, self.api_key, key, run)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response
