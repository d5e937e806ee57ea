from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from api.idempotency import records_reencrypt
from core.encryption import Undecryptable
from webhooks.services import headers_reencrypt, secrets_reencrypt


class Command(BaseCommand):
    # Here, above the apps, because it re-encrypts what two of them store.
    help = (
        "Re-encrypt everything stored encrypted (signing secrets, endpoints' sensitive header "
        "values, stored idempotent responses) with the first key of "
        "SIGNING_SECRET_ENCRYPTION_KEYS. Safe while the service runs; afterwards the other keys "
        "can be removed from the setting. Prints what it re-encrypted, then, as the last line, "
        "how many rows in all."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        # Everything stored encrypted: the secrets, the endpoints' sensitive header values, and
        # the idempotent responses that hold a secret.
        try:
            secrets, headers = secrets_reencrypt(), headers_reencrypt()
            responses = records_reencrypt()
        except Undecryptable as exc:
            raise CommandError(str(exc)) from None
        keys = len(settings.SIGNING_SECRET_ENCRYPTION_KEYS)
        kinds = ", ".join(
            (
                _counted(secrets, "signing secret", "signing secrets"),
                _counted(headers, "endpoint's headers", "endpoints' headers"),
                _counted(responses, "stored response", "stored responses"),
            )
        )
        self.stdout.write(f"Re-encrypted {kinds} with the first of {keys} configured keys.")
        self.stdout.write(str(secrets + headers + responses))


def _counted(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"
