"""Which gunicorn worker setup to benchmark with: candidates side by side on 2 cores.

Not run by default (`--only gunicorn`). The bare view decides (the most gunicorn and the
middleware allow any request); GET list is shown too, since it waits on PostgreSQL where threads
could help. The API workloads always use `stack.DEFAULT_GUNICORN`, so runs stay comparable.
"""

from bench import seed
from bench.report import Section
from bench.stack import DEFAULT_GUNICORN, GunicornConfig, gunicorn
from bench.workloads import Context, measure

CANDIDATES = (
    GunicornConfig("sync", workers=2),
    GunicornConfig("sync", workers=4),
    GunicornConfig("gthread", workers=2, threads=2),
    GunicornConfig("gthread", workers=2, threads=4),
    GunicornConfig("gthread", workers=4, threads=2),
)


def run(ctx: Context) -> Section:
    tenant = seed.tenant("bench-gunicorn")
    seed.endpoints(tenant.environment, 1_000)
    section = Section(key="gunicorn", title="gunicorn worker setup (choice of the default)")
    rows: list[list[str]] = []
    best: tuple[float, GunicornConfig] | None = None
    for config in CANDIDATES:
        with gunicorn(config) as server:
            url = server.base_url
            bare = measure(
                ctx, f"{config.label}: bare", url + "/bench/bare", headers={}, server=server
            )
            listing = measure(
                ctx,
                f"{config.label}: list",
                url + "/v1/webhook_endpoints?limit=20",
                headers=tenant.headers,
                server=server,
            )
        b, li = bare.result, listing.result
        section.extra_errors += b.errors + li.errors
        chosen = " (default)" if config == DEFAULT_GUNICORN else ""
        rows.append(
            [
                config.label + chosen,
                f"{b.rps:,.0f}",
                f"{b.p50_ms:.2f}",
                f"{b.p99_ms:.2f}",
                f"{li.rps:,.0f}",
                f"{li.p50_ms:.2f}",
                f"{li.p99_ms:.2f}",
                str(b.errors + li.errors),
                f"{max(bare.others_cpu_percent or 0, listing.others_cpu_percent or 0):.0f}",
            ]
        )
        slug = config.label.replace(" --threads ", "_t").replace(" -w ", "_w")
        ctx.metrics[f"gunicorn_{slug}_bare_rps"] = round(b.rps, 1)
        ctx.metrics[f"gunicorn_{slug}_list_rps"] = round(li.rps, 1)
        if best is None or b.rps > best[0]:
            best = (b.rps, config)
    header = ["gunicorn", "bare req/s", "p50 ms", "p99 ms", "list req/s", "p50 ms", "p99 ms"]
    section.extra_table = ([*header, "errors", "other CPU %"], rows)
    if best is not None:
        section.summary.append(f"fastest on the bare view: {best[1].label}")
    section.summary.append(f"the API and deep workloads run on: {DEFAULT_GUNICORN.label}")
    return section
