"""A list request's query string: `limit`, `starting_after`, `ending_before` (core.pagination
walks the pages)."""

from django.http import QueryDict

from api.errors import ApiError
from core.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRequest

LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before"})


def parse_page_request(params: QueryDict) -> PageRequest:
    raw_limit = params.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        valid = raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIMIT
        if not valid:
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
