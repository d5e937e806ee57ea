import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiKey, Environment, Organization
from accounts.scopes import SCOPES
from accounts.selectors import api_key_for_raw
from accounts.services import api_key_create, organization_create

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = (
        "Local development only: make sure the `demo` organization and a sandbox key with every "
        "scope exist, and print the key (the same one on every run)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("bootstrap_demo is for local runs (DEBUG on) only")
        organization = Organization.objects.filter(slug=DEMO_SLUG).first()
        if organization is None:
            organization = organization_create(slug=DEMO_SLUG, name="Demo organization")
        # The raw key cannot be read back from the database (only its hash is there), so a
        # local run keeps it in var/, beside the SQLite file it belongs to.
        key_file = Path(settings.VAR_DIR) / "demo_api_key"
        raw = key_file.read_text().strip() if key_file.is_file() else ""
        api_key = api_key_for_raw(raw) if raw else None
        if api_key is None or api_key.environment.organization_id != organization.pk:
            sandbox = organization.environments.get(name=Environment.Name.SANDBOX)
            api_key, raw = api_key_create(
                environment=sandbox, scopes=list(SCOPES), name="demo (bin/dev)"
            )
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(raw + "\n")
        assert isinstance(api_key, ApiKey)
        self.stdout.write(f"Demo organization '{DEMO_SLUG}', sandbox key {api_key.prefix}…")
        self.stdout.write(raw)
