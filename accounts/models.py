from django.db import models
from django.db.models import Q


class Organization(models.Model):
    """A customer of the Kinetic API. It owns one sandbox and one production environment."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Environment(models.Model):
    """The tenant every API object belongs to: an organization's sandbox or production."""

    class Name(models.TextChoices):
        SANDBOX = "sandbox", "Sandbox"
        PRODUCTION = "production", "Production"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="environments"
    )
    name = models.CharField(max_length=16, choices=Name.choices)

    class Meta:
        ordering = ["organization__slug", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="environment_unique_per_organization"
            ),
            models.CheckConstraint(
                condition=Q(name__in=["sandbox", "production"]), name="environment_name_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.name}"

    @property
    def is_production(self) -> bool:
        return self.name == self.Name.PRODUCTION

    @property
    def key_prefix(self) -> str:
        return "md_live_" if self.is_production else "md_test_"


class ApiKey(models.Model):
    """A credential for one environment. Only a SHA-256 of the key is stored."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    # The first characters of the key (`md_test_AbCd1234`), so operators can tell keys apart.
    prefix = models.CharField(max_length=24, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    # DRF treats `request.user` as the principal; an API key is one.
    is_authenticated = True

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}…"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class PortalSession(models.Model):
    """A customer portal's browser session, made by an API key for its own environment.

    Two random tokens, only their SHA-256 stored: the link's (in the URL, opens once within
    LINK_LIFETIME) and the session's (in the browser's cookie once the link is opened).
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="portal_sessions")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="portal_sessions"
    )
    read_only = models.BooleanField(default=False)
    link_token_hash = models.CharField(max_length=64, unique=True)
    link_expires_at = models.DateTimeField()
    opened_at = models.DateTimeField(null=True, blank=True)
    # Set when the link is opened; unique where set (a link never opened has none).
    session_token_hash = models.CharField(max_length=64, null=True, blank=True, unique=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"portal session #{self.pk} of {self.api_key}"
