"""Who may see a portal page: the browser session a one-time link opened (accounts.portal).

Every view is wrapped in `portal_page` (GET) or `portal_action` (POST; refused to a read-only
session). Both set `request.portal`, the session's scope; views reach data only through
`request.portal.environment`, with the selectors and services the API uses. An id that is not
the environment's is the portal's 404 page (a view raises Http404).
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from math import ceil
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import render

from accounts.models import Environment, PortalSession
from accounts.portal import portal_session_active
from core.rate_limits import seconds_to_wait
from portal.middleware import PORTAL_PATH
from webhooks.models import WebhookEndpoint
from webhooks.selectors import endpoint_get

COOKIE_NAME = "kinetic_portal"


@dataclass(frozen=True)
class PortalScope:
    session: PortalSession
    environment: Environment
    read_only: bool


class PortalRequest(HttpRequest):
    """An HttpRequest that went through `portal_page` or `portal_action`."""

    portal: PortalScope


View = Callable[..., HttpResponse]


def set_session_cookie(response: HttpResponse, session: PortalSession, cookie_token: str) -> None:
    response.set_cookie(
        COOKIE_NAME,
        cookie_token,
        max_age=settings.PORTAL_SESSION_TTL,
        path=PORTAL_PATH,
        secure=settings.PORTAL_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


def denied(request: HttpRequest, message: str, *, status: int = 403) -> HttpResponse:
    """The portal's refusal page: `message` says why, and nothing else."""
    return render(request, "portal/denied.html", {"message": message}, status=status)


def not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/not_found.html", status=404)


def _scoped(view: View, *, methods: tuple[str, ...], writes: tuple[str, ...]) -> View:
    """`view` for an open session, on `methods`; refused to a read-only one on `writes`."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in methods:
            return HttpResponseNotAllowed(methods)
        session = portal_session_active(cookie_token=request.COOKIES.get(COOKIE_NAME, ""))
        if session is None:
            return denied(
                request,
                "This portal session has ended, or was never opened in this browser. Open a "
                "new portal link.",
            )
        if request.method in writes and session.read_only:
            return denied(request, "This portal session is read-only: it cannot change anything.")
        # Per session, as the API counts per key (the hash identifies it across processes).
        wait = seconds_to_wait(f"portal:{session.session_token_hash}")
        if wait is not None:
            response = denied(
                request, "Too many requests. Wait a moment and try again.", status=429
            )
            response["Retry-After"] = str(max(1, ceil(wait)))
            return response
        request.portal = PortalScope(  # type: ignore[attr-defined]
            session=session, environment=session.environment, read_only=session.read_only
        )
        try:
            return view(request, *args, **kwargs)
        except Http404:
            return not_found(request)

    return wrapper


_READ = ("GET", "HEAD")


def portal_page(view: View) -> View:
    """A page: GET (or HEAD), for any open session."""
    return _scoped(view, methods=_READ, writes=())


def portal_action(view: View) -> View:
    """An action: POST, for a session that is not read-only (CSRF-checked by Django's
    middleware, as every form is)."""
    return _scoped(view, methods=("POST",), writes=("POST",))


def portal_form(view: View) -> View:
    """A form and its submission (GET and POST), both refused to a read-only session: it is
    offered no form at all."""
    return _scoped(view, methods=(*_READ, "POST"), writes=(*_READ, "POST"))


def portal_page_and_action(view: View) -> View:
    """A page (GET, for any session) whose POST is an action (refused to a read-only one)."""
    return _scoped(view, methods=(*_READ, "POST"), writes=("POST",))


def scoped_endpoint(request: PortalRequest, endpoint_id: str) -> WebhookEndpoint:
    """The session's endpoint with this id; another environment's, or none: the 404 page."""
    endpoint = endpoint_get(environment=request.portal.environment, public_id=endpoint_id)
    if endpoint is None:
        raise Http404
    return endpoint
