"""Cursor pages in the reference's style: `limit`, `starting_after`, `ending_before`.

Keyset on (created_at, id), newest first: a page costs the same at row 1 and row 1,000,000
(no OFFSET, no COUNT), and stays stable while rows are added and removed around the cursor.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db.models import Model, Q, QuerySet
from django.http import QueryDict

from api.errors import ApiError
from api.sql import EnvironmentRead, db_time, fetch_all

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before"})

M = TypeVar("M", bound=Model)
T = TypeVar("T")


@dataclass(frozen=True)
class PageRequest:
    limit: int
    starting_after: str | None
    ending_before: str | None

    @property
    def cursor_id(self) -> str | None:
        """The id the page starts after or ends before; None for the first page."""
        return self.starting_after if self.ending_before is None else self.ending_before


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


def parse_page_request(params: QueryDict) -> PageRequest:
    raw_limit = params.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not (
            1 <= int(raw_limit) <= MAX_LIMIT
        ):
            raise ApiError(
                "parameter_invalid",
                f"limit must be an integer from 1 to {MAX_LIMIT}.",
                param="limit",
            )
        limit = int(raw_limit)
    after, before = params.get("starting_after"), params.get("ending_before")
    if after is not None and before is not None:
        raise ApiError(
            "parameter_invalid",
            "Send starting_after or ending_before, not both.",
            param="ending_before",
        )
    for name, value in (("starting_after", after), ("ending_before", before)):
        if value is not None and not value:
            raise ApiError("parameter_invalid", f"{name} must be an object id.", param=name)
    return PageRequest(limit=limit, starting_after=after, ending_before=before)


def page_request_or_none(params: QueryDict) -> PageRequest | None:
    """The page asked for, for ApiViewSet.first_read; None when the query string is invalid
    (the view answers that once the caller is known)."""
    try:
        return parse_page_request(params)
    except ApiError:
        return None


def keyset_page(
    queryset: QuerySet[M],
    page: PageRequest,
    find_cursor: Callable[[str], Any | None],
    object_name: str,
) -> Page[M]:
    """One page of `queryset` (already scoped to the caller), newest first.

    `find_cursor(id)` returns the cursor object within the same scope, or None: an id the
    caller cannot see is a 400, never a page of someone else's rows.
    """
    cursor, backwards = _cursor(page, find_cursor, object_name)
    if cursor is not None and backwards:
        # Walk towards newer rows, then present them newest first like every page.
        rows = list(
            queryset.filter(
                Q(created_at__gte=cursor.created_at),
                Q(created_at__gt=cursor.created_at) | Q(id__gt=cursor.id),
            ).order_by("created_at", "id")[: page.limit + 1]
        )
        return _page(rows, page.limit, backwards)
    if cursor is not None:
        # `created_at <=` bounds the index range; the OR only settles ties at the boundary.
        queryset = queryset.filter(
            Q(created_at__lte=cursor.created_at),
            Q(created_at__lt=cursor.created_at) | Q(id__lt=cursor.id),
        )
    rows = list(queryset.order_by("-created_at", "-id")[: page.limit + 1])
    return _page(rows, page.limit, backwards=False)


class KeysetSql:
    """`keyset_page`'s walk written in SQL, for lists too hot for the ORM (see api.sql).

    `select` is the column list; `source` the FROM and WHERE that scope the rows to one
    environment (`{environment}` where its id goes, as in api.sql.EnvironmentRead); `alias`
    the table whose (created_at, id) orders them, also selected last (`keyset_created_at`,
    `keyset_id`). There are three statements: the first page (which can ride on the API key
    check, `keyset_first_read`), after a cursor, and before one.

    The number of rows to fetch is written into each statement, not passed as a parameter: the
    statements are prepared (api.sql), and PostgreSQL's plan for a prepared `LIMIT $n` assumes
    a tenth of the rows, so in an environment of 100,000 endpoints it never settled on a
    generic plan and planned every execution again (pg_prepared_statements: custom_plans
    only), ~0.3 ms of its CPU a request. One statement per page size (1 to 101) instead.
    """

    def __init__(self, *, select: str, source: str, alias: str) -> None:
        created, id_ = f"{alias}.created_at", f"{alias}.id"
        keys = f"{created} AS keyset_created_at, {id_} AS keyset_id"
        head = f"SELECT {select}, {keys} FROM {source}"  # noqa: S608  no values: parameters only
        newest_first = f"ORDER BY {created} DESC, {id_} DESC LIMIT {{fetch}}"
        self._first = f"{head} {newest_first}"
        head = head.replace("{environment}", "%s")
        self._after = (
            f"{head} AND {created} <= %s AND ({created} < %s OR {id_} < %s) {newest_first}"
        )
        self._before = (
            f"{head} AND {created} >= %s AND ({created} > %s OR {id_} > %s) "
            f"ORDER BY {created}, {id_} LIMIT {{fetch}}"
        )
        self._first_reads: dict[int, EnvironmentRead] = {}

    def first(self, fetch: int) -> EnvironmentRead:
        """The first page, `fetch` rows of it (the same object for the same size)."""
        read = self._first_reads.get(fetch)
        if read is None:
            read = self._first_reads.setdefault(
                fetch,
                EnvironmentRead(
                    _fetching(self._first, fetch),
                    order_by="keyset_created_at DESC, keyset_id DESC",
                ),
            )
        return read

    def after(self, fetch: int) -> str:
        return _fetching(self._after, fetch)

    def before(self, fetch: int) -> str:
        return _fetching(self._before, fetch)


def _fetching(sql: str, fetch: int) -> str:
    if not 0 < fetch <= MAX_LIMIT + 1:
        raise ValueError(f"cannot fetch {fetch!r} rows")
    return sql.replace("{fetch}", str(int(fetch)))


def keyset_first_read(
    query: KeysetSql,
    page: PageRequest,
    cursor_read: Callable[[str], tuple[EnvironmentRead, list[Any]] | None],
) -> tuple[EnvironmentRead, list[Any]] | None:
    """A page's first read, for ApiViewSet.first_read: the first page itself, or past it the
    cursor's row by its id (`cursor_read`: the page's own query needs the cursor's position,
    found in the caller's environment first)."""
    if page.cursor_id is not None:
        return cursor_read(page.cursor_id)
    return query.first(page.limit + 1), []


def keyset_rows(
    query: KeysetSql,
    environment_id: int,
    page: PageRequest,
    find_cursor: Callable[[str], Any | None],
    object_name: str,
) -> Page[tuple[Any, ...]]:
    """One page of `query`'s rows in the caller's environment."""
    cursor, backwards = _cursor(page, find_cursor, object_name)
    fetch = page.limit + 1
    if cursor is None:
        return _page(fetch_all(query.first(fetch).sql, [environment_id]), page.limit, False)
    created_at = db_time(cursor.created_at)
    sql = query.before(fetch) if backwards else query.after(fetch)
    rows = fetch_all(sql, [environment_id, created_at, created_at, cursor.id])
    return _page(rows, page.limit, backwards)


def _cursor(
    page: PageRequest, find_cursor: Callable[[str], Any | None], object_name: str
) -> tuple[Any | None, bool]:
    """The cursor object (None for the first page), and whether the page lies before it."""
    backwards = page.ending_before is not None
    cursor_param, cursor_id = ("ending_before" if backwards else "starting_after"), page.cursor_id
    if cursor_id is None:
        return None, False
    cursor = find_cursor(cursor_id)
    if cursor is None:
        raise ApiError(
            "parameter_invalid",
            f"No such {object_name}: '{cursor_id[:100]}'.",
            param=cursor_param,
        )
    return cursor, backwards


def _page(rows: list[T], limit: int, backwards: bool) -> Page[T]:
    """A page of the `limit + 1` rows fetched, newest first (a backward walk fetched oldest
    first, towards newer rows)."""
    has_more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return Page(items=rows, has_more=has_more)
