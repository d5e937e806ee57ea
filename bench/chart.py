"""The chart of `docs/benchmarks.md`: throughput and latency of one run, beside their ceilings.

Three panels, each comparing what the issue compares: deliveries/s against the bare loop and
the peer, API req/s against its idiomatic DRF peer (the bare view beside them for reference),
and latency p50/p99 against the targets. A figure the run did not measure is shown as "not
measured", never as zero. matplotlib comes from the dev pins; the Agg backend draws without a
display.
"""

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bench.config import REPO_ROOT

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CHART_PATH = REPO_ROOT / "docs" / "benchmarks.png"
TARGET = "#c53030"
_LABEL_BOX = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}
OURS, CEILING, PEER = "#2b6cb0", "#a0aec0", "#dd6b20"
P50, P99 = "#2b6cb0", "#90cdf4"
Figures = Mapping[str, object]


def _value(metrics: Figures, key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _bars(
    ax: "Axes", labels: list[str], values: list[float | None], colors: list[str], unit: str
) -> None:
    heights = [v or 0.0 for v in values]
    bars = ax.bar(labels, heights, color=colors)
    top = max(heights, default=0.0) or 1.0
    for bar, value in zip(bars, values, strict=True):
        text = "not measured" if value is None else f"{value:,.0f}{unit}"
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color="#718096" if value is None else "black",
        )
    ax.set_ylim(0, top * 1.18)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _throughput(ax: "Axes", metrics: Figures) -> None:
    labels = [
        "ours\nend to end",
        "bare loop\n1 process",
        "bare loop\n2 processes",
        "peer\n(django-webhook)",
    ]
    keys = ["deliveries_per_s", "bare_loop_1proc_per_s", "bare_loop_per_s", "peer_per_s"]
    _bars(ax, labels, [_value(metrics, k) for k in keys], [OURS, CEILING, CEILING, PEER], "/s")
    ax.axhline(1000, color=TARGET, linestyle="--", linewidth=1)
    ax.annotate("target 1,000/s", (0.99, 1000), xycoords=("axes fraction", "data"),
                ha="right", va="bottom", fontsize=8, color=TARGET, bbox=_LABEL_BOX)  # fmt: skip
    ax.set_ylim(0, max(ax.get_ylim()[1], 1150))
    ax.set_title("Deliveries per second", fontsize=10)


def _api(ax: "Axes", metrics: Figures) -> None:
    names = ["bare", "list", "drf_list", "retrieve", "drf_retrieve", "create"]
    labels = ["bare view\n(no query)", "list", "DRF peer\nlist", "retrieve", "DRF peer\nretrieve",
              "create"]  # fmt: skip
    values = [_value(metrics, f"api_{name}_rps") for name in names]
    _bars(ax, labels, values, [CEILING, OURS, PEER, OURS, PEER, OURS], "")
    ratios = [_value(metrics, f"api_{name}_drf_ratio") for name in ("list", "retrieve")]
    shown = ", ".join(
        f"{name} {'n/m' if ratio is None else f'{ratio:.1f}x'}"
        for name, ratio in zip(("list", "retrieve"), ratios, strict=True)
    )
    title = f"API requests per second (gunicorn, wrk)\n{shown} DRF; target >= 3x"
    ax.set_title(title, fontsize=10)


def _latency(ax: "Axes", metrics: Figures) -> None:
    groups = [
        ("deliveries\nat 500/s", "delivery_p50_ms", "delivery_p99_ms"),
        ("deliveries\nat rest (50/s)", "rest_50_per_s_p50_ms", "rest_50_per_s_p99_ms"),
        ("API list", "api_list_p50_ms", "api_list_p99_ms"),
        ("API retrieve", "api_retrieve_p50_ms", "api_retrieve_p99_ms"),
    ]
    width = 0.38
    measured = []
    for i, (_, p50_key, p99_key) in enumerate(groups):
        for offset, key, color, name in ((-1, p50_key, P50, "p50"), (1, p99_key, P99, "p99")):
            value = _value(metrics, key)
            x = i + offset * width / 2
            label = name if i == 0 else None
            if value is None:
                ax.annotate("n/m", (x, 1), ha="center", va="bottom", fontsize=7, color="#718096")
                ax.bar(x, 0, width, color=color, label=label)
                continue
            measured.append(value)
            ax.bar(x, value, width, color=color, label=label)
            ax.annotate(f"{value:,.0f}" if value >= 10 else f"{value:.1f}", (x, value),
                        xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7)  # fmt: skip
    ax.set_yscale("log")
    low = min(measured, default=1.0)
    ax.set_ylim(max(0.1, low / 3), max(measured, default=100.0) * 4)
    for target, text, style in ((20, "p50 target 20 ms", ":"), (100, "p99 target 100 ms", "--")):
        ax.axhline(target, color=TARGET, linestyle=style, linewidth=1, label=text)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax.set_ylabel("ms (log scale)", fontsize=8)
    ax.legend(fontsize=8, loc="upper right", ncols=2)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.set_axisbelow(True)
    ax.set_title("Latency p50 / p99 (ms)", fontsize=10)


def write_chart(metrics: Figures, title: str, path: Path = CHART_PATH) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), gridspec_kw={"width_ratios": [4, 4, 5]})
    try:
        _throughput(axes[0], metrics)
        _api(axes[1], metrics)
        _latency(axes[2], metrics)
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
