from drf_spectacular.utils import OpenApiExample
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import scopes
from api.errors import not_found
from api.openapi import ErrorExamples, Refusal, api_operation, object_id_parameter
from api.recoveries.serializers import RecoveryCreateInput, RecoveryOutput
from api.views import ApiViewSet
from api.webhooks.openapi import EXAMPLE_ID as ENDPOINT_EXAMPLE_ID
from api.webhooks.openapi import WEBHOOK_ENDPOINT_ID
from api.webhooks.views import endpoint_or_404
from deliveries import recovery, selectors

TAG_RECOVERIES = "Recoveries"
EXAMPLE_ID = "rcv_4fQz8Lm2Vx9Kp1"
RECOVERY_ID = object_id_parameter("recovery_id", "recovery", EXAMPLE_ID)

_RECOVERY = {
    "object": "recovery",
    "recovery_id": EXAMPLE_ID,
    "webhook_endpoint_id": ENDPOINT_EXAMPLE_ID,
    "since": "2026-06-12T00:00:00Z",
    "until": "2026-06-12T18:40:00Z",
    "status": "running",
    "deliveries_requeued": 0,
    "created_at": "2026-06-12T18:40:00Z",
}
CREATE_EXAMPLES = [
    OpenApiExample(
        "Recover a window",
        request_only=True,
        value={"since": "2026-06-12T00:00:00Z", "until": "2026-06-12T18:40:00Z"},
    ),
    OpenApiExample("Accepted", response_only=True, status_codes=[202], value=_RECOVERY),
]
RETRIEVE_EXAMPLES = [
    OpenApiExample(
        "Completed",
        response_only=True,
        status_codes=[200],
        value={**_RECOVERY, "status": "completed", "deliveries_requeued": 1234},
    ),
]
CREATE_ERRORS: ErrorExamples = {
    "parameter_invalid": (
        "Invalid since: must be an ISO 8601 time with a zone, e.g. 2026-06-12T18:40:00Z.",
        "since",
    ),
    "parameter_missing": ("Missing required parameter: since.", "since"),
    "not_found": (f"No such webhook endpoint: '{ENDPOINT_EXAMPLE_ID}'.", "webhook_endpoint_id"),
}
CREATE_REFUSALS = [
    Refusal(
        None,
        "the endpoint is disabled",
        "This webhook endpoint is disabled: enable it before recovering its deliveries.",
    ),
    Refusal(
        "since",
        "`since` is older than the retention window, or (without `until`) not in the past",
        "since must be in the past.",
    ),
    Refusal("until", "`until` is not later than `since`", "until must be later than since."),
]
RETRIEVE_ERRORS: ErrorExamples = {
    "not_found": (f"No such recovery: '{EXAMPLE_ID}'.", "recovery_id"),
}


class RecoveryViewSet(ApiViewSet):
    """`POST /v1/webhook_endpoints/{id}/recover` and `GET /v1/recoveries/{id}`: sending an
    endpoint's failed and cancelled deliveries again, and how far that has got."""

    required_scopes = {
        "create": scopes.WEBHOOK_ENDPOINTS_WRITE,
        "retrieve": scopes.WEBHOOK_ENDPOINTS_READ,
    }

    @api_operation(
        operation_id="webhook_endpoints_recover",
        summary="Recover an endpoint's failed deliveries",
        description=(
            "Sends again every delivery to this endpoint whose event was created in "
            "[`since`, `until`) and that is `failed` or `cancelled` now, as further attempts of "
            "the same delivery: the same `MD-Delivery-Id` and event id, attempts numbered on. "
            "A delivery that had used up its retries gets one more attempt; one cancelled "
            "earlier gets the retries it had left. An ordered endpoint receives them in the "
            "order their events were published. The work runs in the background, in batches "
            "paced so that live deliveries keep flowing: follow it with "
            "`GET /v1/recoveries/{recovery_id}`. `since` must be within the retention window "
            "and before `until`; the endpoint must be enabled (if it is disabled meanwhile, "
            "the recovery ends with what it queued so far)."
        ),
        scope=scopes.WEBHOOK_ENDPOINTS_WRITE,
        tags=[TAG_RECOVERIES],
        lookup=WEBHOOK_ENDPOINT_ID,
        request=RecoveryCreateInput,
        idempotent=True,
        responses={202: RecoveryOutput},
        examples=CREATE_EXAMPLES,
        error_examples=CREATE_ERRORS,
        refusals=CREATE_REFUSALS,
    )
    def create(self, request: Request, webhook_endpoint_id: str) -> Response:
        endpoint = endpoint_or_404(self.environment, webhook_endpoint_id)
        data = self.validated(RecoveryCreateInput, request.data)
        made = recovery.recovery_create(endpoint=endpoint, **data)
        return Response(RecoveryOutput(made).data, status=202)

    @api_operation(
        operation_id="recoveries_retrieve",
        summary="Retrieve a recovery",
        description=(
            "How far a recovery has got: `deliveries_requeued` so far, and `status`, which "
            "becomes `completed` once every matching delivery is queued again."
        ),
        scope=scopes.WEBHOOK_ENDPOINTS_READ,
        tags=[TAG_RECOVERIES],
        lookup=RECOVERY_ID,
        responses={200: RecoveryOutput},
        examples=RETRIEVE_EXAMPLES,
        error_examples=RETRIEVE_ERRORS,
    )
    def retrieve(self, request: Request, recovery_id: str) -> Response:
        found = selectors.recovery_get(environment=self.environment, public_id=recovery_id)
        if found is None:
            raise not_found("recovery", "recovery_id", recovery_id)
        return Response(RecoveryOutput(found).data)
