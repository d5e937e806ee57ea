"""The API under load: list, retrieve and create, against idiomatic DRF as the peer.

The peer (`bench.urls`) answers the same list and retrieve as DRF's generic views write them:
ModelSerializer, CursorPagination, an ORM queryset, an ORM key check. The targets compare the
API with it. The bare view (no DRF, no query) stays as a reference figure without a target.

Create runs twice. `create` registers a public IP-literal URL, so it measures the API's own
path (validation, two INSERTs, a Fernet encryption). `create_dns` registers a host name: the
production URL policy then resolves it on the request path (`webhooks.url_policy.resolve`,
2 s timeout), so that row shows what the resolver costs a create.

The reads are measured in turns (`measure_interleaved`): their ratios are the targets, and this
machine's speed drifts between ten-second blocks taken one after the other.
"""

import json

from bench import seed
from bench.report import Section
from bench.workloads import Context, check, count_queries, http, measure, measure_interleaved

ROUNDS = 5  # turns of the reads: 2 s each in a full run, 1 s with --quick
API_ENDPOINTS = 1_000  # the list workload's environment: full pages and has_more
CREATE_BODY = json.dumps({"url": "https://93.184.215.14/bench/created"})
CREATE_DNS_BODY = json.dumps({"url": "https://hooks.example.com/bench/created"})
READS = ("bare", "list", "retrieve", "drf_list", "drf_retrieve")
# Each read the targets compare, and its peer's.
PEERS = {"list": "drf_list", "retrieve": "drf_retrieve"}
Requests = dict[str, tuple[str, dict[str, str], str | None, int]]  # path, headers, body, status

LABELS = {
    "bare": "GET /bench/bare (bare Django view, no query)",
    "list": "GET /v1/webhook_endpoints?limit=20",
    "retrieve": "GET /v1/webhook_endpoints/{id}",
    "drf_list": "GET /bench/drf/webhook_endpoints (DRF peer)",
    "drf_retrieve": "GET /bench/drf/webhook_endpoints/{id} (DRF peer)",
    "create": "POST /v1/webhook_endpoints (IP URL)",
    "create_dns": "POST /v1/webhook_endpoints (host URL, DNS)",
}


def run(ctx: Context) -> Section:
    tenant = seed.tenant("bench-api")
    seed.endpoints(tenant.environment, API_ENDPOINTS)
    requests = requests_for(tenant)
    base = ctx.server.base_url
    check_answers(base, requests)
    section = Section(key="api", title="API throughput and latency")
    sql = {
        name: count_queries(path, headers, body, expect=status)[0]
        for name, (path, headers, body, status) in requests.items()
    }
    # The reads in turns (see measure_interleaved); then the creates, one after the other
    # (they add rows).
    reads = {name: (LABELS[name], base + requests[name][0], requests[name][1]) for name in READS}
    measured = measure_interleaved(ctx, reads, rounds=ROUNDS, sql_per_request=sql)
    for name in ("create", "create_dns"):
        path, headers, body, _ = requests[name]
        measured[name] = measure(
            ctx, LABELS[name], base + path, headers=headers, body=body, sql_per_request=sql[name]
        )
    figures: dict[str, float] = {}
    for name, measurement in measured.items():
        section.measurements.append(measurement)
        result = measurement.result
        figures[f"api_{name}_rps"] = round(result.rps, 1)
        figures[f"api_{name}_p50_ms"] = round(result.p50_ms, 3)
        figures[f"api_{name}_p99_ms"] = round(result.p99_ms, 3)

    for ours, theirs in PEERS.items():
        peer_rps = figures[f"api_{theirs}_rps"]
        ratio = figures[f"api_{ours}_rps"] / peer_rps if peer_rps else 0.0
        figures[f"api_{ours}_drf_ratio"] = round(ratio, 3)
        section.summary.append(f"{ours}/DRF = {ratio:.2f} (req/s of {ours} / req/s of {theirs})")
    ctx.metrics.update(figures)
    dns_p99 = figures["api_create_dns_p99_ms"]
    if dns_p99 >= 1000:
        section.summary.append(
            f"create with a host name: p99 {dns_p99:,.0f} ms; the URL check's DNS lookup "
            "(webhooks.url_policy.resolve, 2 s timeout) waited on a slow resolver"
        )
    return section


def requests_for(tenant: seed.Tenant) -> Requests:
    """Each workload's request, against the tenant's endpoints (seed.endpoints made them)."""
    endpoint_id = seed.public_id_at(tenant.environment, 10)
    collection, peer = "/v1/webhook_endpoints", "/bench/drf/webhook_endpoints"
    return {
        "bare": ("/bench/bare", {}, None, 200),
        "list": (f"{collection}?limit=20", tenant.headers, None, 200),
        "retrieve": (f"{collection}/{endpoint_id}", tenant.headers, None, 200),
        "drf_list": (peer, tenant.headers, None, 200),
        "drf_retrieve": (f"{peer}/{endpoint_id}", tenant.headers, None, 200),
        "create": (collection, tenant.headers, CREATE_BODY, 201),
        "create_dns": (collection, tenant.headers, CREATE_DNS_BODY, 201),
    }


def check_answers(base: str, requests: Requests) -> None:
    """Each URL answers what it should before it is measured, and the peer shows the same
    endpoints as the API: otherwise the two would not be doing the same work."""
    http(base + "/bench/bare", headers={})
    headers = requests["list"][1]
    page = http(base + requests["list"][0], headers=headers)
    check(len(page["data"]) == 20 and page["has_more"], f"unexpected list page: {page}")
    drf_page = http(base + requests["drf_list"][0], headers=headers)
    check(
        drf_page["results"] == page["data"] and drf_page["next"],
        f"the DRF peer's page differs from the API's: {drf_page}",
    )
    found = http(base + requests["retrieve"][0], headers=headers)
    check(found == page["data"][10], f"unexpected retrieve: {found}")
    drf_found = http(base + requests["drf_retrieve"][0], headers=headers)
    check(drf_found == found, f"the DRF peer's retrieve differs from the API's: {drf_found}")
    path, _, body, status = requests["create"]
    created = http(base + path, headers=headers, body=body, expect=status)
    check(created.get("signing_secret", "").startswith("whsec_"), f"unexpected create: {created}")
