"""Organizations (with their two environments) and API keys in the operators' console.

Organizations and keys are created through `accounts.services`, like the management
commands do; an API key's raw value is shown once, on the page that follows its creation.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from accounts.models import ApiKey, Environment, Organization
from accounts.scopes import SCOPES
from accounts.services import api_key_create, api_key_revoke, organization_create
from console.base import (
    ConsoleLists,
    EnvironmentFilter,
    IdChoiceField,
    IsSetFilter,
    NoFormWrites,
    ReadOnlyTabularInline,
    UtcTimes,
    adopt,
    matches_no_row,
    organization_filter,
)


class EnvironmentInline(ReadOnlyTabularInline):
    model = Environment
    fields = ("name", "api_keys")
    readonly_fields = ("name", "api_keys")
    show_change_link = False

    @admin.display(description="API keys")
    def api_keys(self, environment: Environment) -> str:
        url = reverse("admin:accounts_apikey_changelist")
        return format_html('<a href="{}?environment={}">API keys</a>', url, environment.pk)


@admin.register(Organization)
class OrganizationAdmin(ConsoleLists, UtcTimes, admin.ModelAdmin):
    """Added through `organization_create` (which makes both environments); not edited."""

    list_display = ("slug", "name", "created_at")
    search_fields = ("slug", "name")
    readonly_fields = ("created_at",)
    inlines = (EnvironmentInline,)

    def get_fields(self, request: HttpRequest, obj: Organization | None = None) -> tuple[str, ...]:
        return ("slug", "name") if obj is None else ("slug", "name", "created_at")

    def get_inlines(self, request: HttpRequest, obj: Organization | None) -> Any:
        return self.inlines if obj is not None else ()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # would delete every key, endpoint and delivery with it

    def save_model(
        self, request: HttpRequest, obj: Organization, form: ModelForm, change: bool
    ) -> None:
        adopt(obj, organization_create(slug=obj.slug, name=obj.name))


@admin.register(Environment)
class EnvironmentAdmin(ConsoleLists, UtcTimes, NoFormWrites, admin.ModelAdmin):
    """Not on the index (environments are shown inside their organization); registered for
    the API key form's organization search and for links to an environment."""

    search_fields = ("organization__slug",)
    search_help_text = "Organization slug, optionally followed by / and sandbox or production."
    fields = ("organization", "name")
    list_display = ("__str__", "name")
    list_select_related = ("organization",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Environment]:
        return super().get_queryset(request).select_related("organization")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        # The API key form's autocomplete sends its term as typed (a list's search box is a
        # form field, which refuses U+0000 itself).
        if matches_no_row(search_term):
            return queryset.none(), False
        slug, _, name = search_term.strip().replace(" ", "/").partition("/")
        if slug:
            queryset = queryset.filter(organization__slug__startswith=slug)
        if name:
            queryset = queryset.filter(name__startswith=name.strip("/"))
        return queryset, False

    def get_model_perms(self, request: HttpRequest) -> dict[str, bool]:
        return {}  # hidden from the index only


class RevokedFilter(IsSetFilter):
    title = "state"
    parameter_name = "revoked"
    field = "revoked_at"
    labels = [("no", "Active"), ("yes", "Revoked")]


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(scope, f"{scope}: {description}") for scope, description in SCOPES.items()],
        widget=forms.CheckboxSelectMultiple,
        help_text="None implies another.",
    )

    class Meta:
        model = ApiKey
        fields = ("environment", "name", "scopes")
        help_texts = {"environment": "Type the organization's slug, e.g. acme/sandbox."}


@admin.register(ApiKey)
class ApiKeyAdmin(ConsoleLists, UtcTimes, admin.ModelAdmin):
    """Keys are created with `api_key_create` and revoked with `api_key_revoke`; nothing else
    changes one. Only the visible prefix is ever shown; the hash never is."""

    list_display = (
        "prefix",
        "organization",
        "environment_name",
        "name",
        "scope_list",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_select_related = ("environment__organization",)
    list_filter = (
        ("environment__name", EnvironmentFilter),
        RevokedFilter,
        organization_filter("environment__organization__slug"),
    )
    search_fields = ("^prefix", "name", "=environment__organization__slug")
    search_help_text = "Key prefix (md_test_AbCd1234), name, or organization slug."
    autocomplete_fields = ("environment",)
    readonly_fields = ("prefix", "scope_list", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("environment", "name", "scopes")
        return (
            "prefix",
            "name",
            "environment",
            "scope_list",
            "created_at",
            "last_used_at",
            "revoked_at",
        )

    def get_form(
        self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # The environment is posted as an id through the autocomplete (IdChoiceField says why).
        kwargs.setdefault("form_class", IdChoiceField)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Saving always leads to the page showing the raw key; no "save and add another".
        extra_context = {
            **(extra_context or {}),
            "show_save_and_add_another": False,
            "show_save_and_continue": False,
        }
        return super().add_view(request, form_url, extra_context)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: a revoked key stays, so its history does

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("accounts.change_apikey"))

    @admin.display(description="organization", ordering="environment__organization__slug")
    def organization(self, api_key: ApiKey) -> str:
        return api_key.environment.organization.slug

    @admin.display(description="environment", ordering="environment__name")
    def environment_name(self, api_key: ApiKey) -> str:
        return api_key.environment.name

    @admin.display(description="scopes")
    def scope_list(self, api_key: ApiKey) -> str:
        return ", ".join(api_key.scopes)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ModelForm, change: bool) -> None:
        api_key, raw = api_key_create(
            environment=form.cleaned_data["environment"],
            scopes=form.cleaned_data["scopes"],
            name=form.cleaned_data["name"],
        )
        adopt(obj, api_key)
        # Kept on this one object for the page that follows; never stored, logged or sent
        # as a message (messages live in the session).
        obj._raw_key = raw  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.opts,
            "api_key": obj,
            "raw_key": obj._raw_key,  # type: ignore[attr-defined]
        }
        return TemplateResponse(request, "admin/accounts/apikey/created.html", context)

    @admin.action(description="Revoke selected API keys", permissions=["operate"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key)
            self.log_change(request, api_key, "Revoked.")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)
