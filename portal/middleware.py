"""Headers on every response under /portal/, error pages included: a Content-Security-Policy
that allows only the portal's own scripts and styles, and framing only by
PORTAL_FRAME_ANCESTORS (the CSP's frame-ancestors, so no X-Frame-Options to contradict it)."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

PORTAL_PATH = "/portal/"


def content_security_policy() -> str:
    ancestors = " ".join(settings.PORTAL_FRAME_ANCESTORS) or "'none'"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )


class PortalHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        path = request.path_info
        if path.startswith(PORTAL_PATH) or path == PORTAL_PATH.rstrip("/"):
            response["Content-Security-Policy"] = content_security_policy()
            # Set by XFrameOptionsMiddleware, inside this one: frame-ancestors says it all.
            del response["X-Frame-Options"]
            response["Referrer-Policy"] = "same-origin"  # the link's token stays in the portal
            response["Cache-Control"] = "no-store"
        return response
