from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from api.idempotency import records_reencrypt
from webhooks.services import secrets_reencrypt


class Command(BaseCommand):
    # Here, above the apps, because it re-encrypts what two of them store.
    help = (
        "Re-encrypt every stored signing secret with the first key of "
        "SIGNING_SECRET_ENCRYPTION_KEYS. Safe while the service runs; afterwards the other keys "
        "can be removed from the setting. Prints the number of secrets re-encrypted."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        # Everything stored encrypted: the secrets, and the idempotent responses that hold one.
        count = secrets_reencrypt() + records_reencrypt()
        keys = len(settings.SIGNING_SECRET_ENCRYPTION_KEYS)
        self.stdout.write(
            f"Re-encrypted {count} signing secrets with the first of {keys} configured keys."
        )
        self.stdout.write(str(count))
