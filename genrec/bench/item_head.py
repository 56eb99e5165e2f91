"""One test batch of the fused recommender at catalogue scale: time and peak memory of the item
head scored whole ([users, items] log-softmax) against the chunked scan (ItemDecoder.item_head_scan).

Each (items, mode) runs in its own child process, so its peak resident memory is its own. The model
is the default recipe's ItemDecoder shape with random weights and random unique semantic IDs: the
cost of a batch does not depend on what the weights learned. A whole-catalogue configuration whose
logits alone would exceed ``--memory-cap-gb`` is recorded as not run, with the memory it would need.

    python -m genrec.bench.item_head --sizes 12k,100k,1m,10m --out bench/results/item-head-cpu
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from genrec.files import atomic_write_text, save_figure
from genrec.fusion import Fusion, FusionWeights
from genrec.models import ItemDecoder
from genrec.serve.beam import BeamSearchRecommender

MODES = ("whole", "chunked")
D_MODEL = 96


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def _codes(num_items: int, seed: int) -> np.ndarray:
    """Unique random semantic IDs [N, 4] over 256 x 256 x 256 codes (+ a disambiguation token 0)."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(256**3, size=num_items, replace=False)
    return np.stack([flat // 65536, (flat // 256) % 256, flat % 256, np.zeros_like(flat)], axis=1).astype(
        np.int64
    )


def measure_one(
    num_items: int, mode: str, users: int, history: int, seed: int = 0, chunk: int | None = None
) -> dict:
    """Build the model and recommender, then time one batch of ``users`` histories (``chunk``:
    the chunked mode's items per chunk, default ItemDecoder.head_chunk)."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    codes = _codes(num_items, seed)
    model = ItemDecoder(
        [256, 256, 256, 1],
        max_history=20,
        d_model=D_MODEL,
        num_layers=2,
        depth_layers=1,
        num_heads=2,
        head_dim=48,
        d_ff=384,
        num_items=num_items,
        item_loss=1.0,
        item_negatives=1024,
    ).eval()
    model.head_chunk = num_items if mode == "whole" else (chunk or ItemDecoder.head_chunk)
    rec = BeamSearchRecommender(
        model,
        codes,
        beam_size=50,
        exclude_history=True,
        fusion=Fusion(FusionWeights(head_weight=8.0), None, candidates=50),
        batch_users=users,
    )
    rng = np.random.default_rng(seed + 1)
    histories = [rng.integers(0, num_items, size=history) for _ in range(users)]
    setup = time.perf_counter() - started
    rec.topk(histories[:2], 10)  # warm-up: first-call allocations
    started = time.perf_counter()
    items, _ = rec.topk(histories, 10)
    seconds = time.perf_counter() - started
    return {
        "items": num_items,
        "mode": mode,
        "users": users,
        "history": history,
        "batch_seconds": round(seconds, 3),
        "setup_seconds": round(setup, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "lists_full": bool((items >= 0).all()),
        "threads": torch.get_num_threads(),
    }


def run(sizes: list[int], out: Path, users: int, history: int, memory_cap_gb: float, timeout: float) -> dict:
    rows = []
    for n in sizes:
        for mode in MODES:
            logits_gb = users * n * 4 / 2**30
            base = {"items": n, "mode": mode, "users": users, "history": history, "load": os.getloadavg()[0]}
            if mode == "whole" and logits_gb > memory_cap_gb:
                rows.append({**base, "status": f"not run: its logits alone need {logits_gb:.1f} GB"})
                continue
            args = [
                sys.executable,
                "-m",
                "genrec.bench.item_head",
                "--one",
                str(n),
                mode,
                str(users),
                str(history),
            ]
            try:
                done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                rows.append({**base, "status": f"timed out after {timeout:.0f} s"})
                continue
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                rows.append({**base, "status": f"failed (exit {done.returncode}): {tail[0]}"})
                continue
            rows.append({**base, **json.loads(done.stdout.strip().splitlines()[-1]), "status": "ok"})
            print(json.dumps(rows[-1]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "item_head",
        "users": users,
        "history": history,
        "memory_cap_gb": memory_cap_gb,
        "rows": rows,
    }
    atomic_write_text(out / "item_head.json", json.dumps(result, indent=1) + "\n")
    keys = ("items", "mode", "users", "batch_seconds", "peak_rss_gb", "setup_seconds", "load", "status")
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    atomic_write_text(out / "item_head.csv", "\n".join(lines) + "\n")
    _plot(rows, out / "item_head.png")
    return result


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for mode, marker in zip(MODES, ("o", "s"), strict=True):
        ok = [r for r in rows if r["mode"] == mode and r.get("status") == "ok"]
        x = [r["items"] for r in ok]
        axes[0].plot(x, [r["batch_seconds"] for r in ok], marker=marker, label=mode)
        axes[1].plot(x, [r["peak_rss_gb"] for r in ok], marker=marker, label=mode)
    for ax, label in zip(axes, ("seconds per test batch", "peak resident memory (GB)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalogue items")
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("item head: whole-catalogue log-softmax vs chunked scan (one batch, CPU)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="12k,100k,1m")
    parser.add_argument("--users", type=int, default=1024)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/item-head-cpu"))
    parser.add_argument("--memory-cap-gb", type=float, default=12.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--one", nargs=4, metavar=("ITEMS", "MODE", "USERS", "HISTORY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.one:
        n, mode, users, history = args.one
        print(json.dumps(measure_one(int(n), mode, int(users), int(history))))
        return
    run(
        [parse_size(s) for s in args.sizes.split(",")],
        args.out,
        args.users,
        args.history,
        args.memory_cap_gb,
        args.timeout,
    )


if __name__ == "__main__":
    main()
