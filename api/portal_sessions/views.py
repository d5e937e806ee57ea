from django.urls import reverse
from drf_spectacular.utils import OpenApiExample
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import scopes
from accounts.portal import portal_session_create
from api.openapi import api_operation
from api.portal_sessions.serializers import PortalSessionCreateInput, PortalSessionOutput
from api.views import ApiViewSet

TAG_PORTAL = "Customer Portal"

CREATE_EXAMPLES = [
    OpenApiExample("Read-only", request_only=True, value={"read_only": True}),
    OpenApiExample(
        "Created",
        response_only=True,
        status_codes=[201],
        value={
            "object": "portal_session",
            "url": "https://sandbox.api.microndelta.com/portal/open/3mQ8c2XkLp0ZrVt7bN4sWd9yHf1Ga6JeUo5iRq2KxTz",
            "read_only": False,
            "expires_at": "2026-06-12T18:45:00Z",
        },
    ),
]


class PortalSessionViewSet(ApiViewSet):
    """`POST /v1/portal_sessions`: a one-time link to the customer portal."""

    required_scopes = {"create": scopes.WEBHOOK_ENDPOINTS_WRITE}

    @api_operation(
        operation_id="portal_sessions_create",
        summary="Create a portal session",
        description=(
            "Makes a one-time link to the customer portal: web pages where your developers see "
            "and manage this environment's webhook endpoints, deliveries and events. Open the "
            "`url` (or embed it in an iframe) within 5 minutes; it opens once, into a browser "
            "session of the key's organization and environment that lasts an hour (the "
            "operator's `PORTAL_SESSION_TTL`) and ends when this key is revoked. A used or "
            "expired link answers 403. With `read_only`, the portal offers no action."
        ),
        scope=scopes.WEBHOOK_ENDPOINTS_WRITE,
        tags=[TAG_PORTAL],
        request=PortalSessionCreateInput,
        idempotent=True,
        responses={201: PortalSessionOutput},
        examples=CREATE_EXAMPLES,
    )
    def create(self, request: Request) -> Response:
        data = self.validated(PortalSessionCreateInput, request.data)
        session, token = portal_session_create(api_key=self.api_key, read_only=data["read_only"])
        url = request.build_absolute_uri(reverse("portal:open", kwargs={"token": token}))
        return Response(
            PortalSessionOutput(
                {"url": url, "read_only": session.read_only, "expires_at": session.link_expires_at}
            ).data,
            status=201,
        )
