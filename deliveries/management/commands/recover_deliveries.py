from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from core.errors import InvalidInput
from core.times import api_datetime, parse_zoned_datetime
from deliveries.recovery import recovery_create
from webhooks.models import WebhookEndpoint


def zoned_time(value: str) -> datetime:
    try:
        return parse_zoned_datetime(value)
    except ValueError:
        raise CommandError(
            f"{value!r} is not an ISO 8601 time with a zone, e.g. 2026-06-12T18:40:00Z"
        ) from None


class Command(BaseCommand):
    help = (
        "Send again an endpoint's failed and cancelled deliveries of events created in "
        "[--since, --until) (until: now, by default), in the background; prints the recovery id "
        "last (GET /v1/recoveries/ID, or the console, shows its progress)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("webhook_endpoint_id", metavar="WEBHOOK_ENDPOINT_ID")
        parser.add_argument("--since", required=True, metavar="ISO_TIME")
        parser.add_argument("--until", metavar="ISO_TIME")

    def handle(self, *args: Any, **options: Any) -> None:
        since = zoned_time(options["since"])
        until = None if options["until"] is None else zoned_time(options["until"])
        endpoint = (
            WebhookEndpoint.objects.live().filter(public_id=options["webhook_endpoint_id"]).first()
        )
        if endpoint is None:
            raise CommandError("no such webhook endpoint")
        try:
            with transaction.atomic():
                recovery = recovery_create(endpoint=endpoint, since=since, until=until)
        except InvalidInput as exc:
            where = f"--{exc.param}: " if exc.param else ""
            raise CommandError(f"{where}{exc.message}") from None
        self.stdout.write(
            f"Recovering the failed and cancelled deliveries to {endpoint.public_id} of events "
            f"created from {api_datetime(recovery.since)} to {api_datetime(recovery.until)}:"
        )
        self.stdout.write(recovery.public_id)
