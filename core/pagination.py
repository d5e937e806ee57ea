"""Keyset pages: `limit`, `starting_after`, `ending_before`, newest first.

Keyset on (created_at, id): a page costs the same at row 1 and row 1,000,000 (no OFFSET, no
COUNT), and stays stable while rows are added and removed around the cursor. `keyset_page` is
the one walk of the project; it reads its rows from a queryset (`QuerySetKeyset`, the ORM's) or
from a `KeysetSql` (a hand-written SELECT, for the API's hottest list, which finds the cursor in
the page's own statement).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from django.db.models import Model, Q, QuerySet

from core.errors import InvalidInput
from core.ids import is_public_id
from core.sql import ModelRows, fetch_all

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
    """Where a walk reads its rows, each page around the cursor's public id (within the same
    scope as the rows); None when there is no such cursor there."""

    def newest(self, fetch: int) -> Sequence[T_co]: ...
    def older(self, cursor_id: str, fetch: int) -> Sequence[T_co] | None: ...
    def newer(self, cursor_id: str, fetch: int) -> Sequence[T_co] | None: ...


def keyset_page(rows: Keyset[T], page: PageRequest, object_name: str) -> Page[T]:
    """One page of `rows` (already scoped to the caller), newest first. A cursor the caller
    cannot see is refused (InvalidInput on the cursor's parameter), never a page of someone
    else's rows."""
    fetch = page.limit + 1
    cursor_id = page.cursor_id
    if cursor_id is None:
        return _page(list(rows.newest(fetch)), page.limit, backwards=False)
    if page.ending_before is not None:
        # Walk towards newer rows, then present them newest first like every page.
        found, backwards = rows.newer(cursor_id, fetch), True
    else:
        found, backwards = rows.older(cursor_id, fetch), False
    if found is None:
        raise InvalidInput(page.cursor_param, f"No such {object_name}: '{cursor_id[:100]}'.")
    return _page(list(found), page.limit, backwards=backwards)


class QuerySetKeyset(Generic[M]):
    """The walk's rows from a queryset; `find_cursor(id)` returns the cursor object within the
    caller's scope, or None."""

    def __init__(self, queryset: QuerySet[M], find_cursor: Callable[[str], Any | None]) -> None:
        self.queryset = queryset
        self.find_cursor = find_cursor

    def newest(self, fetch: int) -> list[M]:
        return list(self.queryset.order_by("-created_at", "-id")[:fetch])

    def older(self, cursor_id: str, fetch: int) -> list[M] | None:
        if (cursor := self.find_cursor(cursor_id)) is None:
            return None
        # `created_at <=` bounds the index range; the OR only settles ties at the boundary.
        rows = self.queryset.filter(
            Q(created_at__lte=cursor.created_at),
            Q(created_at__lt=cursor.created_at) | Q(id__lt=cursor.id),
        )
        return list(rows.order_by("-created_at", "-id")[:fetch])

    def newer(self, cursor_id: str, fetch: int) -> list[M] | None:
        if (cursor := self.find_cursor(cursor_id)) is None:
            return None
        rows = self.queryset.filter(
            Q(created_at__gte=cursor.created_at),
            Q(created_at__gt=cursor.created_at) | Q(id__gt=cursor.id),
        )
        return list(rows.order_by("created_at", "id")[:fetch])


class KeysetSql(Generic[M]):
    """The walk's statements over a hand-written SELECT of `rows`' model, built once: `where`
    scopes it (with `%s` for the parameters `within` takes), the same conditions as
    QuerySetKeyset's after it. Pages hold records (ModelRows.record), not instances.

    The cursor is the row of that scope whose public id (of `id_prefix`) is asked for, read in
    the page's own statement: a page after a cursor costs one statement,
    like the first. Only an empty page asks again, to tell the end of the walk from a cursor
    that is not there."""

    def __init__(self, rows: ModelRows[M], where: str, id_prefix: str) -> None:
        self.rows = rows
        self.id_prefix = id_prefix
        created, pk = rows.column["created_at"], rows.column["id"]
        head = f"SELECT {rows.select} FROM {rows.table} WHERE {where}"  # noqa: S608  no values
        newest_first = f"ORDER BY {created} DESC, {pk} DESC LIMIT %s"
        self.newest_sql = f"{head} {newest_first}"
        # The cursor's keys, in a scope of their own under the same alias: no such row makes
        # the subqueries NULL, and the page empty.
        found = (
            f"SELECT {created} AS at, {pk} AS pk FROM {rows.table} "  # noqa: S608  no values
            f"WHERE {where} AND {rows.column['public_id']} = %s"
        )

        def past_cursor(before: str) -> str:
            # `created <=` bounds the index range; the OR only settles ties at the boundary.
            return (
                f"WITH c AS ({found}) {head} "  # noqa: S608  no values
                f"AND {created} {before}= (SELECT at FROM c) "
                f"AND ({created} {before} (SELECT at FROM c) OR {pk} {before} (SELECT pk FROM c))"
            )

        self.older_sql = f"{past_cursor('<')} {newest_first}"
        self.newer_sql = f"{past_cursor('>')} ORDER BY {created}, {pk} LIMIT %s"
        self.cursor_sql = f"{found} LIMIT 1"

    def within(self, params: Sequence[Any]) -> "_ScopedSql[M]":
        """The walk's rows in one scope: `params` fill `where`'s `%s`."""
        return _ScopedSql(self, list(params))


class _ScopedSql(Generic[M]):
    def __init__(self, query: KeysetSql[M], params: list[Any]) -> None:
        self.query, self.params = query, params

    def newest(self, fetch: int) -> list[Any]:
        return self._fetch(self.query.newest_sql, [*self.params, fetch])

    def older(self, cursor_id: str, fetch: int) -> list[Any] | None:
        return self._around(self.query.older_sql, cursor_id, fetch)

    def newer(self, cursor_id: str, fetch: int) -> list[Any] | None:
        return self._around(self.query.newer_sql, cursor_id, fetch)

    def _around(self, sql: str, cursor_id: str, fetch: int) -> list[Any] | None:
        # An id that cannot exist (NUL bytes, megabytes) never reaches the database.
        if not is_public_id(cursor_id, self.query.id_prefix):
            return None
        found = self._fetch(sql, [*self.params, cursor_id, *self.params, fetch])
        if found or fetch_all(self.query.cursor_sql, [*self.params, cursor_id]):
            return found
        return None

    def _fetch(self, sql: str, params: list[Any]) -> list[Any]:
        return [self.query.rows.record(row) for row in fetch_all(sql, params)]


def _page(rows: list[T], limit: int, backwards: bool) -> Page[T]:
    """A page of the `limit + 1` rows fetched, newest first (a backward walk fetched oldest
    first, towards newer rows)."""
    has_more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return Page(items=rows, has_more=has_more)
