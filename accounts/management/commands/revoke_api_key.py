from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.keys import key_hash
from accounts.models import ApiKey
from accounts.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke an API key, named by its visible prefix (md_test_AbCd1234) or its id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix_or_id", metavar="PREFIX_OR_ID")

    def handle(self, *args: Any, prefix_or_id: str, **options: Any) -> None:
        value = prefix_or_id.strip().rstrip("…")
        # An id is ASCII digits: str.isdigit() alone also takes "²" and other scripts' digits.
        if value.isascii() and value.isdigit():
            query = ApiKey.objects.filter(pk=int(value))
        else:
            # A pasted full key works too; it is matched by hash and never printed.
            query = ApiKey.objects.filter(prefix=value) | ApiKey.objects.filter(
                key_hash=key_hash(value)
            )
        api_key = query.select_related("environment__organization").first()
        if api_key is None:
            raise CommandError("no API key with that prefix or id")
        already = api_key.revoked_at is not None
        api_key_revoke(api_key=api_key)
        verb = "was already revoked" if already else "revoked"
        self.stdout.write(f"API key {api_key.prefix}… of {api_key.environment} {verb}")
        self.stdout.write(api_key.prefix)
