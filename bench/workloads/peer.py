"""The peer: the same delivery workload through django-webhook, in its own virtualenv.

`bench.peer.run_peer(quick) -> dict` (with `peer_per_s`) sets up and runs it. A peer that is
missing or fails must not cost the run its other figures: `peer_per_s` is then null, with the
reason in `peer_error` and on stderr. Our Celery stack is stopped first, so the peer has the
CPUs to itself, as ours had during its own throughput run.
"""

import sys
import traceback
from typing import Any

from bench.report import Section
from bench.workloads import Context


def run(ctx: Context) -> Section:
    if ctx.deliveries is not None:
        ctx.deliveries.stop_celery()
    section = Section(key="peer", title="The peer: django-webhook (Celery + requests)")
    figures, error = _run_peer(ctx.quick)
    figures = {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}
    per_s = figures.get("peer_per_s")
    ctx.metrics.update({k: v for k, v in figures.items() if k != "peer_per_s"})
    ctx.metrics["peer_per_s"] = per_s
    if error:
        ctx.metrics["peer_error"] = error
        print(f"bench: peer: {error}; peer_per_s is null", file=sys.stderr, flush=True)
        section.summary.append(f"not measured: {error}")
        return section
    ours = ctx.metrics.get("deliveries_per_s")
    rows = [["django-webhook", f"{per_s:,.0f}/s", "deliveries end to end"]]
    if isinstance(ours, int | float) and per_s:
        ctx.metrics["peer_ratio"] = round(ours / per_s, 3)
        rows.append(["ours / the peer", f"{ours / per_s:.2f}", "target >= 4"])
    section.extra_table = (["figure", "value", "compared with"], rows)
    return section


def _run_peer(quick: bool) -> tuple[dict[str, Any], str]:
    """The peer's figures, or no figures and why."""
    try:
        from bench.peer import run_peer
    except ImportError as exc:
        return {}, f"bench.peer is not importable ({exc})"
    try:
        figures = dict(run_peer(quick))
    except Exception as exc:  # any failure of the peer is reported, not raised
        traceback.print_exc(file=sys.stderr)
        return {}, f"bench.peer failed: {type(exc).__name__}: {exc}"
    per_s = figures.get("peer_per_s")
    if not isinstance(per_s, int | float) or per_s <= 0:
        return figures, f"bench.peer returned no peer_per_s ({per_s!r})"
    return figures, ""
