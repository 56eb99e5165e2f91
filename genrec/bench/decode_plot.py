"""The decode benchmark's figure: users/s against beam, a panel per model and catalogue size."""

from __future__ import annotations

import math
from pathlib import Path

from genrec.files import save_figure

_COLORS = {
    "genrec (cuda)": "C0",
    "genrec (cpp)": "C0",
    "genrec (triton)": "C4",
    "genrec (reference)": "C1",
    "python_trie": "C3",
    "hf_generate": "C2",
}


def plot_decode(path: Path, rows: list[dict], title: str) -> Path | None:
    """users/s against beam: one panel per (model, catalogue size), one line per method/backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    decode = [r for r in rows if r.get("kind") == "decode" and "users_per_s" in r]
    panels = sorted(
        {(r["model"] if r["method"] != "hf_generate" else "tiger", r["num_items"]) for r in decode}
    )
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (model, n) in zip(axes.flat, panels, strict=False):
        lines: dict[str, list[tuple[int, float]]] = {}
        for r in decode:
            r_model = "tiger" if r["method"] == "hf_generate" else r["model"]
            if (r_model, r["num_items"]) != (model, n):
                continue
            label = r["method"] if r["method"] != "genrec" else f"genrec ({r['backend']})"
            lines.setdefault(label, []).append((r["beam"], r["users_per_s"]))
        for label, pts in sorted(lines.items()):
            pts.sort()
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker="o", label=label, color=_COLORS.get(label)
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("beam")
        ax.set_ylabel("users / s")
        ax.set_title(f"{model} model, {n:,} items", fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
