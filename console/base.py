"""What every page of the console shares: read-only bases, a paginator for big tables, filters
typed into a box, exact public-id search.

The console follows the service layer: a model admin shows rows, and anything that changes a
row is an action calling a service. Model forms edit nothing, so no admin page can bypass a
service's rules (cancelling queued deliveries on disable, encrypting secrets, hashing keys).
"""

from functools import cached_property
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

# An action runs inside one web request; larger batches belong to the management commands.
ACTION_LIMIT = 100


class EstimatedCountPaginator(Paginator):
    """Pages for tables too big to count on every page view.

    Django's changelist asks its paginator for `count` on every request, and a plain
    COUNT(*) reads the whole table: seconds at millions of deliveries. Instead:

    - an unfiltered list of a big table uses PostgreSQL's own row estimate
      (`pg_class.reltuples`, kept current by autovacuum's ANALYZE) and says "about N"; when the
      estimate is high the last pages are empty, when low the newest rows are still on page 1;
    - a filtered or searched list, or a small table, is counted exactly but only up to
      `count_cap` rows (`SELECT COUNT(*) FROM (… LIMIT cap+1)`), and says "N+" at the cap:
      operators narrow a filter rather than page through ten thousand rows.
    """

    estimate_above = 10_000  # below this, counting is cheap and exact is nicer
    count_cap = 10_000

    count_is_estimate = False
    count_is_capped = False

    @cached_property
    def count(self) -> int:
        queryset: QuerySet[Any] = self.object_list  # type: ignore[assignment]
        if not queryset.query.where:
            estimate = _estimated_rows(queryset)
            if estimate is not None and estimate > self.estimate_above:
                self.count_is_estimate = True
                return estimate
        # Only the primary key, unordered: annotations and joins of the page itself cost
        # nothing here.
        counted = queryset.order_by().values("pk")[: self.count_cap + 1].count()
        if counted > self.count_cap:
            self.count_is_capped = True
            return self.count_cap
        return counted


def _estimated_rows(queryset: QuerySet[Any]) -> int | None:
    """The planner's row count for the queryset's table; None where there is none (SQLite,
    or a table never analysed, which PostgreSQL reports as -1)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    table = connection.ops.quote_name(queryset.model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table]
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


class NoFormWrites:
    """No add, change or delete through the admin's forms, for model admins and inlines."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyModelAdmin(NoFormWrites, admin.ModelAdmin):
    """Shown, never edited through a form. Actions that call services are the only writes;
    they need the model's Django `change` permission (see `has_operate_permission`), which the
    read-only operators' group does not have."""

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """May run this admin's actions: holds the model's `change` permission."""
        opts = self.opts
        codename = get_permission_codename("change", opts)
        return bool(request.user.has_perm(f"{opts.app_label}.{codename}"))


class BigTableAdmin(ReadOnlyModelAdmin):
    """A changelist over up to millions of rows: no COUNT(*) of the whole table (the
    estimating paginator), no facet counts, no sorting but newest first on the primary key
    (every other order is a sort of the whole table), no date drill-down."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    ordering = ("-pk",)
    sortable_by: ClassVar[tuple[str, ...]] = ()
    list_per_page = 50
    date_hierarchy = None


class PublicIdSearchMixin:
    """Search by an exact public id: `we_…`, `evt_…`, `dlv_…`, each mapped to a lookup.

    Ids are case-sensitive and uniquely indexed; Django's `=field` search would compare them
    case-insensitively (UPPER(…)), which no index serves. Anything else goes to
    `search_other`, which finds nothing unless a model admin says otherwise.
    """

    public_id_search: dict[str, str] = {}  # id prefix (without "_") -> lookup

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        for prefix, lookup in self.public_id_search.items():
            if term.startswith(f"{prefix}_"):
                return queryset.filter(**{lookup: term}), False
        return self.search_other(request, queryset, term), False

    def search_other(
        self, request: HttpRequest, queryset: QuerySet[Any], term: str
    ) -> QuerySet[Any]:
        return queryset.none()


class IsSetFilter(admin.SimpleListFilter):
    """Rows whose `field` is set ("yes") or empty ("no"); subclasses set `title`,
    `parameter_name`, `field`, and `labels`, the two choices as shown."""

    field = ""
    labels: ClassVar[list[tuple[str, str]]] = [("yes", "Yes"), ("no", "No")]

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(self.labels)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("yes", "no"):
            return queryset.filter(**{f"{self.field}__isnull": self.value() == "no"})
        return queryset


class TextInputFilter(admin.SimpleListFilter):
    """A filter typed into a box, for values too many to list (organizations). Subclasses set
    `title`, `parameter_name` and `lookup`, the queryset lookup the typed value is matched on."""

    template = "admin/kinetic/input_filter.html"
    lookup: str = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("", "")]  # has_output() wants a choice; the template shows a box instead

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = (self.value() or "").strip()
        return queryset.filter(**{self.lookup: value}) if value else queryset

    def choices(self, changelist: Any) -> Any:
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "All",
            "value": self.value() or "",
            # The box submits a GET form: every other parameter of the page goes along.
            "preserved": [
                (name, value)
                for name, values in changelist.filter_params.items()
                if name != self.parameter_name
                for value in values
            ],
        }


def organization_filter(lookup: str) -> type[TextInputFilter]:
    """Filter by organization slug (exact), through `lookup`."""
    return type(
        "OrganizationFilter",
        (TextInputFilter,),
        {"title": "organization (slug)", "parameter_name": "organization", "lookup": lookup},
    )


class EnvironmentFilter(admin.ChoicesFieldListFilter):
    """Sandbox or production, for a `…environment__name` path (titled "environment", not by
    the field's own name, "name")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.title = "environment"


class CappedInlineFormSet(BaseInlineFormSet):
    """An inline of at most `max_rows` rows (`InlineModelAdmin.max_rows`): an event can have
    thousands of deliveries; the rest are a link to the filtered changelist away."""

    max_rows = 50

    def get_queryset(self) -> QuerySet[Any]:
        if not hasattr(self, "_capped"):
            self._capped = super().get_queryset()[: self.max_rows]
        return self._capped


class ReadOnlyTabularInline(NoFormWrites, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True


def adopt(obj: Model, created: Model) -> None:
    """Turns the admin's unsaved `obj` into the row a service just created, so Django's add
    view (history entry, message, redirect) carries on with the real row."""
    for field in created._meta.concrete_fields:
        setattr(obj, field.attname, getattr(created, field.attname))
    obj._state.adding = False
    obj._state.db = created._state.db


def action_targets(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]
) -> list[Any] | None:
    """The selected rows, or None (with a message) when there are more than ACTION_LIMIT."""
    rows = list(queryset[: ACTION_LIMIT + 1])
    if len(rows) > ACTION_LIMIT:
        modeladmin.message_user(
            request,
            f"Select at most {ACTION_LIMIT} rows for this action; use the management "
            "commands for more.",
            messages.ERROR,
        )
        return None
    return rows
