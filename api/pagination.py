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

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before"})

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class PageRequest:
    limit: int
    starting_after: str | None
    ending_before: str | None


@dataclass(frozen=True)
class Page(Generic[M]):
    items: list[M]
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
    cursor_param, cursor_id = (
        ("ending_before", page.ending_before)
        if page.ending_before is not None
        else ("starting_after", page.starting_after)
    )
    cursor = None
    if cursor_id is not None:
        cursor = find_cursor(cursor_id)
        if cursor is None:
            raise ApiError(
                "parameter_invalid",
                f"No such {object_name}: '{cursor_id[:100]}'.",
                param=cursor_param,
            )
    if cursor is not None and cursor_param == "ending_before":
        # Walk towards newer rows, then present them newest first like every page.
        rows = list(
            queryset.filter(
                Q(created_at__gte=cursor.created_at),
                Q(created_at__gt=cursor.created_at) | Q(id__gt=cursor.id),
            ).order_by("created_at", "id")[: page.limit + 1]
        )
        has_more = len(rows) > page.limit
        rows = rows[: page.limit]
        rows.reverse()
        return Page(items=rows, has_more=has_more)
    if cursor is not None:
        # `created_at <=` bounds the index range; the OR only settles ties at the boundary.
        queryset = queryset.filter(
            Q(created_at__lte=cursor.created_at),
            Q(created_at__lt=cursor.created_at) | Q(id__lt=cursor.id),
        )
    rows = list(queryset.order_by("-created_at", "-id")[: page.limit + 1])
    return Page(items=rows[: page.limit], has_more=len(rows) > page.limit)
