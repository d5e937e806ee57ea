"""Opening a portal link, and the portal's front door."""

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.middleware.csrf import rotate_token
from django.shortcuts import redirect

from accounts.portal import portal_link_open, portal_link_refusal
from portal.access import denied, portal_page, set_session_cookie

_REFUSALS = {
    "used": "This portal link has already been used. A link opens once: ask for a new one.",
    "expired": "This portal link has expired. A link opens within 5 minutes: ask for a new one.",
    "unknown": "This portal link is not valid. Ask for a new one.",
}


def open_link(request: HttpRequest, token: str) -> HttpResponse:
    """Opens the one-time link: the session's cookie, then the endpoints. GET only: a HEAD
    (a link checker's) must not use the link up."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    opened = portal_link_open(token=token)
    if opened is None:
        return denied(request, _REFUSALS[portal_link_refusal(token=token)])
    session, cookie_token = opened
    # A browser holds one portal session: this one replaces any other. Pages still open from
    # that one carry its CSRF token, which now fails, so that a form headed with one
    # organization's name cannot post into another's (as Django's login() does for users).
    rotate_token(request)
    response = redirect("portal:endpoints")
    set_session_cookie(response, session, cookie_token)
    return response


@portal_page
def home(request: HttpRequest) -> HttpResponse:
    return redirect("portal:endpoints")
