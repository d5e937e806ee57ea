"""What every page of the console shares: read-only bases, a paginator for big tables, filters
typed into a box, exact public-id search, times in UTC to the second, and buttons on an object's
page for the actions of its list.

The console follows the service layer: a model admin shows rows, and anything that changes a
row is an action calling a service. Model forms edit nothing, so no admin page can bypass a
service's rules (cancelling queued deliveries on disable, encrypting secrets, hashing keys).
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, cached_property
from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.contrib.auth import get_permission_codename
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import DateTimeField, Model, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

# An action runs inside one web request; larger batches belong to the management commands.
ACTION_LIMIT = 100

# What a page shows for a value that is not there (no time, no error): the admin's default too
# (console.admin).
EMPTY = "—"


def utc(moment: datetime) -> str:
    """A time as the console writes it everywhere, in UTC to the second: 2026-12-03 03:14:07Z.
    Django's own display follows the locale ("Dec. 3, 2026, 3:14 a.m."): no seconds, no zone."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def utc_time(moment: datetime | None, *, short: bool = False) -> str:
    """`utc(moment)` as a <time> element, which the stylesheet keeps on one line. `short` drops
    the date when it is today's (UTC); the whole time is then the tooltip."""
    if moment is None:
        return EMPTY
    full = utc(moment)
    machine = full.replace(" ", "T")
    if short and moment.astimezone(UTC).date() == datetime.now(UTC).date():
        return format_html('<time datetime="{}" title="{}">{}</time>', machine, full, full[11:])
    return format_html('<time datetime="{}">{}</time>', machine, full)


def clipped(text: str) -> str:
    """Long text (a URL) on one line, cut to its column by the stylesheet, whole in the
    tooltip."""
    if not text:
        return EMPTY
    return format_html('<span class="kinetic-clip" title="{}">{}</span>', text, text)


class UtcColumn:
    """A model's date-time field shown through `utc_time`, standing in for its name in
    `list_display`, `fields` and `readonly_fields` (see UtcTimes). It is named as the field, so
    the page's classes (column-created_at, field-created_at) and sorting stay the field's."""

    def __init__(self, field: DateTimeField) -> None:
        self.__name__ = field.name
        self.short_description = field.verbose_name
        self.admin_order_field = field.name

    def __call__(self, obj: Model) -> str:
        return utc_time(getattr(obj, self.__name__))

    def __str__(self) -> str:  # a tabular inline's column class is the name as a string
        return self.__name__


@cache
def _utc_column(field: DateTimeField) -> UtcColumn:
    # One per field: the admin finds a read-only field by identity (`name in readonly_fields`).
    return UtcColumn(field)


def _in_utc(opts: Any, name: Any) -> Any:
    if not isinstance(name, str):
        return name
    try:
        field = opts.get_field(name)
    except FieldDoesNotExist:
        return name
    return _utc_column(field) if isinstance(field, DateTimeField) else name


class UtcTimes:
    """Every date-time field of the model shown through `utc_time`, in lists and on object
    pages, for a model admin or an inline: the field's name becomes its `UtcColumn` wherever
    the admin lists it."""

    opts: Any

    def get_list_display(self, request: HttpRequest) -> Any:
        names = super().get_list_display(request)  # type: ignore[misc]
        return [_in_utc(self.opts, name) for name in names]

    def get_sortable_by(self, request: HttpRequest) -> Any:
        names = super().get_sortable_by(request)  # type: ignore[misc]
        return [_in_utc(self.opts, name) for name in names]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        # Fieldsets, not fields: an admin may override get_fields, and every page reads these.
        return [
            (name, {**options, "fields": [self._line(line) for line in options["fields"]]})
            for name, options in super().get_fieldsets(request, obj)  # type: ignore[misc]
        ]

    def _line(self, line: Any) -> Any:
        if isinstance(line, list | tuple):  # fields shown side by side
            return tuple(_in_utc(self.opts, name) for name in line)
        return _in_utc(self.opts, line)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        names = super().get_readonly_fields(request, obj)  # type: ignore[misc]
        return [_in_utc(self.opts, name) for name in names]


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
    or a table never analysed, which PostgreSQL reports as -1).

    A partitioned table's is the sum of its partitions': autovacuum analyses each partition
    and never the parent, whose own figure stays -1."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    table = connection.ops.quote_name(queryset.model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(_ESTIMATED_ROWS, [table, table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else None


# The table itself if it is a plain one, else its partitions; those never analysed left out.
_ESTIMATED_ROWS = """
SELECT sum(reltuples)::bigint FROM pg_class WHERE reltuples >= 0 AND (
    (oid = to_regclass(%s) AND relkind = 'r')
    OR oid IN (SELECT relid FROM pg_partition_tree(to_regclass(%s)) WHERE isleaf)
)
"""


def matches_no_row(value: str) -> bool:
    """Whether a value typed into a list's filters or an autocomplete box can match nothing:
    PostgreSQL text never holds U+0000, and a query carrying one fails (a DataError, a 500)."""
    return "\x00" in value


class ConsoleChangeList(ChangeList):
    """Every console list (ConsoleLists): a filter value no row can match lists no row, rather
    than reaching the database, and a list is sorted only by the columns its admin's
    `sortable_by` names."""

    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[Any]:
        # sortable_by only hides the other columns' links: `?o=3` typed into the URL still
        # sorted by column 3, on a big table a sort of the whole table. Without a sortable
        # column left, the admin's own order stands.
        if self.sortable_by is not None and ORDER_VAR in self.params:
            kept = [p for p in self.params[ORDER_VAR].split(".") if self._sortable(p)]
            if kept:
                self.params[ORDER_VAR] = ".".join(kept)
            else:
                del self.params[ORDER_VAR]
        return super().get_ordering(request, queryset)

    def _sortable(self, order_param: str) -> bool:
        """Whether `order_param` ("3", "-3") names a column of `sortable_by`."""
        try:
            column = self.list_display[int(order_param.rpartition("-")[2])]
        except (IndexError, ValueError):
            return False
        return self.sortable_by is not None and column in self.sortable_by

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        queryset = super().get_queryset(request, exclude_parameters)
        # Every filter (Django's own, the typed ones, lookups in the URL) at once, whatever
        # builds its query.
        if any(matches_no_row(v) for values in self.filter_params.values() for v in values):
            return queryset.none()
        return queryset


def is_id(model: type[Model], value: Any) -> bool:
    """Whether a posted `value` can be a `model` row's id. Django's admin looks a posted id up
    before any form or action of ours sees it: one that cannot be an id ("abc", posted by hand)
    was a ValueError there, a 500."""
    try:
        model._meta.pk.to_python(value)
    except ValidationError:
        return False
    return True


class ConsoleLists(admin.ModelAdmin):
    """A model admin whose list is a ConsoleChangeList, and whose actions run only on a
    selection of ids."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ConsoleChangeList

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if request.method == "POST" and not all(is_id(self.model, pk) for pk in selected):
            self.message_user(
                request,
                "The selection holds something that is not a row's id; nothing was changed.",
                messages.ERROR,
            )
            return HttpResponseRedirect(request.get_full_path())
        return super().changelist_view(request, extra_context)


class IdChoiceField(forms.ModelChoiceField):
    """A row chosen by its id (the admin's autocomplete): the widget looks the posted value up
    again to show the form with its errors, so a value that cannot be an id shows as none."""

    def bound_data(self, data: Any, initial: Any) -> Any:
        data = super().bound_data(data, initial)
        if data in self.empty_values or self.queryset is None or is_id(self.queryset.model, data):
            return data
        return None


class NoFormWrites:
    """No add, change or delete through the admin's forms, for model admins and inlines."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyModelAdmin(ConsoleLists, UtcTimes, NoFormWrites, admin.ModelAdmin):
    """Shown, never edited through a form. Actions that call services are the only writes;
    they need the model's Django `change` permission (see `has_operate_permission`), which the
    read-only operators' group does not have."""

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """May run this admin's actions: holds the model's `change` permission."""
        opts = self.opts
        codename = get_permission_codename("change", opts)
        return bool(request.user.has_perm(f"{opts.app_label}.{codename}"))


@dataclass(frozen=True)
class ObjectTool:
    """A button at the top of an object's page: posts to `url` (an action), or opens it."""

    label: str
    url: str
    post: bool = True


class ObjectActions(admin.ModelAdmin):
    """Buttons on an object's page for the actions of its list, each run on that object alone:
    the same function, permission and confirmation page, posted to
    `<object>/actions/<action>/`. Only the actions the user may run (`get_actions`) and that
    apply to the object as it is (`object_actions_for`) get a button."""

    change_form_template = "admin/kinetic/change_form.html"
    object_actions: ClassVar[dict[str, str]] = {}  # action -> its button's label, in order

    def object_actions_for(self, obj: Any) -> list[str]:
        return list(self.object_actions)

    def object_tools(self, request: HttpRequest, obj: Any) -> list[ObjectTool]:
        allowed = self.get_actions(request)
        name = f"admin:{self.opts.app_label}_{self.opts.model_name}_object_action"
        return [
            ObjectTool(self.object_actions[action], reverse(name, args=[obj.pk, action]))
            for action in self.object_actions_for(obj)
            if action in allowed
        ]

    def get_urls(self) -> list[URLPattern]:
        run = path(
            "<path:object_id>/actions/<str:action>/",
            self.admin_site.admin_view(require_POST(self.object_action_view)),
            name=f"{self.opts.app_label}_{self.opts.model_name}_object_action",
        )
        return [run, *super().get_urls()]

    def object_action_view(
        self, request: HttpRequest, object_id: str, action: str
    ) -> HttpResponseBase:
        """Runs `action` on the one object; a page the action answers with (a confirmation)
        posts back here, and otherwise the object's page follows, with the action's message."""
        allowed = self.get_actions(request).get(action)
        if action not in self.object_actions or allowed is None:
            raise PermissionDenied
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404("No such object.")
        func = allowed[0]
        response = func(self, request, self.get_queryset(request).filter(pk=obj.pk))
        if isinstance(response, HttpResponseBase):
            return response
        opts = self.opts
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        response = super().change_view(request, object_id, form_url, extra_context)
        # The page's own object, as the admin loaded it: no second query for the buttons.
        if isinstance(response, TemplateResponse) and response.context_data:
            obj = response.context_data.get("original")
            if obj is not None:
                response.context_data["object_tools"] = self.object_tools(request, obj)
        return response


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


class ReadOnlyTabularInline(UtcTimes, NoFormWrites, admin.TabularInline):
    """Rows as a plain table: no form, and no line for each row's `__str__` ("6#1 View"), which
    Django's tabular template shows above the row; a column links to the row instead."""

    template = "admin/kinetic/readonly_tabular.html"
    extra = 0
    can_delete = False
    show_change_link = False


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
