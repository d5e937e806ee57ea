import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import Environment
from accounts.selectors import environment_get
from core.errors import InvalidInput
from deliveries.services import event_publish
from webhooks.catalog import EVENT_TYPES


class Command(BaseCommand):
    help = "Publish an event into an organization's environment; prints the event id last."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--organization", required=True, metavar="SLUG")
        parser.add_argument("--environment", required=True, choices=Environment.Name.values)
        parser.add_argument("--type", required=True, help=f"one of: {', '.join(EVENT_TYPES)}")
        parser.add_argument("--data", default="{}", metavar="JSON", help="a JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            data = json.loads(options["data"])
        except ValueError as exc:
            raise CommandError(f"--data is not valid JSON: {exc}") from None
        except RecursionError:  # `[[[[…` a few thousand deep fits in one argument
            raise CommandError("--data is not valid JSON: nested too deeply") from None
        try:
            environment = environment_get(
                organization_slug=options["organization"], name=options["environment"]
            )
        except Environment.DoesNotExist:
            raise CommandError(f"no organization {options['organization']!r}") from None
        try:
            with transaction.atomic():
                event = event_publish(environment=environment, type=options["type"], data=data)
        except InvalidInput as exc:
            raise CommandError(f"--{exc.param}: {exc.message}") from None
        self.stdout.write(f"Published {event.type} in {environment}")
        self.stdout.write(event.public_id)
