"""The API under load: list, retrieve and create, against a bare Django view as the baseline.

Create runs twice. `create` registers a public IP-literal URL, so it measures the API's own
path (validation, two INSERTs, a Fernet encryption). `create_dns` registers a host name: the
production URL policy then resolves it on the request path (`webhooks.url_policy.resolve`,
2 s timeout), so that row shows what the resolver costs a create.

The bare view, list and retrieve are measured in turns (`measure_interleaved`): their ratios are
the targets, and on this VM the machine's speed drifted between the ten-second blocks they used
to get one after the other (list/bare read 0.37 to 0.53 from one run to the next with the same
code).
"""

import json

from bench import seed
from bench.report import Section
from bench.workloads import Context, check, count_queries, http, measure, measure_interleaved

ROUNDS = 5  # turns of bare, list and retrieve: 2 s each in a full run, 1 s with --quick
API_ENDPOINTS = 1_000  # the list workload's environment: full pages and has_more
CREATE_BODY = json.dumps({"url": "https://93.184.215.14/bench/created"})
CREATE_DNS_BODY = json.dumps({"url": "https://hooks.example.com/bench/created"})

LABELS = {
    "bare": "GET /bench/bare (bare Django view)",
    "bare_query": "GET /bench/bare_query (bare view + the list's SQL)",
    "list": "GET /v1/webhook_endpoints?limit=20",
    "retrieve": "GET /v1/webhook_endpoints/{id}",
    "create": "POST /v1/webhook_endpoints (IP URL)",
    "create_dns": "POST /v1/webhook_endpoints (host URL, DNS)",
}


def run(ctx: Context) -> Section:
    tenant = seed.tenant("bench-api")
    seed.endpoints(tenant.environment, API_ENDPOINTS)
    endpoint_id = seed.public_id_at(tenant.environment, 10)
    base = ctx.server.base_url
    collection = "/v1/webhook_endpoints"
    requests = {  # name: (path, headers, body, expected status)
        "bare": ("/bench/bare", {}, None, 200),
        "bare_query": ("/bench/bare_query", tenant.headers, None, 200),
        "list": (f"{collection}?limit=20", tenant.headers, None, 200),
        "retrieve": (f"{collection}/{endpoint_id}", tenant.headers, None, 200),
        "create": (collection, tenant.headers, CREATE_BODY, 201),
        "create_dns": (collection, tenant.headers, CREATE_DNS_BODY, 201),
    }

    http(base + "/bench/bare", headers={})
    http(base + "/bench/bare_query", headers=tenant.headers)  # 500 unless it read 21 rows
    page = http(base + requests["list"][0], headers=tenant.headers)
    check(len(page["data"]) == 20 and page["has_more"], f"unexpected list page: {page}")
    found = http(base + requests["retrieve"][0], headers=tenant.headers)
    check(found["webhook_endpoint_id"] == endpoint_id, f"unexpected retrieve: {found}")
    created = http(base + collection, headers=tenant.headers, body=CREATE_BODY, expect=201)
    check(created.get("signing_secret", "").startswith("whsec_"), f"unexpected create: {created}")

    section = Section(key="api", title="API throughput and latency")
    sql = {
        name: count_queries(path, headers, body, expect=status)[0]
        for name, (path, headers, body, status) in requests.items()
    }
    # The reads and their baseline in turns (see measure_interleaved); then the creates, one
    # after the other (they add rows).
    reads = {
        name: (LABELS[name], base + requests[name][0], requests[name][1])
        for name in ("bare", "bare_query", "list", "retrieve")
    }
    measured = measure_interleaved(ctx, reads, rounds=ROUNDS, sql_per_request=sql)
    for name in ("create", "create_dns"):
        path, headers, body, _ = requests[name]
        measured[name] = measure(
            ctx, LABELS[name], base + path, headers=headers, body=body, sql_per_request=sql[name]
        )
    for name, measurement in measured.items():
        section.measurements.append(measurement)
        result = measurement.result
        ctx.metrics[f"api_{name}_rps"] = round(result.rps, 1)
        ctx.metrics[f"api_{name}_p50_ms"] = round(result.p50_ms, 3)
        ctx.metrics[f"api_{name}_p99_ms"] = round(result.p99_ms, 3)

    bare = ctx.metrics["api_bare_rps"]
    for name in ("list", "retrieve", "create"):
        ratio = ctx.metrics[f"api_{name}_rps"] / bare if bare else 0.0
        ctx.metrics[f"api_{name}_bare_ratio"] = round(ratio, 3)
        section.summary.append(f"{name}/bare = {ratio:.3f} (req/s of {name} / req/s of bare)")
    # The share of the bare view's rate left once a request reads PostgreSQL at all, and the
    # share of that a list keeps (its own work in Python: auth, DRF, rows, JSON).
    with_query = ctx.metrics["api_bare_query_rps"]
    ctx.metrics["api_bare_query_bare_ratio"] = round(with_query / bare if bare else 0.0, 3)
    ctx.metrics["api_list_bare_query_ratio"] = round(
        ctx.metrics["api_list_rps"] / with_query if with_query else 0.0, 3
    )
    section.summary.append(
        f"bare_query/bare = {ctx.metrics['api_bare_query_bare_ratio']:.3f}, "
        f"list/bare_query = {ctx.metrics['api_list_bare_query_ratio']:.3f}"
    )
    dns_p99 = ctx.metrics["api_create_dns_p99_ms"]
    if dns_p99 >= 1000:
        section.summary.append(
            f"create with a host name: p99 {dns_p99:,.0f} ms; the URL check's DNS lookup "
            "(webhooks.url_policy.resolve, 2 s timeout) waited on a slow resolver"
        )
    return section
