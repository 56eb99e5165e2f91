"""The report's PNG plots (matplotlib, headless). Without matplotlib the report is written without them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genrec.files import save_figure
from genrec.report.markdown import metric_name


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(ax, groups: list[str], series: dict[str, tuple[list, list]], ylabel: str, title: str) -> None:
    """Grouped bars: one group per x label, one bar per method, error bars = std over seeds."""
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (label, (means, stds)) in enumerate(series.items()):
        m = np.array([np.nan if v is None else v for v in means], dtype=float)
        s = np.array([0.0 if v is None else v for v in stds], dtype=float)
        ax.bar(x + (i - (n - 1) / 2) * width, m, width, yerr=s, capsize=3, label=label)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def _series(table: dict, keys: list[str]) -> dict[str, tuple[list, list]]:
    return {
        method: (
            [(row.get(k) or {}).get("mean") for k in keys],
            [(row.get(k) or {}).get("std") for k in keys],
        )
        for method, row in table.items()
    }


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def write_plots(data: dict, out_dir: Path) -> dict[str, Path]:
    """accuracy.png, beyond_accuracy.png, popularity_buckets.png, history_buckets.png, cost.png."""
    plt = _pyplot()
    if plt is None:
        return {}
    out_dir = Path(out_dir)
    files = {}

    keys = [
        k
        for k in ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
        if k in next(iter(data["accuracy"].values()))
    ]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _bars(
        ax,
        [metric_name(k) for k in keys],
        _series(data["accuracy"], keys),
        "score",
        "Accuracy (mean ± std over seeds)",
    )
    ax.legend(fontsize=8)
    files["accuracy"] = _save(fig, out_dir / "accuracy.png", plt)

    bkeys = list(next(iter(data["beyond_accuracy"].values())).keys())
    if bkeys:
        fig, axes = plt.subplots(1, len(bkeys), figsize=(3.2 * len(bkeys), 4), squeeze=False)
        for ax, key in zip(axes[0], bkeys, strict=True):
            series = _series(data["beyond_accuracy"], [key])
            _bars(ax, [""], series, metric_name(key), metric_name(key))
        axes[0][0].legend(fontsize=7)
        files["beyond_accuracy"] = _save(fig, out_dir / "beyond_accuracy.png", plt)

    for key, title in (
        ("popularity_buckets", "by target popularity"),
        ("history_buckets", "by history length"),
    ):
        section = data.get(key)
        if not section:
            continue
        labels = [b["bucket"] for b in section["buckets"]]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, metric in zip(axes, ("recall@10", "ndcg@10"), strict=True):
            series = {}
            for method, per_metric in section["by_method"].items():
                cells = per_metric.get(metric)
                if cells:
                    series[method] = ([c["mean"] for c in cells], [c["std"] for c in cells])
            _bars(ax, labels, series, metric_name(metric), f"{metric_name(metric)} {title}")
        axes[0].legend(fontsize=8)
        files[key] = _save(fig, out_dir / f"{key}.png", plt)

    cost = data.get("cost", {})
    panels = [
        ("train_seconds", "training time (s)"),
        ("latency_ms_p50", "latency p50, 1 user (ms)"),
        ("throughput_users_per_s", "throughput (users/s)"),
    ]
    panels = [(k, t) for k, t in panels if any(c.get(k) is not None for c in cost.values())]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
        for ax, (k, t) in zip(axes[0], panels, strict=True):
            methods = [m for m, c in cost.items() if c.get(k) is not None]
            ax.bar(range(len(methods)), [cost[m][k] for m in methods])
            ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right", fontsize=8)
            ax.set_yscale("log")
            ax.set_title(t)
            ax.grid(axis="y", alpha=0.3)
        files["cost"] = _save(fig, out_dir / "cost.png", plt)
    return files
