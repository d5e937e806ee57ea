"""The idempotency records, read-only."""

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from api.models import IdempotencyRecord
from console.base import BigTableAdmin


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(BigTableAdmin):
    """Which Idempotency-Keys an API key used, and how the first request ended. The stored
    response is never shown: it replays create responses byte for byte, signing secrets
    included. Nor is the request's fingerprint: an unsalted hash of a body that may hold a
    sensitive header value, it would confirm a guess of that value."""

    list_display = ("key", "api_key", "created_at", "response_status")
    list_select_related = ("api_key",)
    fields = ("key", "api_key", "created_at", "response_status")
    search_fields = ("=key",)
    search_help_text = "Exact Idempotency-Key."

    def get_queryset(self, request: HttpRequest) -> QuerySet[IdempotencyRecord]:
        return super().get_queryset(request).defer("response_body")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        return (queryset.filter(key=term) if term else queryset), False
