from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Environment
from core.ids import public_id

ENDPOINT_ID_PREFIX = "we"


def new_endpoint_id() -> str:
    return public_id(ENDPOINT_ID_PREFIX)


class WebhookEndpointQuerySet(models.QuerySet["WebhookEndpoint"]):
    def live(self) -> "WebhookEndpointQuerySet":
        """Not deleted. A deleted endpoint is kept for its delivery history only."""
        return self.filter(deleted_at__isnull=True)

    def for_environment(self, environment_id: int) -> "WebhookEndpointQuerySet":
        """The only way API code reaches endpoints: one tenant's live endpoints."""
        return self.live().filter(environment_id=environment_id)


class WebhookEndpoint(models.Model):
    class Status(models.TextChoices):
        ENABLED = "enabled", "Enabled"
        DISABLED = "disabled", "Disabled"

    class DeliveryOrder(models.TextChoices):
        UNORDERED = "unordered", "Unordered"
        ORDERED = "ordered", "Ordered"

    public_id = models.CharField(
        max_length=17, unique=True, default=new_endpoint_id, editable=False
    )
    # Indexed by webhook_endpoint_list_idx, which leads with it.
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="webhook_endpoints", db_index=False
    )
    url = models.CharField(max_length=2048)
    enabled_events = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    # Why the endpoint was last disabled by us rather than by its owner (410 Gone, failing).
    disabled_reason = models.CharField(max_length=300, blank=True)
    # The current failure streak: attempts failed since the last success, and since when.
    consecutive_failures = models.PositiveIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # A temporary endpoint (manage.py listen) is deleted by the service once this passes,
    # unless renewed: one whose process was killed is not left enabled for long.
    expires_at = models.DateTimeField(null=True, blank=True)
    # Delivery control (the contract's section of that name).
    description = models.TextField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Header name -> value, sent on every delivery. A sensitive value is stored encrypted, as
    # {"encrypted": <ciphertext>} (webhooks.headers says which are sensitive).
    headers = models.JSONField(default=dict, blank=True)
    # Deliveries per second to this endpoint, across every worker; null: no limit.
    rate_limit = models.PositiveIntegerField(null=True, blank=True)
    delivery_order = models.CharField(
        max_length=16, choices=DeliveryOrder.choices, default=DeliveryOrder.UNORDERED
    )

    objects = WebhookEndpointQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The list API's keyset walk: one tenant, newest first, (created_at, id) as cursor.
            models.Index(
                fields=["environment", "-created_at", "-id"],
                name="webhook_endpoint_list_idx",
                condition=Q(deleted_at__isnull=True),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["enabled", "disabled"]),
                name="webhook_endpoint_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(delivery_order__in=["unordered", "ordered"]),
                name="webhook_endpoint_delivery_order_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_enabled(self) -> bool:
        return self.status == self.Status.ENABLED and self.deleted_at is None

    @property
    def is_ordered(self) -> bool:
        return self.delivery_order == self.DeliveryOrder.ORDERED


class EndpointSecretQuerySet(models.QuerySet["EndpointSecret"]):
    def signing(self, now: datetime | None = None) -> "EndpointSecretQuerySet":
        """The secrets that sign deliveries now, newest first."""
        now = now or timezone.now()
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now)).order_by(
            "-created_at", "-id"
        )


class EndpointSecret(models.Model):
    """A signing secret, encrypted. The current one has no expiry; a rotated-out one keeps
    signing until `expires_at` (the rotation's overlap window)."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="secrets")
    ciphertext = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = EndpointSecretQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="endpoint_secret_signing_idx"),
            # Which endpoints got a new secret lately: every worker asks a few times a second
            # (deliveries.sending.SigningKeys).
            models.Index(fields=["created_at"], name="endpoint_secret_created_idx"),
        ]

    def __str__(self) -> str:
        return f"secret #{self.pk} of {self.endpoint_id}"
