from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Environment
from core.ids import public_id
from webhooks.models import WebhookEndpoint

EVENT_ID_PREFIX = "evt"
DELIVERY_ID_PREFIX = "dlv"
RECOVERY_ID_PREFIX = "rcv"
LONG_ID_LENGTH = 20  # events and deliveries are many: more randomness than endpoints


def new_event_id() -> str:
    return public_id(EVENT_ID_PREFIX, LONG_ID_LENGTH)


def new_delivery_id() -> str:
    return public_id(DELIVERY_ID_PREFIX, LONG_ID_LENGTH)


def new_recovery_id() -> str:
    return public_id(RECOVERY_ID_PREFIX)


class EventQuerySet(models.QuerySet["Event"]):
    def for_environment(self, environment_id: int) -> "EventQuerySet":
        """One tenant's events: how every read the API or a console makes reaches them."""
        return self.filter(environment_id=environment_id)


class Event(models.Model):
    """Something that happened in one environment, with the exact body every delivery sends.

    `body` is the JSON document encoded once at publish time; every attempt to every endpoint
    sends these bytes, so receivers see one stable payload and event id.
    """

    # Indexed (event_public_id_idx), not unique: on PostgreSQL the table is partitioned
    # (deliveries.partitions), where a unique index must hold the partition key; the 119
    # random bits of a long public id make a collision beyond reach.
    public_id = models.CharField(max_length=24, default=new_event_id, editable=False)
    # Indexed by event_list_idx, which leads with it.
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    type = models.CharField(max_length=100)
    api_version = models.CharField(max_length=10)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    # The transactional outbox: null until the fan-out task made this event's deliveries.
    fanned_out_at = models.DateTimeField(null=True, blank=True)

    objects = EventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["public_id"], name="event_public_id_idx"),
            models.Index(fields=["environment", "-created_at", "-id"], name="event_list_idx"),
            models.Index(
                fields=["created_at"],
                name="event_fanout_pending_idx",
                condition=Q(fanned_out_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.public_id


class DeliveryQuerySet(models.QuerySet["Delivery"]):
    def for_environment(self, environment_id: int) -> "DeliveryQuerySet":
        """Deliveries to one tenant's endpoints (deleted endpoints' included: their history
        stays readable)."""
        return self.filter(endpoint__environment_id=environment_id)


class Delivery(models.Model):
    """One event to one endpoint, until it succeeds, fails for good, or is cancelled.

    PostgreSQL is the source of truth for what is due: `next_attempt_at` says when, a worker
    holds a delivery while `claimed_until` is in the future (and only with its `claim_token`),
    and `enqueued_at` tells the sweeper since when a task for it has been on the broker, or
    from when a worker process is to take it back itself (a rate-limited endpoint's delivery
    sent back for its slot: deliveries.rates).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    # Indexed, not unique: see Event.public_id.
    public_id = models.CharField(max_length=24, default=new_delivery_id, editable=False)
    # Both indexed by what leads with them: the unique constraint and delivery_endpoint_idx.
    # Fewer indexes on the hottest table: every delivery writes each of them. No foreign key
    # in the database between the history tables: on PostgreSQL they are partitioned alike and
    # dropped a partition at a time (deliveries.partitions), and a key there would make each
    # drop check a day's rows; the ORM cascades deletes, recording writes the event it knows.
    event = models.ForeignKey(
        Event,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,
        db_constraint=False,
    )
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-created_at", "-id"]
        constraints = [
            # Fan-out may run twice (a lost task is re-run); it never makes a second delivery.
            models.UniqueConstraint(
                fields=["event", "endpoint"], name="delivery_once_per_endpoint"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "succeeded", "failed", "cancelled"]),
                name="delivery_status_valid",
            ),
        ]
        indexes = [
            # Exact lookups only (the API, the admin's search): no LIKE index.
            models.Index(fields=["public_id"], name="delivery_public_id_idx"),
            # The sweeper's scan: pending deliveries in due order.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due_idx",
                condition=Q(status="pending"),
            ),
            # An endpoint's deliveries, newest first (API list, admin, auto-disable).
            models.Index(fields=["endpoint", "-created_at", "-id"], name="delivery_endpoint_idx"),
            # The rare outcomes, for the API's and the admin's status filters: without them a
            # filter on a status an endpoint has few rows in reads all its history. Rows enter
            # only when they fail or are cancelled, so sending pays nothing for them. (Pending
            # rows are found through delivery_due_idx; succeeded ones are most rows.)
            models.Index(
                fields=["endpoint", "status", "-created_at", "-id"],
                name="delivery_endpoint_outcome_idx",
                condition=Q(status__in=["failed", "cancelled"]),
            ),
            models.Index(
                fields=["status", "-created_at", "-id"],
                name="delivery_outcome_idx",
                condition=Q(status__in=["failed", "cancelled"]),
            ),
            # An ordered endpoint's waiting line, in publication order (deliveries.ordering).
            # Only parked rows are in it: an unordered delivery is never parked, and costs
            # this index nothing.
            models.Index(
                fields=["endpoint", "event"],
                name="delivery_parked_idx",
                condition=Q(status="pending", next_attempt_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.public_id


class DeliveryAttempt(models.Model):
    """One HTTP request made for a delivery, whatever came of it."""

    # Indexed by attempt_recorded_once, which leads with it. No key in the database: see
    # Delivery.event.
    delivery = models.ForeignKey(
        Delivery,
        on_delete=models.CASCADE,
        related_name="attempts",
        db_index=False,
        db_constraint=False,
    )
    # The delivery's event, written by recording: history is partitioned by event id, and an
    # attempt lives in its event's partition with its delivery (deliveries.partitions).
    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # An error class a person can act on: timeout, connection_error, tls_error, redirect, ...
    error = models.CharField(max_length=200, blank=True)
    succeeded = models.BooleanField(default=False)
    response_body = models.TextField(blank=True)  # the first 16 KiB, decoded leniently

    class Meta:
        ordering = ["delivery_id", "number"]
        indexes = [models.Index(fields=["started_at"], name="attempt_prune_idx")]
        constraints = [
            # An attempt is recorded once: recording it again (after a COMMIT whose answer was
            # lost with the connection) inserts nothing (deliveries.recording.record). Two
            # attempts with one number (a claim that lapsed mid-attempt) differ by started_at.
            # Also the index of a delivery's attempts; it holds the event id the table is
            # partitioned by, as a unique index there must.
            models.UniqueConstraint(
                fields=["delivery", "number", "started_at", "event"], name="attempt_recorded_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id}#{self.number}"


class Lane(models.Model):
    """An endpoint's dispatch state, shared by every worker: the delivery an ordered endpoint
    has in hand, and the next slot its rate limit allows. Made on first use; its row lock is
    what serializes the workers' decisions about one endpoint."""

    endpoint = models.OneToOneField(
        WebhookEndpoint, on_delete=models.CASCADE, primary_key=True, related_name="lane"
    )
    # The ordered endpoint's head: the one delivery that may be attempted. A plain id, not a
    # foreign key: retention deletes deliveries in bulk, and a lane that names a deleted one
    # simply has no head.
    head_delivery_id = models.BigIntegerField(null=True, blank=True)
    # The rate limit's next free slot (a GCRA "theoretical arrival time"): the earliest time
    # the next delivery may start.
    next_slot_at = models.DateTimeField(null=True, blank=True)
    # When the last delivery the rate limit sent back to the database is due again: the next
    # one is due a slot after it, so a backlog comes due at the rate it can be sent.
    deferred_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"lane of {self.endpoint_id}"


class RecoveryQuerySet(models.QuerySet["Recovery"]):
    def for_environment(self, environment_id: int) -> "RecoveryQuerySet":
        return self.filter(endpoint__environment_id=environment_id)


class Recovery(models.Model):
    """A request to send again an endpoint's failed and cancelled deliveries of a time window,
    worked through in the background in batches."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"

    public_id = models.CharField(
        max_length=18, unique=True, default=new_recovery_id, editable=False
    )
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="recoveries"
    )
    since = models.DateTimeField()
    until = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    deliveries_requeued = models.PositiveIntegerField(default=0)
    # The last delivery id requeued: the next batch starts after it.
    cursor = models.BigIntegerField(default=0)
    # When the last delivery it requeued is due: requeued deliveries come due at
    # WEBHOOKS_RECOVERY_RATE, and the next batch after these (deliveries.recovery).
    paced_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = RecoveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "recoveries"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["running", "completed"]), name="recovery_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.public_id
