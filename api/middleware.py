"""Request-level rules that hold before any view runs: request ids, versions, body limits."""

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from api.errors import ApiError, error_response, is_api_path
from core.ids import request_id
from core.logging import current_request_id

GetResponse = Callable[[HttpRequest], HttpResponse]


class RequestIdMiddleware:
    """Gives every request an `MD-Request-Id` (errors and non-API pages included)."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request_id()
        request.request_id = rid  # type: ignore[attr-defined]
        token = current_request_id.set(rid)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response["MD-Request-Id"] = rid
        return response


class ApiRequestMiddleware:
    """For `/v1/` only: the `MD-Version` header and the request body's size."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.versions: tuple[str, ...] = tuple(settings.API_VERSIONS)
        self.max_body = int(settings.API_MAX_BODY_BYTES)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_api_path(request):
            return self.get_response(request)
        # Absent means the newest; present (even empty) must name a version. (META, not
        # request.headers: that would build a dict of every header for this one.)
        version = request.META.get("HTTP_MD_VERSION", self.versions[-1])
        try:
            if version not in self.versions:
                raise ApiError(
                    "invalid_version",
                    f"Unknown API version {version[:64]!r}. Supported: {', '.join(self.versions)}.",
                    param="MD-Version",
                )
            self._check_body(request)
        except ApiError as error:
            response = error_response(error)
        else:
            request.api_version = version  # type: ignore[attr-defined]
            response = self.get_response(request)
        response["MD-Version"] = version if version in self.versions else self.versions[-1]
        return response

    def _too_large(self) -> ApiError:
        return ApiError(
            "payload_too_large", f"Request bodies are limited to {self.max_body} bytes."
        )

    def _check_body(self, request: HttpRequest) -> None:
        raw_length = request.META.get("CONTENT_LENGTH") or ""
        if not raw_length:
            if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
                # WSGI cannot read a body of unknown length; refusing beats dropping it.
                raise ApiError(
                    "parameter_invalid", "Send the request body with a Content-Length header."
                )
            return
        try:
            length = int(raw_length)
        except ValueError:
            raise ApiError("parameter_invalid", "Invalid Content-Length header.") from None
        if length > self.max_body:
            raise self._too_large()
        try:
            request.body  # noqa: B018  read now, within the limit, for parsing and idempotency
        except RequestDataTooBig:
            raise self._too_large() from None


class _BrowserOnly:
    """For middleware only the browser's pages need (the admin's; the portal's, for their flash
    messages): API requests (`/v1/`) pass through it.

    API clients authenticate with a key on every request (DRF) and carry no session, so
    sessions, the logged-in user and flash messages are nothing to them, and cost a request
    more than a bare view's whole work (docs/architecture.md). CSRF keeps its own middleware:
    its check runs in `process_view`, and DRF's views are exempt from it already.
    """

    get_response: Any

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_api_path(request):
            response: HttpResponse = self.get_response(request)
            return response
        return super().__call__(request)  # type: ignore[misc]  # mixed into a middleware


class BrowserSessionMiddleware(_BrowserOnly, SessionMiddleware):
    pass


class BrowserAuthenticationMiddleware(_BrowserOnly, AuthenticationMiddleware):
    pass


class BrowserMessageMiddleware(_BrowserOnly, MessageMiddleware):
    pass
