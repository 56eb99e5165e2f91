"""The decode part of ``bench/gpu_check.sh`` (``genrec bench decode --gpu-check``): a short, fixed
sweep on the GPU and a summary of it against the targets the project set for that machine."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from genrec.bench.decode import run_decode_benchmarks
from genrec.bench.decode_fixtures import BEAUTY_ITEMS, TIGER_SIZE
from genrec.files import atomic_write_text

TARGET_USERS_PER_S = 100_000
TARGET_SELECT_SHARE = 0.05


def run_gpu_check(
    out_dir: Path,
    log: Callable[[str], None] = print,
    *,
    device: str | torch.device = "cuda",
    items: int = BEAUTY_ITEMS,
    users: int | None = None,
    kernel_users: int | None = None,
    extra_kernel_items: int = 1_000_000,
    backends: list[str] | None = None,
    quick: bool = False,
) -> dict:
    """The decode part of bench/gpu_check.sh, about two minutes on an H100: the TIGER-size model on a
    Beauty-size catalogue at beam 20 per CUDA backend (graphed), the mask-and-select share, and the
    beam-step kernels' bandwidth against the measured copy ceiling (beams 10 to 100, and a 1M
    catalogue); writes decode_summary.json beside decode.json/.csv/.png. The keyword arguments
    shrink it for a test run on the CPU."""
    device = torch.device(device)
    result = run_decode_benchmarks(
        out_dir,
        device,
        items=(items,),
        beams=(20,),
        models=("tiger",),
        baselines=(),
        repeats=5,
        users=users,
        kernel_users=kernel_users,
        extra_kernels=((items, (10, 50, 100)), (extra_kernel_items, (20,))),
        backends=backends,
        quick=quick,
        log=log,
    )
    rows = result["rows"]
    decode = [r for r in rows if r.get("kind") == "decode" and "users_per_s" in r]
    kernels = [r for r in rows if r.get("kind") == "kernel" and "GBps" in r]
    errors = [r for r in rows if "error" in r]
    if not decode:
        summary = {
            "error": "every backend failed",
            "errors": errors,
            "ceilings": result["payload"]["ceilings"],
        }
    else:
        summary = _decode_summary(result, decode, kernels, errors)
    atomic_write_text(Path(out_dir) / "decode_summary.json", json.dumps(summary, indent=2) + "\n")
    return {"summary": summary, **result}


def _decode_summary(result: dict, decode: list[dict], kernels: list[dict], errors: list[dict]) -> dict:
    """decode_summary.json where some backend decoded: the fastest one's figures against the
    targets, every backend's, the kernels' bandwidth and the errors of those that failed."""
    best = max(decode, key=lambda r: r["users_per_s"])
    return {
        "users_per_s": best["users_per_s"],
        "beam": best["beam"],
        "num_items": best["num_items"],
        "d_model": TIGER_SIZE["d_model"],
        "model": f"genrec.models.Tiger {TIGER_SIZE}, random weights, {result['payload']['config']['model_dtype']}",
        "backend": best["backend"],
        "batch_users": best["users"],
        "latency_ms": best["latency_ms"],
        "graphed": best["graphed"],
        "graph_fallback": best.get("graph_fallback"),
        "select_share": best["select_share"],
        "by_backend": {
            r["backend"]: {k: r[k] for k in ("users_per_s", "latency_ms", "select_share", "graphed")}
            for r in decode
        },
        "targets": {"users_per_s": TARGET_USERS_PER_S, "select_share": TARGET_SELECT_SHARE},
        "meets_targets": {
            "users_per_s": best["users_per_s"] >= TARGET_USERS_PER_S,
            "select_share": best["select_share"] < TARGET_SELECT_SHARE,
        },
        "ceilings": result["payload"]["ceilings"],
        "kernels": [
            {
                k: r[k]
                for k in (
                    "backend",
                    "num_items",
                    "beam",
                    "level",
                    "users",
                    "dense",
                    "median_ms",
                    "GBps",
                    "pct_of_copy_bw",
                )
            }
            for r in kernels
        ],
        "errors": errors,
        "device": result["payload"]["device"],
        "torch": torch.__version__,
        "git_sha": result["payload"].get("git_sha"),
        "host": platform.node(),
    }
