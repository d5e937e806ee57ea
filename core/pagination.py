"""Keyset pages: `limit`, `starting_after`, `ending_before`, newest first.

Keyset on (created_at, id): a page costs the same at row 1 and row 1,000,000 (no OFFSET, no
COUNT), and stays stable while rows are added and removed around the cursor. The one walk of
the project: the API's lists and every other list of pages go through `keyset_page`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db.models import Model, Q, QuerySet

from core.errors import InvalidInput

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

M = TypeVar("M", bound=Model)


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
class Page(Generic[M]):
    items: list[M]
    has_more: bool


def keyset_page(
    queryset: QuerySet[M],
    page: PageRequest,
    find_cursor: Callable[[str], Any | None],
    object_name: str,
) -> Page[M]:
    """One page of `queryset` (already scoped to the caller), newest first.

    `find_cursor(id)` returns the cursor object within the same scope, or None: an id the
    caller cannot see is refused (InvalidInput on the cursor's parameter), never a page of
    someone else's rows.
    """
    cursor_id = page.cursor_id
    if cursor_id is None:
        rows = list(queryset.order_by("-created_at", "-id")[: page.limit + 1])
        return _page(rows, page.limit, backwards=False)
    cursor = find_cursor(cursor_id)
    if cursor is None:
        raise InvalidInput(page.cursor_param, f"No such {object_name}: '{cursor_id[:100]}'.")
    if page.ending_before is not None:
        # Walk towards newer rows, then present them newest first like every page.
        rows = list(
            queryset.filter(
                Q(created_at__gte=cursor.created_at),
                Q(created_at__gt=cursor.created_at) | Q(id__gt=cursor.id),
            ).order_by("created_at", "id")[: page.limit + 1]
        )
        return _page(rows, page.limit, backwards=True)
    # `created_at <=` bounds the index range; the OR only settles ties at the boundary.
    rows = list(
        queryset.filter(
            Q(created_at__lte=cursor.created_at),
            Q(created_at__lt=cursor.created_at) | Q(id__lt=cursor.id),
        ).order_by("-created_at", "-id")[: page.limit + 1]
    )
    return _page(rows, page.limit, backwards=False)


def _page(rows: list[M], limit: int, backwards: bool) -> Page[M]:
    """A page of the `limit + 1` rows fetched, newest first (a backward walk fetched oldest
    first, towards newer rows)."""
    has_more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return Page(items=rows, has_more=has_more)
