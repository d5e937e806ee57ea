from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from accounts.services import organization_create
from core.errors import InvalidInput


class Command(BaseCommand):
    help = "Create an organization with its sandbox and production environments; prints the slug."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, slug: str, name: str, **options: Any) -> None:
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError(f"invalid slug {slug!r}: use letters, digits, - and _") from None
        try:
            organization = organization_create(slug=slug, name=name)
        except InvalidInput as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Created organization {organization.name!r} (sandbox, production)")
        self.stdout.write(organization.slug)
