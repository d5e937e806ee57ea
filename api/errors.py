"""The one error envelope, and the translation of every failure into it.

`{"error": {"type", "code", "message", "param", "request_id"}}` is what a client sees for any
error: ours (`ApiError`), DRF's (validation, parsing, auth, 405) and Django's (404, 500). A
lost database is a 503 with Retry-After here alone: the envelope for the API, a page for the
portal's and the admin's browsers.
"""

import logging
import math
import sys
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import SuspiciousOperation, TooManyFieldsSent
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views import defaults as django_defaults
from rest_framework import exceptions as drf

from api.renderers import encode
from core.errors import InvalidInput
from core.logging import current_request_id
from portal.middleware import PORTAL_PATH

logger = logging.getLogger(__name__)

# code -> (HTTP status, error type). The contract's list; nothing else is ever sent.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "parameter_invalid": (400, "invalid_request_error"),
    "parameter_missing": (400, "invalid_request_error"),
    "parameter_unknown": (400, "invalid_request_error"),
    "invalid_version": (400, "invalid_request_error"),
    "unauthenticated": (401, "authentication_error"),
    "insufficient_scope": (403, "permission_error"),
    "not_found": (404, "invalid_request_error"),
    "method_not_allowed": (405, "invalid_request_error"),
    "idempotency_key_reused": (409, "idempotency_error"),
    "idempotency_key_in_use": (409, "idempotency_error"),
    "payload_too_large": (413, "invalid_request_error"),
    "unsupported_media_type": (415, "invalid_request_error"),
    "rate_limited": (429, "rate_limit_error"),
    "internal_error": (500, "api_error"),
    "service_unavailable": (503, "api_error"),
}

# Seconds a client is told to wait when the database cannot be reached: a restart or a pool
# out of connections passes within seconds.
UNAVAILABLE_RETRY_AFTER = 2

INTERNAL_ERROR_MESSAGE = (
    "Something went wrong on our side. Retry the request; if this persists, contact support "
    "with the request id."
)


class ApiError(Exception):
    """Raise anywhere below a view to answer with the envelope."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return ERROR_CODES[self.code][0]


def not_found(object_name: str, param: str, value: str) -> ApiError:
    """`404 not_found` for an id the caller cannot see (missing, or another tenant's)."""
    return ApiError("not_found", f"No such {object_name}: '{value[:100]}'.", param=param)


def error_body(code: str, message: str, *, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "type": ERROR_CODES[code][1],
            "code": code,
            "message": message,
            "param": param,
            "request_id": current_request_id.get(),
        }
    }


def error_response(error: ApiError) -> HttpResponse:
    response = HttpResponse(
        encode(error_body(error.code, error.message, param=error.param)),
        status=error.status,
        content_type="application/json",
    )
    for name, value in error.headers.items():
        response[name] = value
    return response


def _first_validation_error(detail: Any, path: str = "") -> tuple[str | None, Any]:
    """The first leaf of DRF's nested error detail, with its parameter path (`a[0]`)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                return _first_validation_error(value, path)
            sub = f"{path}[{key}]" if path else str(key)
            return _first_validation_error(value, sub)
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0], path)
    return (path or None), detail


def from_validation_error(exc: drf.ValidationError) -> ApiError:
    param, leaf = _first_validation_error(exc.detail)
    code = getattr(leaf, "code", "invalid")
    if code == "required":
        return ApiError("parameter_missing", f"Missing required parameter: {param}.", param=param)
    message = str(leaf)
    if param and param not in message:
        message = f"Invalid {param}: {message}"
    return ApiError("parameter_invalid", message, param=param)


def database_unavailable(exc: BaseException | None) -> ApiError | None:
    """`503 service_unavailable` when `exc` says the database cannot be reached (restarting,
    out of connections, connection lost), for the API and the browser's pages alike."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return None
    # Nothing was done that the client should not retry.
    return ApiError(
        "service_unavailable",
        "The service cannot reach its database right now. Retry the request shortly.",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


def to_api_error(exc: Exception) -> ApiError | None:
    """The envelope error for a known exception, or None for a bug (answered as a 500)."""
    if isinstance(exc, ApiError):
        return exc
    unavailable = database_unavailable(exc)
    if unavailable is not None:
        logger.warning("database unavailable: %s", exc)
        return unavailable
    if isinstance(exc, InvalidInput):
        return ApiError("parameter_invalid", exc.message, param=exc.param)
    if isinstance(exc, drf.ValidationError):
        return from_validation_error(exc)
    if isinstance(exc, TooManyFieldsSent):
        # Django stops reading a query string at DATA_UPLOAD_MAX_NUMBER_FIELDS parameters.
        return ApiError(
            "parameter_invalid",
            f"Too many query parameters: at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} are "
            "read.",
        )
    if isinstance(exc, SuspiciousOperation):
        # Django's own answer to a request it will not read is a 400 (handler400, below).
        return ApiError("parameter_invalid", "The request could not be read.")
    if isinstance(exc, drf.ParseError):
        return ApiError("parameter_invalid", f"Request body is not valid JSON: {exc.detail}")
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return ApiError(
            "unauthenticated",
            str(exc.detail),
            headers={"WWW-Authenticate": 'Bearer realm="kinetic"'},
        )
    if isinstance(exc, drf.PermissionDenied | DjangoPermissionDenied):
        return ApiError("insufficient_scope", "This API key may not perform this request.")
    if isinstance(exc, drf.NotFound | Http404):
        return ApiError("not_found", "No such resource.")
    if isinstance(exc, drf.MethodNotAllowed):
        return ApiError("method_not_allowed", str(exc.detail))
    if isinstance(exc, drf.UnsupportedMediaType):
        return ApiError(
            "unsupported_media_type",
            "Request bodies must be JSON, sent with Content-Type: application/json.",
        )
    if isinstance(exc, drf.Throttled):
        wait = max(1, math.ceil(exc.wait or 1))  # type: ignore[attr-defined]  # not in the stubs
        return ApiError(
            "rate_limited",
            f"Too many requests. Retry after {wait} seconds.",
            headers={"Retry-After": str(wait)},
        )
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    """DRF's EXCEPTION_HANDLER: every exception raised in an API view ends here."""
    error = to_api_error(exc)
    if error is None:
        logger.exception("Unhandled error in %s", context.get("view").__class__.__name__)
        error = ApiError("internal_error", INTERNAL_ERROR_MESSAGE)
    return error_response(error)


def is_api_path(request: HttpRequest) -> bool:
    return request.path == "/v1" or request.path.startswith("/v1/")


# Django's own error views, for URLs no API view matched and errors outside DRF.
def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return error_response(
            ApiError("not_found", f"Unrecognized request URL ({request.method}: {request.path}).")
        )
    return django_defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    # Django calls this from the `except` clause that caught the request's exception.
    unavailable = database_unavailable(sys.exc_info()[1])
    if is_api_path(request):
        return error_response(unavailable or ApiError("internal_error", INTERNAL_ERROR_MESSAGE))
    if unavailable is not None:
        return unavailable_page(request, unavailable)
    return django_defaults.server_error(request)


def unavailable_page(request: HttpRequest, error: ApiError) -> HttpResponse:
    """The browser's 503 page: the portal's look under /portal/, the admin's elsewhere.
    Rendered without the request, whose context (session, user, messages) would ask the
    database again."""
    context: dict[str, Any] = {"message": error.message}
    if request.path_info.startswith(PORTAL_PATH):
        template = "portal/unavailable.html"
    else:
        template = "admin/503.html"
        context.update(site_header=admin.site.site_header, site_title=admin.site.site_title)
    response = HttpResponse(render_to_string(template, context), status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def handler400(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return error_response(ApiError("parameter_invalid", "The request could not be read."))
    return django_defaults.bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return error_response(
            ApiError("insufficient_scope", "This API key may not perform this request.")
        )
    return django_defaults.permission_denied(request, exception)
