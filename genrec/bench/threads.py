"""``genrec bench threads``: CPU thread settings against a busy neighbour (issue 20).

For each background load (0 = quiet, 1 = one CPU-bound process, ...) and each setting, a fresh
child process times four workloads:

- ``decode``: ``beam_search`` with the C++ beam step on precomputed logits (100,000 synthetic
  4-token IDs, beam 20, 64 users): the search alone, as in the issue's check;
- ``decode_tiger``: the same search driven by a TIGER-size model (random weights, float32);
- ``train``: a fixed number of training steps (forward, backward, clipping, AdamW) of the demo's
  model (``configs/tiger_beauty.toml --profile cpu``) on synthetic Beauty-sized sequences: an
  epoch of the demo is ~174 such steps;
- ``rq_encode``: the C++ kernel at the tokenizer's size (N=100,000, D=32, 3 x 256 codes) and a
  wide one (N=4,096, D=768, 4 x 1,024).

Settings: ``default`` (no thread setting), ``1`` and ``2`` threads (``torch.set_num_threads``),
each with genrec's defaults (``after``: the short OpenMP spin of genrec/_openmp.py, the kernels'
chunked loop of csrc/cpu/parallel.h and, at the default thread count, genrec.cpu_threads lowering
the count while other processes hold cores, checked between iterations as genrec's training
loop and recommender do) and with the previous behaviour (``before``: ``GOMP_SPINCOUNT=300000``,
libgomp's spin when nothing is set; ``GENREC_CPU_PARALLEL=openmp``, the kernels' former OpenMP
regions; ``GENREC_ADAPTIVE_THREADS=0``). These are read once per process, hence one child per cell; cells are interleaved
(every setting once, then again) so that drift in the machine's load hits all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import genrec
from genrec import _openmp, cpu_threads
from genrec.bench.background import background_load
from genrec.bench.decode_fixtures import (
    PrecomputedLogits,
    history_batch,
    synthetic_catalogue,
    tiger_model,
)
from genrec.bench.kernels import RQSize, _rq_inputs
from genrec.bench.results import environment, write_results
from genrec.config import load_config
from genrec.decoding import TrieIndex, beam_search
from genrec.devices import cpu_model
from genrec.files import save_figure
from genrec.models import build_model
from genrec.ops import rq_encode
from genrec.train.examples import BatchMaker, build_examples, epoch_batches
from genrec.train.recipe import LossModule, make_optimizer

# "before": libgomp's own default spin (what it does when nothing is set), the kernels' OpenMP
# regions (csrc/cpu/parallel.h) and a fixed thread count; "after": genrec's defaults; "spin-1000":
# genrec's defaults but the 1,000-iteration spin it used until December 2026.
POLICIES = {
    "before": {"GOMP_SPINCOUNT": "300000", "GENREC_CPU_PARALLEL": "openmp", "GENREC_ADAPTIVE_THREADS": "0"},
    "after": {},
    "spin-1000": {"GOMP_SPINCOUNT": "1000"},  # genrec's defaults with its first, shorter spin (genrec/_openmp.py)
}
THREADS = (0, 1, 2)
WORKLOADS = ("decode", "decode_tiger", "train", "rq_encode_d32", "rq_encode_d768")
UNITS = {
    "decode": "users/s",
    "decode_tiger": "users/s",
    "train": "steps/s",
    "rq_encode_d32": "rows/s",
    "rq_encode_d768": "rows/s",
}
# Environment variables that would decide the child's threading behind the cell's back.
_CLEARED = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OMP_DYNAMIC",
    "GENREC_CPU_PARALLEL",
    "GENREC_ADAPTIVE_THREADS",
)


# ---------------------------------------------------------------- the child: one cell
def _median_call_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        cpu_threads.tick()
        fn()
    times = []
    for _ in range(repeats):
        cpu_threads.tick()  # where genrec's loops check (between batches); not timed
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _decode(quick: bool, tiger: bool) -> tuple[float, list[float]]:
    cat = synthetic_catalogue(100_000)
    index = TrieIndex.from_codes(cat.codes, level_sizes=cat.level_sizes)
    users, beam, cpu = 64, 20, torch.device("cpu")
    if tiger:
        model = tiger_model(cat.level_sizes, cpu, torch.float32)
        batch = history_batch(cat, users, cpu)

        def step():
            return model.step_fn(batch, beam)

        repeats = 2 if quick else 5
    else:
        pre = PrecomputedLogits(users, beam, cat.level_sizes, cpu)
        step = pre.step_fn
        repeats = 5 if quick else 40
    with torch.no_grad():
        times = _median_call_seconds(
            lambda: beam_search(step(), index, users, beam, beam, backend="cpp"), repeats
        )
    return users, times


def _train(quick: bool) -> tuple[float, list[float]]:
    path = Path(genrec.__file__).resolve().parents[1] / "configs" / "tiger_beauty.toml"
    if not path.is_file():
        raise FileNotFoundError(f"the train workload needs the demo's config, {path} (a source checkout)")
    config = load_config(path, profile="cpu")
    t = config.train
    # Beauty's size: 22,363 users, 12,101 items, ~9 interactions a user; 3 levels of 256 codes.
    rng = np.random.default_rng(0)
    num_users, num_items = 22_363, 12_101
    lengths = rng.integers(5, 15, num_users)
    flat = rng.integers(0, num_items, int(lengths.sum()))
    ends = np.cumsum(lengths)
    codes = np.concatenate([rng.integers(0, 256, (num_items, 3)), np.zeros((num_items, 1), np.int64)], 1)
    torch.manual_seed(0)
    model = build_model(config.model, [256, 256, 256, 1], t.max_history, num_items)
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    examples = build_examples(ends - lengths, ends - 2, t.max_history, model.example_kind)
    maker = BatchMaker(examples, flat, codes, torch.device("cpu"))
    batches = epoch_batches(examples, t.batch_size, 0, 0, t.length_grouping)
    loss = LossModule(model, t.label_smoothing)
    params = list(model.parameters())
    model.train()
    counter = iter(range(10**9))

    def step():
        cpu_threads.tick()  # as genrec.train.trainer does before each step
        total = loss(maker(batches[next(counter) % len(batches)]))
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    steps = 3 if quick else 20
    # One figure per block of steps (the steps' batches differ in length, a block averages that).
    return steps, _median_call_seconds(lambda: [step() for _ in range(steps)], 1 if quick else 3, warmup=1)


def _rq_encode(quick: bool, wide: bool) -> tuple[float, list[float]]:
    size = RQSize(4_096, 768, 4, 1024) if wide else RQSize(100_000, 32, 3, 256)
    if quick:
        size = RQSize(size.n // 8, size.d, size.levels, size.k)
    x, cb = _rq_inputs(size, torch.device("cpu"), torch.float32)
    times = _median_call_seconds(lambda: rq_encode(x, cb, backend="cpp", validate=False), 3 if quick else 9)
    return size.n, times


def measure_cell(threads: int, workloads: tuple[str, ...], quick: bool) -> dict:
    """Time ``workloads`` in this process with ``threads`` torch threads (0: leave the default)."""
    if threads:
        torch.set_num_threads(threads)
    else:
        cpu_threads.enable()  # what genrec's command line does when no thread count is given
    out = {"threads_used": torch.get_num_threads(), "openmp": _openmp.describe(), "results": {}}
    for name in workloads:
        load = os.getloadavg()[0]
        if name in ("decode", "decode_tiger"):
            per_call, times = _decode(quick, tiger=name == "decode_tiger")
        elif name == "train":
            per_call, times = _train(quick)
        else:
            per_call, times = _rq_encode(quick, wide=name == "rq_encode_d768")
        median = statistics.median(times)
        out["results"][name] = {
            "per_call": per_call,
            "seconds": times,
            "median_s": median,
            "rate": per_call / median,
            "load_average_1min": round(load, 2),
            "threads_at_end": torch.get_num_threads(),
        }
    out["adaptive_threads"] = cpu_threads.describe()
    return out


# ---------------------------------------------------------------- the parent: the sweep
def _child_env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(POLICIES[policy])
    return env


def _run_cell(policy: str, threads: int, workloads, quick: bool, timeout: float) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "genrec.bench.threads",
        "--cell",
        str(threads),
        "--workloads",
        ",".join(workloads),
    ]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, env=_child_env(policy), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"cell {policy}/{threads} threads failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(cells: list[dict]) -> list[dict]:
    """One row per (load, workload, policy, threads): the median over repeats, and its ratio to the
    best explicit thread count (1 or 2) under the same load, same policy and any policy."""
    rows = []
    keys = sorted({(c["load"], w) for c in cells for w in c["results"]})
    for load, workload in keys:
        med: dict[tuple[str, int], float] = {}
        spread: dict[tuple[str, int], list[float]] = {}
        for policy in POLICIES:
            for threads in THREADS:
                rates = [
                    c["results"][workload]["rate"]
                    for c in cells
                    if c["load"] == load and c["policy"] == policy and c["threads"] == threads
                    and workload in c["results"]
                ]  # fmt: skip
                if rates:
                    med[(policy, threads)] = statistics.median(rates)
                    spread[(policy, threads)] = rates
        best_any = max((v for (p, t), v in med.items() if t), default=None)
        for (policy, threads), rate in med.items():
            best_same = max((v for (p, t), v in med.items() if t and p == policy), default=None)
            rows.append(
                {
                    "workload": workload,
                    "background_load": load,
                    "policy": policy,
                    "threads": threads or "default",
                    "rate": rate,
                    "unit": UNITS[workload],
                    "rates": spread[(policy, threads)],
                    "slowdown_vs_best_1_or_2_threads_same_policy": best_same / rate if best_same else None,
                    "slowdown_vs_best_1_or_2_threads_any_policy": best_any / rate if best_any else None,
                }
            )
    return rows


def run_thread_benchmarks(
    out_dir: Path,
    *,
    loads: tuple[int, ...] = (0, 1),
    repeats: int = 3,
    workloads: tuple[str, ...] = WORKLOADS,
    policies: tuple[str, ...] = tuple(POLICIES),
    quick: bool = False,
    cell_timeout: float = 1800.0,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the sweep; write threads.json/.csv/.png under ``out_dir``."""
    for w in workloads:
        if w not in WORKLOADS:
            raise ValueError(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    for p in policies:
        if p not in POLICIES:
            raise ValueError(f"unknown policy {p!r}; choose from {', '.join(POLICIES)}")
    started = time.perf_counter()
    cells, loads_record = [], []
    for load in loads:
        with background_load(load) as record:
            settings = [(p, t) for p in policies for t in THREADS]
            for rep in range(repeats):
                shift = rep % len(settings)  # each repeat starts elsewhere: no setting is always first
                for policy, threads in settings[shift:] + settings[:shift]:
                    before = round(os.getloadavg()[0], 2)
                    cell = _run_cell(policy, threads, workloads, quick, cell_timeout)
                    cells.append({"load": load, "repeat": rep, "policy": policy, "threads": threads,
                                      "load_average_1min_before": before, **cell})  # fmt: skip
                    rates = ", ".join(f"{w} {r['rate']:,.1f}" for w, r in cell["results"].items())
                    log(f"load {load} rep {rep} {policy} threads={threads or 'default'}: {rates}")
        loads_record.append(record)
    rows = summarize(cells)
    payload = {
        "benchmark": "threads",
        **environment("cpu"),
        "device": f"{cpu_model()} ({os.cpu_count()} CPUs)",
        "cpu_count": os.cpu_count(),
        # What "default" meant in the children (the parent's own count may come from its environment).
        "default_threads": sorted({c["threads_used"] for c in cells if c["threads"] == 0}),
        "config": {
            "loads": list(loads),
            "repeats": repeats,
            "workloads": list(workloads),
            "policies": {p: POLICIES[p] or "genrec's default (genrec/_openmp.py)" for p in policies},
            "quick": quick,
        },
        "background_loads": loads_record,
        "cells": cells,
        "seconds": time.perf_counter() - started,
    }
    out_dir = Path(out_dir)
    paths = write_results(out_dir, "threads", payload, rows)
    png = plot_threads(out_dir / "threads.png", rows)
    if png:
        paths["png"] = png
    return {"payload": payload, "rows": rows, "paths": paths}


def plot_threads(path: Path, rows: list[dict]) -> Path | None:
    """Slowdown against the best of 1 and 2 threads, per workload and load, one bar per setting."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = list(dict.fromkeys(f"{r['workload']}\nload {r['background_load']}" for r in rows))
    settings = list(dict.fromkeys(f"{r['policy']} {r['threads']}" for r in rows))
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(groups) + 2), 4.5))
    width = 0.8 / max(1, len(settings))
    for i, setting in enumerate(settings):
        values = [
            next(
                (
                    r["slowdown_vs_best_1_or_2_threads_any_policy"]
                    for r in rows
                    if f"{r['workload']}\nload {r['background_load']}" == g
                    and f"{r['policy']} {r['threads']}" == setting
                ),
                0.0,
            )
            for g in groups
        ]
        xs = [g + (i - (len(settings) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=setting)
    ax.axhline(1.3, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(groups)), groups, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("time / best of 1 and 2 threads")
    ax.set_title("CPU thread settings, quiet and with busy neighbours (dashed: 1.3x)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _main() -> None:
    parser = argparse.ArgumentParser(description="One cell of genrec bench threads (prints JSON).")
    parser.add_argument("--cell", type=int, required=True, help="torch threads (0: the default)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    workloads = tuple(w for w in args.workloads.split(",") if w)
    print(json.dumps(measure_cell(args.cell, workloads, args.quick)))


if __name__ == "__main__":
    _main()
