"""The plot of ``genrec bench scale`` (genrec.bench.scale): time and peak memory per stage against
catalogue size, log-log."""

from __future__ import annotations

from pathlib import Path

from genrec.bench.scale_decode import DECODE_STAGES
from genrec.files import save_figure

#: The pipeline stages, in the order genrec.bench.scale runs them.
STAGES = ("generate", "prepare", "embed", "tokenize", "train", "test")


def plot_scale(path: Path, rows: list[dict]) -> Path | None:
    """Log-log: wall time and peak memory against items, one line per stage; a stage that timed
    out is drawn at its timeout with an upward triangle (a lower bound), one that failed as a cross.
    The decoding stages (dashed, squares) are drawn at their operation's own time (the trie build,
    one beam batch, the encode of every row) where they finished, and their child's peak memory."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    labels = {
        "semantic_ids": "semantic IDs (made)",
        "trie": "trie build",
        "beam": "beam batch (256 users, beam 20)",
        "encode": "tokenizer encode (all rows)",
    }
    for i, stage in enumerate(STAGES + DECODE_STAGES):
        mine = [r for r in rows if r["stage"] == stage and r.get("status") in ("ok", "timed out", "failed")]
        if not mine:
            continue
        color = f"C{i}"
        decoding = stage in DECODE_STAGES
        for ax, key in zip(axes, ("seconds", "peak_rss_gb"), strict=True):
            ok = [r for r in mine if r["status"] == "ok"]
            own = "operation_seconds" if decoding and key == "seconds" else key
            ax.plot(
                [r["items"] for r in ok],
                [r.get(own, r[key]) for r in ok],
                "s--" if decoding else "o-",
                color=color,
                label=labels.get(stage, stage),
            )
            late = [r for r in mine if r["status"] == "timed out"]
            if late:
                ax.plot([r["items"] for r in late], [r[key] for r in late], "^", color=color, ms=9)
            failed = [r for r in mine if r["status"] == "failed"]
            if failed:
                ax.plot([r["items"] for r in failed], [r[key] for r in failed], "x", color=color, ms=9, mew=2)
    for ax, label in zip(axes, ("wall time (s)", "peak memory (GB)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("time per stage (triangle: timed out, cross: failed)\ndashed: decoding, the operation's own time", fontsize=9)
    axes[1].set_title("peak resident memory per stage (its child process)", fontsize=9)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=5, fontsize=8, frameon=False)  # below, off the lines
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save_figure(fig, path, dpi=110)
