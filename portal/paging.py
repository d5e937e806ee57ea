"""Keyset pages in the portal: the page a query string asks for, and the links to the pages
beside it (core.pagination walks them, as for the API)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import Http404, HttpRequest

from core.errors import InvalidInput
from core.pagination import Page, PageRequest

PAGE_SIZE = 20


def page_request(request: HttpRequest, limit: int = PAGE_SIZE) -> PageRequest:
    """`?starting_after=<id>` (older) or `?ending_before=<id>` (newer); the first page else."""
    before = request.GET.get("ending_before") or None
    after = None if before else request.GET.get("starting_after") or None
    return PageRequest(limit=limit, starting_after=after, ending_before=before)


def page_or_404(fetch: Callable[[PageRequest], Page[Any]], asked: PageRequest) -> Page[Any]:
    """`fetch(asked)`; a cursor that is not one of the environment's objects: the 404 page."""
    try:
        return fetch(asked)
    except InvalidInput:
        raise Http404 from None


@dataclass(frozen=True)
class PageLinks:
    newer: str | None  # a query string, "?..."; None when this is the newest page
    older: str | None


def page_links(
    request: HttpRequest,
    asked: PageRequest,
    page: Page[Any],
    id_of: Callable[[Any], str] = lambda item: item.public_id,
) -> PageLinks:
    """Links that keep the rest of the query string (filters)."""
    if not page.items:
        return PageLinks(newer=None, older=None)
    backwards = asked.ending_before is not None
    has_newer = page.has_more if backwards else asked.starting_after is not None
    has_older = True if backwards else page.has_more

    def link(name: str, item: Any) -> str:
        query = request.GET.copy()
        query.pop("starting_after", None)
        query.pop("ending_before", None)
        query[name] = id_of(item)
        return f"?{query.urlencode()}"

    return PageLinks(
        newer=link("ending_before", page.items[0]) if has_newer else None,
        older=link("starting_after", page.items[-1]) if has_older else None,
    )
