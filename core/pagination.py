"""Keyset pages: `limit`, `starting_after`, `ending_before`, newest first.

Keyset on (created_at, id): a page costs the same at row 1 and row 1,000,000 (no OFFSET, no
COUNT), and stays stable while rows are added and removed around the cursor. `keyset_page` is
the one walk of the project; it reads its rows from a queryset (the ORM's) or from a
`KeysetSql` (a hand-written SELECT, for the API's hottest list).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from django.db.models import Model, Q, QuerySet

from core.errors import InvalidInput
from core.sql import ModelRows, db_time, fetch_all

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

M = TypeVar("M", bound=Model)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    starting_after: str | None = None
    ending_before: str | None = None

    @property
    def cursor_id(self) -> str | None:
        """The id the page starts after or ends before; None for the first page."""
        return self.starting_after if self.ending_before is None else self.ending_before

    @property
    def cursor_param(self) -> str:
        return "starting_after" if self.ending_before is None else "ending_before"


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


class Keyset(Protocol[T_co]):
    """Where a walk reads its rows; `at` is the cursor's (created_at, id)."""

    def newest(self, fetch: int) -> Sequence[T_co]: ...
    def older(self, at: tuple[datetime, int], fetch: int) -> Sequence[T_co]: ...
    def newer(self, at: tuple[datetime, int], fetch: int) -> Sequence[T_co]: ...


def keyset_page(
    rows: "QuerySet[M] | Keyset[T]",
    page: PageRequest,
    find_cursor: Callable[[str], Any | None],
    object_name: str,
) -> Page[Any]:
    """One page of `rows` (already scoped to the caller), newest first.

    `find_cursor(id)` returns the cursor object within the same scope, or None: an id the
    caller cannot see is refused (InvalidInput on the cursor's parameter), never a page of
    someone else's rows.
    """
    source: Keyset[Any] = QuerySetKeyset(rows) if isinstance(rows, QuerySet) else rows
    fetch = page.limit + 1
    cursor_id = page.cursor_id
    if cursor_id is None:
        return _page(list(source.newest(fetch)), page.limit, backwards=False)
    cursor = find_cursor(cursor_id)
    if cursor is None:
        raise InvalidInput(page.cursor_param, f"No such {object_name}: '{cursor_id[:100]}'.")
    at = (cursor.created_at, cursor.id)
    if page.ending_before is not None:
        # Walk towards newer rows, then present them newest first like every page.
        return _page(list(source.newer(at, fetch)), page.limit, backwards=True)
    return _page(list(source.older(at, fetch)), page.limit, backwards=False)


class QuerySetKeyset(Generic[M]):
    """The walk's rows from a queryset."""

    def __init__(self, queryset: QuerySet[M]) -> None:
        self.queryset = queryset

    def newest(self, fetch: int) -> list[M]:
        return list(self.queryset.order_by("-created_at", "-id")[:fetch])

    def older(self, at: tuple[datetime, int], fetch: int) -> list[M]:
        created_at, pk = at
        # `created_at <=` bounds the index range; the OR only settles ties at the boundary.
        rows = self.queryset.filter(
            Q(created_at__lte=created_at), Q(created_at__lt=created_at) | Q(id__lt=pk)
        )
        return list(rows.order_by("-created_at", "-id")[:fetch])

    def newer(self, at: tuple[datetime, int], fetch: int) -> list[M]:
        created_at, pk = at
        rows = self.queryset.filter(
            Q(created_at__gte=created_at), Q(created_at__gt=created_at) | Q(id__gt=pk)
        )
        return list(rows.order_by("created_at", "id")[:fetch])


class KeysetSql(Generic[M]):
    """The walk's statements over a hand-written SELECT of `rows`' model, built once: `where`
    scopes it (with `%s` for the parameters `within` takes), the same conditions as
    QuerySetKeyset's after it. Pages hold records (ModelRows.record), not instances."""

    def __init__(self, rows: ModelRows[M], where: str) -> None:
        self.rows = rows
        created, pk = rows.column["created_at"], rows.column["id"]
        head = f"SELECT {rows.select} FROM {rows.table} WHERE {where}"  # noqa: S608  no values
        newest_first = f"ORDER BY {created} DESC, {pk} DESC LIMIT %s"
        self.newest_sql = f"{head} {newest_first}"
        self.older_sql = (
            f"{head} AND {created} <= %s AND ({created} < %s OR {pk} < %s) {newest_first}"
        )
        self.newer_sql = (
            f"{head} AND {created} >= %s AND ({created} > %s OR {pk} > %s) "
            f"ORDER BY {created}, {pk} LIMIT %s"
        )

    def within(self, params: Sequence[Any]) -> "_ScopedSql[M]":
        """The walk's rows in one scope: `params` fill `where`'s `%s`."""
        return _ScopedSql(self, list(params))


class _ScopedSql(Generic[M]):
    def __init__(self, query: KeysetSql[M], params: list[Any]) -> None:
        self.query, self.params = query, params

    def newest(self, fetch: int) -> list[Any]:
        return self._fetch(self.query.newest_sql, [fetch])

    def older(self, at: tuple[datetime, int], fetch: int) -> list[Any]:
        return self._fetch(self.query.older_sql, [*_around(at), fetch])

    def newer(self, at: tuple[datetime, int], fetch: int) -> list[Any]:
        return self._fetch(self.query.newer_sql, [*_around(at), fetch])

    def _fetch(self, sql: str, params: list[Any]) -> list[Any]:
        rows = fetch_all(sql, [*self.params, *params])
        return [self.query.rows.record(row) for row in rows]


def _around(at: tuple[datetime, int]) -> list[Any]:
    created_at, pk = at
    return [db_time(created_at), db_time(created_at), pk]


def _page(rows: list[T], limit: int, backwards: bool) -> Page[T]:
    """A page of the `limit + 1` rows fetched, newest first (a backward walk fetched oldest
    first, towards newer rows)."""
    has_more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return Page(items=rows, has_more=has_more)
