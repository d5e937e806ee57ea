"""The API key scopes: one list, used by keys, views, commands and the admin."""

WEBHOOK_ENDPOINTS_READ = "webhook_endpoints:read"
WEBHOOK_ENDPOINTS_WRITE = "webhook_endpoints:write"
EVENTS_READ = "events:read"
EVENTS_WRITE = "events:write"

SCOPES: dict[str, str] = {
    WEBHOOK_ENDPOINTS_READ: "List and retrieve webhook endpoints.",
    WEBHOOK_ENDPOINTS_WRITE: "Create, update, delete webhook endpoints and rotate their secrets.",
    EVENTS_READ: "Read events and their deliveries.",
    EVENTS_WRITE: "Publish events.",
}


def parse_scopes(raw: str) -> list[str]:
    """`"a,b"` -> `["a", "b"]`, refusing unknown scopes; order kept, duplicates dropped."""
    scopes = list(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(
            f"unknown scope(s): {', '.join(unknown)}; known scopes: {', '.join(SCOPES)}"
        )
    if not scopes:
        raise ValueError("at least one scope is needed")
    return scopes
