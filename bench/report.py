"""What a run found: the table on stdout, `docs/benchmarks.md`, and the JSON summary line."""

import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.config import REPO_ROOT
from bench.wrk import WrkResult

DOCS_PATH = REPO_ROOT / "docs" / "benchmarks.md"
_KEEP_START = "<!-- bench:gunicorn:start -->"
_KEEP_END = "<!-- bench:gunicorn:end -->"
# The delivery control figures, written by `python -m bench.control` and kept by this run.
_CONTROL_START = "<!-- bench:control:start -->"
_CONTROL_END = "<!-- bench:control:end -->"


@dataclass(frozen=True)
class Measurement:
    label: str
    result: WrkResult
    sql_per_request: int | None = None
    others_cpu_percent: float | None = None  # share of the machine other processes used


@dataclass
class Section:
    key: str  # the workload's name: "api", "deep", "gunicorn"
    title: str
    measurements: list[Measurement] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # one figure per line, shown under the table
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (heading, preformatted text)
    extra_table: tuple[list[str], list[list[str]]] | None = None  # (header, rows)
    extra_errors: int = 0  # failed requests of runs shown in extra_table only

    @property
    def errors(self) -> int:
        return self.extra_errors + sum(m.result.errors for m in self.measurements)


NOISY_PERCENT = 15.0


@dataclass
class Run:
    command: str
    mode: str
    started: dt.datetime
    machine: dict[str, str]
    setup: dict[str, str]
    sections: list[Section] = field(default_factory=list)
    metrics: dict[str, float | int | str | None] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def noise_warning(self) -> str:
        """A sentence if other processes took a large share of the CPUs during a measurement."""
        shares = [
            m.others_cpu_percent
            for section in self.sections
            for m in section.measurements
            if m.others_cpu_percent is not None
        ]
        worst = max(shares, default=0.0)
        if worst <= NOISY_PERCENT:
            return ""
        noisy = sum(share > NOISY_PERCENT for share in shares)
        return (
            f"Noisy run: other processes used more than {NOISY_PERCENT:.0f}% of the CPUs during "
            f"{noisy} of {len(shares)} measurements (up to {worst:.0f}%); those figures are low. "
            "Rerun on a quiet machine to compare."
        )


# --- the machine -----------------------------------------------------------------------------


def machine_info(postgres_version: str, wrk_version: str) -> dict[str, str]:
    return {
        "nproc": _command(["nproc"]) or str(os.cpu_count()),
        "memory": _memory(),
        "cpu": _cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "django": metadata.version("django"),
        "djangorestframework": metadata.version("djangorestframework"),
        "gunicorn": metadata.version("gunicorn"),
        "psycopg": metadata.version("psycopg"),
        "postgresql": postgres_version,
        "wrk": wrk_version,
    }


def _command(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _memory() -> str:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return "unknown"
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    return f"{int(match[1]) / 1024 / 1024:.1f} GiB" if match else "unknown"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match[1].strip() if match else platform.processor() or "unknown"


# --- tables ----------------------------------------------------------------------------------

_HEADER = [
    "workload",
    "req/s",
    "p50 ms",
    "p99 ms",
    "requests",
    "errors",
    "SQL/req",
    "other CPU %",
]


def _rows(section: Section) -> list[list[str]]:
    return [
        [
            m.label,
            f"{m.result.rps:,.0f}",
            f"{m.result.p50_ms:.2f}",
            f"{m.result.p99_ms:.2f}",
            f"{m.result.requests:,}",
            str(m.result.errors),
            "-" if m.sql_per_request is None else str(m.sql_per_request),
            "-" if m.others_cpu_percent is None else f"{m.others_cpu_percent:.0f}",
        ]
        for m in section.measurements
    ]


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"
    return "\n".join([line(header), align, *map(line, rows)])


# --- the headline figures --------------------------------------------------------------------

# Every JSON summary has these keys (null when the run did not measure it): a script comparing
# runs can rely on them.
REQUIRED_KEYS = (
    "deliveries_per_s",
    "bare_loop_per_s",
    "peer_per_s",
    "delivery_p50_ms",
    "delivery_p99_ms",
    "api_list_rps",
    "api_retrieve_rps",
    "api_drf_list_rps",
    "api_drf_retrieve_rps",
    "api_list_drf_ratio",
    "api_retrieve_drf_ratio",
    "api_create_rps",
    "api_bare_rps",
    "deep_page_ratio",
    "fanout_ratio",
    "slow_endpoint_p99_ratio",
    "worker_rss_growth",
)

# (key, what it is, the target as text, whether a value meets it)
_HEADLINES: list[tuple[str, str, str, Callable[[float], bool] | None]] = [
    ("deliveries_per_s", "deliveries/s end to end", ">= 1,000", lambda v: v >= 1000),
    ("bare_loop_per_s", "bare requests loop, 2 processes (/s)", "the ceiling", None),
    ("deliveries_vs_bare_loop", "ours / bare loop", ">= 0.5", lambda v: v >= 0.5),
    ("peer_per_s", "django-webhook deliveries/s", "", None),
    ("peer_ratio", "ours / django-webhook", ">= 4", lambda v: v >= 4),
    ("delivery_p50_ms", "publish-to-receipt p50 at 500/s (ms)", "< 20", lambda v: v < 20),
    ("delivery_p99_ms", "publish-to-receipt p99 at 500/s (ms)", "< 100", lambda v: v < 100),
    ("api_bare_rps", "bare Django view req/s (no query)", "reference", None),
    ("api_list_rps", "API list req/s", "", None),
    ("api_drf_list_rps", "idiomatic DRF list req/s", "the peer", None),
    ("api_list_drf_ratio", "API list / DRF list", ">= 3", lambda v: v >= 3),
    ("api_retrieve_rps", "API retrieve req/s", "", None),
    ("api_drf_retrieve_rps", "idiomatic DRF retrieve req/s", "the peer", None),
    ("api_retrieve_drf_ratio", "API retrieve / DRF retrieve", ">= 3", lambda v: v >= 3),
    ("api_create_rps", "API create req/s", "", None),
    ("deep_page_ratio", "deep page p50 / page 1 p50", "<= 1.2", lambda v: v <= 1.2),
    ("fanout_ratio", "fan-out / independent deliveries", "<= 2", lambda v: v <= 2),
    ("slow_endpoint_p99_ratio", "healthy p99 with / without a dead endpoint", "<= 1.2",
     lambda v: v <= 1.2),
    ("worker_rss_growth", "worker RSS growth, 10x the deliveries", "within +-0.10",
     lambda v: abs(v) <= 0.10),
    ("web_rss_growth", "web RSS growth, 10x the requests", "within +-0.10",
     lambda v: abs(v) <= 0.10),
]  # fmt: skip
HEADLINE_HEADER = ["figure", "key", "value", "target", "met"]


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def headline_rows(metrics: dict[str, float | int | str | None]) -> list[list[str]]:
    rows = []
    for key, label, target, meets in _HEADLINES:
        value = metrics.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            rows.append([label, key, "not measured", target, ""])
            continue
        met = "" if meets is None else "yes" if meets(float(value)) else "NO"
        rows.append([label, key, _number(float(value)), target, met])
    return rows


def print_report(run: Run) -> None:
    print()
    print(f"Kinetic bench ({run.mode}) - {run.started:%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {run.machine['nproc']} CPU ({run.machine['cpu']}), {run.machine['memory']}; "
        f"Python {run.machine['python']}, Django {run.machine['django']}, "
        f"PostgreSQL {run.machine['postgresql']}"
    )
    for name, value in run.setup.items():
        print(f"{name}: {value}")
    if run.noise_warning:
        print(f"WARNING: {run.noise_warning}")
    for section in run.sections:
        print()
        print(f"== {section.title}")
        if section.measurements:
            print(_text_table(_HEADER, _rows(section)))
        if section.extra_table:
            print(_text_table(*section.extra_table))
        for line in section.summary:
            print(f"  {line}")
        for heading, text in section.blocks:
            print(f"-- {heading}")
            print(text.rstrip())
    print()
    print("== Headline figures (targets from issues 7 and 15)")
    print(_text_table(HEADLINE_HEADER, headline_rows(run.metrics)))
    print()
    print(f"total time: {run.elapsed_s:.0f}s")


# --- docs/benchmarks.md ----------------------------------------------------------------------


def write_docs(run: Run, path: Path = DOCS_PATH, chart: Path | None = None) -> Path:
    measured = any(section.key == "gunicorn" for section in run.sections)
    kept = "" if measured else _kept_section(path, _KEEP_START, _KEEP_END)
    control = _kept_section(path, _CONTROL_START, _CONTROL_END)
    out: list[str] = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench` (see `bench/`); every full-length run rewrites this file",
        "and the chart beside it.",
        "Figures are from one machine and one run: compare runs on the same machine only.",
        "",
        "## Latest run",
        "",
        f"- Command: `{run.command}` ({run.mode}, {run.elapsed_s:.0f} s)",
        f"- Date: {run.started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: `nproc` = {run.machine['nproc']}, {run.machine['memory']} memory, "
        f"CPU {run.machine['cpu']}, {run.machine['kernel']}",
        f"- Software: Python {run.machine['python']}, Django {run.machine['django']}, "
        f"DRF {run.machine['djangorestframework']}, gunicorn {run.machine['gunicorn']}, "
        f"psycopg {run.machine['psycopg']}, PostgreSQL {run.machine['postgresql']}, "
        f"{run.machine['wrk']}",
    ]
    out += [f"- {name.capitalize()}: {value}" for name, value in run.setup.items()]
    if run.noise_warning:
        out += ["", f"**{run.noise_warning}**"]
    if chart is not None:
        relative = chart.relative_to(path.parent) if chart.is_relative_to(path.parent) else chart
        out += ["", f"![Throughput and latency of the latest run]({relative.as_posix()})"]
    out += [
        "",
        "## Headline figures",
        "",
        "Targets from issues 7 and 15; `key` is the field of the JSON line the bench prints last.",
        "Why the API's targets against DRF are not met, and what a page past a cursor costs:",
        'docs/scaling.md, "Issue 15".',
        "",
        _markdown_table(HEADLINE_HEADER, headline_rows(run.metrics)),
    ]
    for section in run.sections:
        if section.key == "gunicorn":
            out += ["", _KEEP_START, *_section_markdown(section, run), _KEEP_END]
        else:
            out += ["", *_section_markdown(section, run)]
    out += [line for earlier in (kept, control) if earlier for line in ("", earlier)]
    out += ["", *_METHOD]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out).rstrip() + "\n")
    return path


def _section_markdown(section: Section, run: Run) -> list[str]:
    lines = [f"## {section.title}", ""]
    if section.key == "gunicorn":
        lines += [f"Measured {run.started:%Y-%m-%d} with `{run.command}`.", ""]
    if section.measurements:
        lines += [_markdown_table(_HEADER, _rows(section)), ""]
    if section.extra_table:
        lines += [_markdown_table(*section.extra_table), ""]
    lines += [f"- {line}" for line in section.summary]
    for heading, text in section.blocks:
        lines += ["", f"{heading}:", "", "```", text.rstrip(), "```"]
    return lines


def _kept_section(path: Path, start_mark: str, end_mark: str) -> str:
    """A section of an earlier run that this run did not measure again (the worker-class
    comparison, the delivery control figures), marks included; empty if there is none."""
    if not path.exists():
        return ""
    text = path.read_text()
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(end_mark)]


# --- the delivery control section (python -m bench.control) ----------------------------------


def _against_target(value: float) -> str:
    # Three places: at two, a ratio of 0.796 read "0.80" beside ">= 0.8" and "no".
    return f"{value:.3f}"


# key, figure, how the value reads, the target and whether it is met (None: reported only).
_Met = Callable[[float], bool] | None
_CONTROL_ROWS: list[tuple[str, str, Callable[[float], str], str | None, _Met]]
_CONTROL_ROWS = [
    (
        "ordered_ratio",
        "ordered endpoint (receiver 10 ms): deliveries/s against one request at a time",
        _against_target,
        ">= 0.8",
        lambda v: v >= 0.8,
    ),
    (
        "ordered_after_publishing_ratio",
        "the same, from the last publish on (the publisher and fan-outs done)",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "ordered_after_publishing_share",
        "the share of first receipts from the last publish on",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "ordered_in_publication_order",
        "ordered endpoint: every event first received in publication order",
        lambda v: "yes" if v else "no",
        "yes",
        bool,
    ),
    (
        "limited_per_s",
        "a 50/s endpoint's measured rate",
        lambda v: f"{v:.2f}/s",
        "47.5-52.5/s",
        lambda v: abs(v - 50) <= 2.5,
    ),
    (
        "unlimited_ratio",
        "unlimited endpoints beside it, against the runs without it around it",
        _against_target,
        ">= 0.95",
        lambda v: v >= 0.95,
    ),
    (
        "unlimited_ratio_to_the_run_before",
        "the same, against the run without it just before it alone (as measured until 2026-12-06)",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "unlimited_ratio_unlimited_11th",
        "beside an unlimited 11th endpoint instead, against the runs without either",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "unlimited_ratio_same_work",
        "the same, against an unlimited 11th endpoint instead (the limit apart from its work)",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "unlimited_ratio_own_sends",
        "what its own sends alone would leave them, each costing an unlimited send (estimate)",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "unlimited_ratio_limit_path",
        "beside an 11th endpoint whose every send takes the limit's path (a limit never reached)",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "unlimited_ratio_limit_path_same_work",
        "the same, against the unlimited 11th's runs (the path's cost per send, apart from it)",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "unlimited_ratio_repeat",
        "consecutive runs without it, against each other: the measure's own noise (median)",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "unlimited_ratio_repeat_worst",
        "the same, the pair farthest from 1",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "phased_unlimited_ratio",
        "unlimited endpoints in phases beside it, against the phases without it either side",
        _against_target,
        ">= 0.95",
        lambda v: v >= 0.95,
    ),
    (
        "phased_unlimited_ratio_same_work",
        "the same, beside an unlimited endpoint sending as much at its pace instead",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "phased_repeat_worst",
        "consecutive phases without it, against each other: the pair farthest from 1",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "phased_limited_per_s",
        "the 50/s endpoint's rate in those phases, the others saturating the machine",
        lambda v: f"{v:.2f}/s",
        None,
        None,
    ),
    (
        "commits_per_send_limited",
        "PostgreSQL transactions per delivery sent, in the run beside it (counted)",
        lambda v: f"{v:.3f}",
        None,
        None,
    ),
    (
        "commits_per_send_same_work",
        "the same, beside an unlimited 11th endpoint instead",
        lambda v: f"{v:.3f}",
        None,
        None,
    ),
    (
        "slot_statements_per_limited_send",
        "its slot statements per request it sent (counted)",
        lambda v: f"{v:.3f}",
        None,
        None,
    ),
    (
        "steady_ratio",
        "unlimited endpoints at a steady load (steady_rate per s) beside it, against without",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "steady_p99_ratio",
        "the same: their publish-to-receipt p99, beside it against without",
        lambda v: f"{v:.2f}x",
        None,
        None,
    ),
    (
        "recovery_ratio",
        "recovery of the failed deliveries, against as many fresh ones",
        _against_target,
        "<= 1.5",
        lambda v: v <= 1.5,
    ),
    (
        "live_p99_ratio",
        "live deliveries' p99 during a recovery, against without",
        lambda v: f"{v:.1f}x",
        None,
        None,
    ),
    (
        "burst_ratio",
        "retries due together for one endpoint, deliveries/s against as many over 10",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "burst_one_endpoint_commits_per_delivery",
        "the same: transactions per delivery, one endpoint (counted)",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
    (
        "burst_spread_commits_per_delivery",
        "the same: transactions per delivery, over 10 (counted)",
        lambda v: f"{v:.2f}",
        None,
        None,
    ),
]


def control_markdown(results: dict[str, float], command: str, elapsed_s: float) -> str:
    """The delivery control section of docs/benchmarks.md, marks included: the figures the
    issue sets targets for, from one run of bench.control."""
    rows = [
        [figure, key, show(results[key]), target or "reported", "" if met is None else
         "yes" if met(results[key]) else "**no**"]
        for key, figure, show, target, met in _CONTROL_ROWS
        if key in results
    ]  # fmt: skip
    machine = f"`nproc` = {_command(['nproc']) or os.cpu_count()}, CPU {_cpu_model()}"
    lines = [
        _CONTROL_START,
        "## Delivery control",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}` "
        f"({elapsed_s:.0f} s; {machine}). Targets from issue 16; the workloads are described in",
        "bench/control.py, and every measurement since, with its analysis, in",
        "docs/delivery-control.md. `key` is the field of the JSON line bench.control prints last.",
        "",
        _markdown_table(HEADLINE_HEADER, rows),
        "",
        "All figures: " + ", ".join(f"{k} {_number(v)}" for k, v in results.items()) + ".",
        _CONTROL_END,
    ]
    return "\n".join(lines)


def write_control_docs(section: str, path: Path = DOCS_PATH) -> Path:
    """Puts the delivery control section in docs/benchmarks.md in place of the last one, or
    before the method if there was none; the rest of the file is left as it was."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    old = _kept_section(path, _CONTROL_START, _CONTROL_END)
    if old:
        text = text.replace(old, section)
    elif "\n## Method\n" in text:
        text = text.replace("\n## Method\n", f"\n{section}\n\n## Method\n", 1)
    else:
        text = text.rstrip() + f"\n\n{section}\n"
    path.write_text(text)
    return path


_METHOD = [
    "## Method",
    "",
    "- Everything runs on this one machine: PostgreSQL, gunicorn and wrk share its CPUs, so",
    "  absolute figures are lower than on a dedicated server; ratios travel better.",
    "- gunicorn serves `config.wsgi` with `bench.settings`: the production settings with",
    "  throwaway secrets, `SECURE_SSL_REDIRECT` off (plain http on 127.0.0.1), `DEBUG` off, and",
    "  extra URLs (`bench/urls.py`): `/bench/bare`, a plain Django view returning a constant JSON",
    "  body (no DRF, no database) that still passes through the whole middleware stack, a",
    "  reference figure without a target; and the API's peer, `/bench/drf/webhook_endpoints` and",
    "  `/bench/drf/webhook_endpoints/<id>`: the same list and retrieve written as idiomatic DRF,",
    "  a `ListAPIView` and a `RetrieveAPIView` with a `ModelSerializer` of the same fields",
    "  (header values masked by the API's own function), `CursorPagination` (newest first, 20 a",
    "  page) and an ORM queryset of the caller's live endpoints, behind the API's own key check,",
    "  renderer and middleware, with no hand-tuning.",
    "  The bench checks that the peer answers the same endpoints as the API before measuring.",
    "  All gunicorn options are on its command line; an empty config file is passed so no",
    "  `gunicorn.conf.py` applies.",
    "- The database is `kinetic_bench`, created and migrated fresh on the shared server for each",
    "  run and dropped at the end. API keys are real `md_test_` keys made with",
    "  `accounts.services.api_key_create`; every request is authenticated.",
    "- gunicorn runs 2 sync workers (`--workers 2 --worker-class sync`), for every workload:",
    "  the fastest setup on the bare view on 2 CPUs (`--only gunicorn` compares it with",
    "  gthread setups). Sync workers close the connection after each response, so wrk opens a",
    "  new TCP connection per request; gthread workers keep them, but then each connection",
    "  stays on the worker that accepted it and wrk's 8 connections split between the workers",
    "  at random (all 8 on one worker in some runs), which makes gthread figures swing by 2x.",
    "- Each workload gets a warm-up run of wrk (discarded), then the measured run. wrk is",
    "  closed-loop with 8 connections: the 2 workers are always busy and a request waits for",
    "  the ones ahead of it, so p50 is about 8 / (req/s); p50 and p99 come from wrk's",
    "  `--latency` distribution.",
    "- `other CPU %` is the share of the machine used during the measured run by processes",
    "  outside the bench (busy time from /proc/stat minus this process, wrk, gunicorn's process",
    "  group and the bench database's PostgreSQL backends). Before each run the bench waits up",
    "  to 20 s for that share to fall under 15%, and a run above it is repeated once (the",
    "  quieter one is kept), within 60 s of waiting per run in all (15 s with `--quick`).",
    "  Figures with a high share are low and noisy: rerun on a quiet machine.",
    "- GET list asks for `?limit=20` in an environment holding 1,000 endpoints (a full page and",
    "  `has_more`); retrieve reads one of them. The DRF peer reads the same first page (its",
    "  `page_size`, with a `next` cursor) and the same endpoint. Create POSTs a new endpoint per",
    "  request (an endpoint row, a Fernet-encrypted secret row). `create` registers a public",
    "  IP-literal URL (`https://93.184.215.14/...`): the API's own cost. `create_dns` registers a",
    "  host name (`https://hooks.example.com/...`): the production URL policy then resolves it on",
    "  the request path (`webhooks.url_policy.resolve`, 4 resolver threads per process, 2 s",
    "  timeout), so that row is as fast as the machine's DNS resolver allows.",
    "- `SQL/req` is the number of SQL statements one such request runs, counted in the bench",
    "  process with Django's test client (the connection health check Django runs at the start",
    "  of each request, `CONN_HEALTH_CHECKS`, is not counted).",
    "- Ratios `x/DRF` divide the API's req/s by its DRF peer's for the same read (list by DRF",
    "  list, retrieve by DRF retrieve). The reads (bare view, list, retrieve, DRF list, DRF",
    "  retrieve) are measured in turns (five of 2 s each, 1 s with `--quick`: bare, list,",
    "  retrieve, DRF list, DRF retrieve, bare, ...), so the machine's drift during the run",
    "  weighs on all of them alike; a row's req/s is its requests over its seconds in all turns,",
    "  its percentiles the median of its turns'. The creates follow, one after the other.",
    "- Deep pages: endpoints are inserted in one `INSERT ... SELECT generate_series` into one",
    "  sandbox environment (distinct `created_at`, valid `we_` ids), then `VACUUM ANALYZE`.",
    "  Page 1 is `?limit=20`; the deep page is `?limit=20&starting_after=<id>` for the endpoint",
    "  at 90% of the list. A request with a cursor also looks the cursor up (one more indexed",
    "  query, a fixed cost), so page 2 (`starting_after` the 20th endpoint) is measured too:",
    "  deep/page2 is what depth alone costs, deep/page1 includes the cursor lookup. The three",
    "  are measured in turns, like the API's reads.",
    "  The plan printed is `EXPLAIN (ANALYZE, BUFFERS)` of the exact SQL the view ran.",
    "- Deliveries: a private `redis-server` on a free port (never the shared one), one",
    "  `celery worker` process (`--workers N` for more) with the settings' pool and concurrency",
    "  (threads, 16) and `celery beat`, all with `bench.settings`; a receiver",
    "  (`bench/receiver.py`, asyncio, keep-alive) verifies every signature. Celery is warmed up",
    "  with 20 events x 10 endpoints before the first delivery workload. Events are published",
    "  from the bench process with the product's `event_publish`, each in its own transaction.",
    "- Throughput: 1,000 events x 10 endpoints as fast as 4 producer threads publish them (one",
    "  thread alone, waiting on each commit and broker round trip, published 30-200 events/s:",
    "  too close to the 100/s the target needs); the clock runs from the first publish until",
    "  PostgreSQL has every delivery recorded as succeeded. The bare loop posts the same",
    "  signed bodies to the same receiver from a pooled `requests.Session`",
    "  with as many in flight as a worker sends (64), in one process and in two (the machine's",
    "  ceiling). Three turns of ours then the bare loop: each figure is the median of its turns",
    "  and the ratio is taken within each turn (this VM's speed drifts from minute to minute).",
    "  CPU per process group (workers, PostgreSQL backends, redis, receiver, producer, others)",
    "  is sampled from /proc during each turn; the table shows the median turn's.",
    "- Latency: publish-to-receipt (the receiver's clock) of 200 events x 10 endpoints published",
    "  at 50 events/s (500 deliveries/s, half the target), and of 50 x 10 at 5 events/s (at rest).",
    "- Fan-out: one event to 10,000 endpoints, publish to the last receipt, against the time of",
    "  the throughput run (10,000 independent deliveries).",
    "- A dead endpoint: 20 endpoints, one reads requests and never answers; 100 events at 10/s;",
    "  the p99 of every healthy delivery, against the same run without the dead endpoint; three",
    "  turns of the pair, the ratio the median of the turns' ratios.",
    "- Memory: RSS (VmRSS from /proc, the process and its children) of the Celery worker at rest",
    "  after 10,000 deliveries (past the warm-up) and after 100,000 (events published 100 to a",
    "  transaction), and of the gunicorn workers after a 5 s wrk warm-up on GET list and after",
    "  50 s more of it (the request counts are in the table). Growth is after / before - 1.",
    "- The peer: `bench.peer` runs the throughput workload through django-webhook (Celery +",
    "  requests, one task per delivery) in its own virtualenv, after our Celery is stopped;",
    "  `peer_per_s` is null (and `peer_error` says why) when it could not run.",
    "- Run it: `.venv/bin/python -m bench` (every workload; about 15 minutes, most of it the",
    "  100,000 deliveries of the memory workload and the peer's four runs), `--quick` (every",
    "  workload at a tenth of its size, under five minutes; does not rewrite this file),",
    "  `--full` (1,000,000 deep endpoints),",
    "  `--only api,deep,deliveries,latency,fanout,slow,memory,peer,gunicorn`",
    "  to choose workloads (`gunicorn` compares worker classes and is not run by default).",
    "  Needs wrk, redis-server, PostgreSQL and matplotlib (the dev pins); see the README.",
    "- `python -m bench.scaling` runs the throughput workload with 1, 2 and 4 worker processes",
    "  and writes `docs/scaling.json`: deliveries/s and CPU per process group for each.",
]


# --- the summary line ------------------------------------------------------------------------


def summary_line(metrics: dict[str, float | int | str | None]) -> str:
    """One JSON object: the required keys first (null if not measured), then the rest."""
    ordered = {key: metrics.get(key) for key in REQUIRED_KEYS}
    ordered.update(metrics)
    for key, value in ordered.items():
        if isinstance(value, float) and not math.isfinite(value):
            ordered[key] = None  # JSON has no NaN: a percentile of nothing is not measured
    return json.dumps(ordered, sort_keys=False, separators=(", ", ": "))
