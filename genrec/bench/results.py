"""Writing benchmark results: JSON (with the environment), CSV, and a PNG plot."""

from __future__ import annotations

import csv
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch

from genrec import heap
from genrec.devices import device_name
from genrec.files import atomic_path, atomic_write_text, json_text, save_figure


def git_sha() -> str | None:
    """The commit of the source tree genrec runs from, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device | str) -> dict:
    """What a benchmark's figures depend on besides its own settings. ``memory``: the allocator (a
    preloaded tcmalloc moves a CPU training step by about 10%, bench/results/scale-cpu/NOTES.md)."""
    return {
        "git_sha": git_sha(),
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "memory": heap.describe(),
    }


def write_results(out_dir: Path, name: str, payload: dict, rows: Sequence[dict]) -> dict[str, Path]:
    """Write ``<name>.json`` (payload with rows) and ``<name>.csv``; returns the paths."""
    out_dir = Path(out_dir)
    json_path = out_dir / f"{name}.json"
    csv_path = out_dir / f"{name}.csv"
    atomic_write_text(json_path, json_text({**payload, "rows": list(rows)}, indent=2) + "\n")
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(csv_path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return {"json": json_path, "csv": csv_path}


def plot_bars(
    path: Path, title: str, groups: list[str], series: dict[str, list[float]], ylabel: str
) -> Path | None:
    """Grouped bar chart (one group per size, one bar per backend). None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) + 2), 4))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=15, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
