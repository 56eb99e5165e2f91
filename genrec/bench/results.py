"""Writing benchmark results: JSON (with the environment), CSV, and a PNG plot."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch


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


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def environment(device: torch.device | str) -> dict:
    return {
        "git_sha": git_sha(),
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }


def finite_json(value):
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN; null says "none")."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def json_text(data, **options) -> str:
    """Strict JSON of ``data`` (non-finite floats written as null, never a bare NaN)."""
    return json.dumps(finite_json(data), allow_nan=False, **options)


def default_file_mode() -> int:
    """0o666 under the process umask: what a plainly created file gets (mkstemp's files are 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(fig, path: Path, *, dpi: int = 120) -> Path:
    """Write the matplotlib figure ``fig`` to ``path`` (format from its suffix) through a temporary
    file and a rename, so a reader never sees a half-written image; then close the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def write_results(out_dir: Path, name: str, payload: dict, rows: Sequence[dict]) -> dict[str, Path]:
    """Write ``<name>.json`` (payload with rows) and ``<name>.csv``; returns the paths."""
    out_dir = Path(out_dir)
    json_path = out_dir / f"{name}.json"
    csv_path = out_dir / f"{name}.csv"
    atomic_write_text(json_path, json_text({**payload, "rows": list(rows)}, indent=2) + "\n")
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with tempfile.NamedTemporaryFile("w", delete=False, dir=out_dir, suffix=".csv", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.chmod(f.name, default_file_mode())
    os.replace(f.name, csv_path)
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
