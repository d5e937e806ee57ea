from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Environment
from accounts.scopes import SCOPES, parse_scopes
from accounts.selectors import environment_get
from accounts.services import api_key_create
from core.errors import InvalidInput


class Command(BaseCommand):
    help = (
        "Create an API key for one organization's environment. The raw key is printed once, "
        "as the last line; only its hash is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--organization", required=True, metavar="SLUG")
        parser.add_argument("--environment", required=True, choices=Environment.Name.values)
        parser.add_argument(
            "--scopes", required=True, metavar="S1,S2", help=f"any of: {', '.join(SCOPES)}"
        )
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            scopes = parse_scopes(options["scopes"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            environment = environment_get(
                organization_slug=options["organization"], name=options["environment"]
            )
        except Environment.DoesNotExist:
            raise CommandError(f"no organization {options['organization']!r}") from None
        try:
            api_key, raw = api_key_create(
                environment=environment, scopes=scopes, name=options["name"]
            )
        except InvalidInput as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"Created API key {api_key.prefix}… for {environment} with scopes "
            f"{', '.join(api_key.scopes)}. It is shown once; store it now."
        )
        self.stdout.write(raw)
