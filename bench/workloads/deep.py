"""Deep pages: page 1 against a page 90% of the way into a large environment's list.

The contract promises keyset pages "as fast at the millionth row as at the first". This seeds
one sandbox environment, times both pages with wrk, and prints the plan PostgreSQL chose for
the exact SQL the view ran, to show the walk starts at the cursor in the list index (no OFFSET).
The three pages are measured in turns (`measure_interleaved`), so the machine's drift during
the run weighs on them alike.
"""

from django.db import connection

from bench import seed
from bench.config import BenchError
from bench.report import Section
from bench.workloads import Context, check, count_queries, http, measure_interleaved
from webhooks.models import WebhookEndpoint

LIST_INDEX = "webhook_endpoint_list_idx"
DEPTH = 0.9
LIMIT = 20
ROUNDS = 5  # turns of page 1, page 2 and the deep page: 1 s each


def run(ctx: Context) -> Section:
    count = ctx.deep_endpoints
    tenant = seed.tenant("bench-deep")
    print(f"  seeding {count:,} endpoints into one sandbox environment...", flush=True)
    seed_seconds = seed.endpoints(tenant.environment, count)
    print(f"  seeded in {seed_seconds:.1f}s", flush=True)

    position = int(count * DEPTH)
    cursor_id = seed.public_id_at(tenant.environment, position)
    following_id = seed.public_id_at(tenant.environment, position + 1)
    page2_cursor = seed.public_id_at(tenant.environment, LIMIT - 1)
    page1_path = f"/v1/webhook_endpoints?limit={LIMIT}"
    page2_path = f"/v1/webhook_endpoints?limit={LIMIT}&starting_after={page2_cursor}"
    deep_path = f"/v1/webhook_endpoints?limit={LIMIT}&starting_after={cursor_id}"
    base = ctx.server.base_url

    page1 = http(base + page1_path, headers=tenant.headers)
    check(len(page1["data"]) == LIMIT and page1["has_more"], "page 1 is not a full page")
    deep = http(base + deep_path, headers=tenant.headers)
    check(
        len(deep["data"]) == LIMIT
        and deep["has_more"]
        and deep["data"][0]["webhook_endpoint_id"] == following_id,
        f"the deep page does not start right after its cursor: {deep['data'][:1]}",
    )

    page1_sql, _ = count_queries(page1_path, tenant.headers)
    page2_sql, _ = count_queries(page2_path, tenant.headers)
    deep_sql, statements = count_queries(deep_path, tenant.headers)
    section = Section(key="deep", title=f"Deep pages ({count:,} endpoints in one environment)")
    # Page 2 walks from a cursor too: against it, the deep page shows what depth costs alone.
    # The three in turns, as the API's reads (measure_interleaved): their ratios are the figures.
    measured = measure_interleaved(
        ctx,
        {
            "first": (f"page 1 (?limit={LIMIT})", base + page1_path, tenant.headers),
            "second": (f"page 2 (starting_after row {LIMIT})", base + page2_path, tenant.headers),
            "deep": (
                f"deep page (starting_after row {position:,})",
                base + deep_path,
                tenant.headers,
            ),
        },
        rounds=ROUNDS,
        seconds=ctx.deep_measure_s,
        sql_per_request={"first": page1_sql, "second": page2_sql, "deep": deep_sql},
    )
    first, second, deep_m = measured["first"], measured["second"], measured["deep"]
    section.measurements += [first, second, deep_m]

    table = WebhookEndpoint._meta.db_table
    endpoint_sql = [s for s in statements if f'"{table}"' in s]
    uses_offset = any(" OFFSET " in s.upper() for s in statements)
    page_sql = next((s for s in endpoint_sql if f"LIMIT {LIMIT + 1}" in s), None)
    if page_sql is None:
        raise BenchError(f"no page query among the deep request's SQL: {statements}")
    page_plan = explain(page_sql)
    uses_index = LIST_INDEX in page_plan
    for title, statement in (
        ("Deep page query", page_sql),
        *(("Cursor lookup", s) for s in endpoint_sql if s != page_sql),
    ):
        section.blocks.append((f"{title}: the SQL the view ran", statement))
        section.blocks.append(
            (f"{title}: EXPLAIN (ANALYZE, BUFFERS)", explain(statement)),
        )

    ratio = deep_m.result.p50_ms / first.result.p50_ms if first.result.p50_ms else 0.0
    depth_ratio = deep_m.result.p50_ms / second.result.p50_ms if second.result.p50_ms else 0.0
    section.summary += [
        f"deep/page1 p50 = {ratio:.2f} (the deep request also reads its cursor, in its page's "
        f"statement: {deep_sql} SQL statements against {page1_sql})",
        f"deep/page2 p50 = {depth_ratio:.2f} (both read a cursor: what depth alone costs)",
        f"seeded {count:,} endpoints in {seed_seconds:.1f}s "
        f"({count / seed_seconds:,.0f} rows/s, one INSERT ... SELECT generate_series)",
        f"deep page plan uses {LIST_INDEX}: {'yes' if uses_index else 'NO'}; "
        f"OFFSET in the request's SQL: {'YES' if uses_offset else 'none'}",
    ]
    ctx.metrics.update(
        {
            "deep_page_p50_ms": round(deep_m.result.p50_ms, 3),
            "page1_p50_ms": round(first.result.p50_ms, 3),
            "deep_page_ratio": round(ratio, 3),
            "page2_p50_ms": round(second.result.p50_ms, 3),
            "deep_vs_page2_ratio": round(depth_ratio, 3),
            "deep_page_p99_ms": round(deep_m.result.p99_ms, 3),
            "page1_p99_ms": round(first.result.p99_ms, 3),
            "deep_page_rps": round(deep_m.result.rps, 1),
            "page1_rps": round(first.result.rps, 1),
            "deep_page_endpoints": count,
            "deep_page_uses_list_index": uses_index,
            "deep_seed_seconds": round(seed_seconds, 2),
        }
    )
    check(uses_index and not uses_offset, "the deep page does not walk the list index")
    return section


def explain(statement: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}")
        return "\n".join(row[0] for row in cursor.fetchall())
