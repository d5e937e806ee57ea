from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Environment
from core.errors import InvalidInput
from webhooks.models import WebhookEndpoint
from webhooks.services import DEFAULT_ROTATION_OVERLAP, endpoint_secret_rotate


class Command(BaseCommand):
    help = (
        "Give a webhook endpoint a new signing secret, printed once as the last line. The old "
        "secret keeps signing for --overlap seconds (default 86400; 0 revokes it at once). "
        "With --organization, rotates every endpoint there and prints `ID SECRET` per line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("webhook_endpoint_id", nargs="?", metavar="WEBHOOK_ENDPOINT_ID")
        parser.add_argument("--overlap", type=int, default=DEFAULT_ROTATION_OVERLAP)
        parser.add_argument("--organization", metavar="SLUG")
        parser.add_argument("--environment", choices=Environment.Name.values)

    def handle(self, *args: Any, **options: Any) -> None:
        endpoint_id, slug = options["webhook_endpoint_id"], options["organization"]
        if bool(endpoint_id) == bool(slug):
            raise CommandError("name one WEBHOOK_ENDPOINT_ID, or --organization SLUG")
        if options["environment"] and not slug:
            raise CommandError("--environment goes with --organization")
        if options["overlap"] < 0:
            raise CommandError("--overlap must be 0 or more seconds")
        endpoints = WebhookEndpoint.objects.live().order_by("created_at", "id")
        if endpoint_id:
            endpoints = endpoints.filter(public_id=endpoint_id)
        else:
            endpoints = endpoints.filter(environment__organization__slug=slug)
            if options["environment"]:
                endpoints = endpoints.filter(environment__name=options["environment"])
        found = list(endpoints)
        if not found:
            raise CommandError("no such webhook endpoint" if endpoint_id else "no endpoints there")
        overlap = options["overlap"]
        window = f"for {overlap} s" if overlap else "no longer (revoked)"
        for endpoint in found:
            try:
                rotated = endpoint_secret_rotate(endpoint=endpoint, overlap_seconds=overlap)
            except InvalidInput as exc:
                raise CommandError(exc.message) from None
            if endpoint_id:
                self.stdout.write(
                    f"Rotated the signing secret of {endpoint.public_id}; the previous secret "
                    f"signs {window}. The new secret is shown once:"
                )
                self.stdout.write(rotated.signing_secret)
            else:
                self.stdout.write(f"{endpoint.public_id} {rotated.signing_secret}")
