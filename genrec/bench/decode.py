"""``genrec bench decode``: constrained beam search, end to end, against the usual ways of doing it.

What is timed, per catalogue size (synthetic TIGER-style IDs: 3 levels of 256 codes plus a
disambiguation token), beam size and method:

- ``genrec`` (one row per beam-step backend): ``genrec.decoding`` with the fused
  ``constrained_beam_step``; on CUDA the whole search replays as one CUDA graph;
- ``python_trie``: the same model and loop, but each step masks with a Python callback per beam
  over a dict trie and selects with ``log_softmax`` + ``topk`` (the ``prefix_allowed_tokens_fn``
  pattern), what most generative-retrieval code does;
- ``hf_generate``: ``transformers`` ``T5ForConditionalGeneration.generate(num_beams=...,
  prefix_allowed_tokens_fn=...)`` on a T5 of TIGER's size, when transformers is installed.

Two model settings: ``tiger`` (``genrec.models.Tiger`` at TIGER's size, random weights: speed
does not depend on them) and ``precomputed`` (logits ready-made, so only the search is timed).
Each row reports users/s, latency per batch, and the share of decode time spent in the
mask-and-select step (from a separately instrumented run). Kernel rows time the beam step
alone per level and report its bandwidth against the device's measured copy ceiling.

Imports neither polars, faiss nor transformers unless the hf baseline runs.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from genrec import _openmp
from genrec.bench.background import background_load
from genrec.bench.ceilings import measure_ceilings
from genrec.bench.decode_baselines import HFGenerateBaseline, PythonTrie, hf_available, python_trie_search
from genrec.bench.decode_fixtures import (
    HISTORY_ITEMS,
    TIGER_SIZE,
    Catalogue,
    PrecomputedLogits,
    build_index,
    history_batch,
    synthetic_catalogue,
    tiger_model,
)
from genrec.bench.decode_kernels import failed_row, kernel_rows
from genrec.bench.decode_plot import plot_decode
from genrec.bench.results import environment, write_results
from genrec.bench.timing import PartTimer, time_calls
from genrec.decoding import GraphedBeamSearch, TrieIndex, beam_search
from genrec.ops import Backend, available_backends


def _select_share(
    run: Callable[[PartTimer], object], device: torch.device, runs: int = 1
) -> tuple[float, float]:
    """(mask-and-select seconds, whole-decode seconds) summed over ``runs`` instrumented runs, so that
    a pause of the process in one run (a busy machine) weighs little."""
    timer = PartTimer(device)
    for _ in range(runs):
        with timer("total"):
            run(timer)
    parts = timer.seconds()
    return parts.get("select", 0.0) / runs, parts["total"] / runs


# ---------------------------------------------------------------- the sweep
@dataclass
class DecodeSweep:
    device: torch.device
    items: tuple[int, ...]
    beams: tuple[int, ...]
    models: tuple[str, ...]
    backends: list[Backend]
    baselines: tuple[str, ...]
    baseline_max_items: int
    repeats: int
    quick: bool
    dtype: torch.dtype
    users: int | None = None
    kernel_users: int | None = None
    extra_kernels: tuple[tuple[int, tuple[int, ...]], ...] = ()


def _users_for(sweep: DecodeSweep, model: str, beam: int, method: str) -> int:
    if sweep.users:
        return sweep.users if method != "hf_generate" else max(1, min(sweep.users, 16))
    gpu = sweep.device.type == "cuda"
    if method == "hf_generate":
        return max(2, min(32, round(160 / beam)))
    if gpu:
        if method == "python_trie":
            return max(16, round(2560 / beam))
        return 8192 if beam <= 20 else (4096 if beam <= 50 else 2048)
    work = 640 if model == "tiger" else 4000
    if sweep.quick:
        work //= 8
    return max(4, min(512, round(work / beam)))


def _decode_row(
    method, backend, model, cat, beam, users, times, select_s, total_s, graphed=False, **graph
) -> dict:
    """One decode row: the median latency of ``times`` per batch of ``users``, and the share of
    the instrumented decode spent in mask-and-select (top_k is the beam); ``graph``: the CUDA
    graph's facts, after ``graphed``."""
    latency = statistics.median(times)
    return {
        "kind": "decode",
        "method": method,
        "backend": backend,
        "model": model,
        "num_items": cat.num_items,
        "beam": beam,
        "top_k": beam,
        "users": users,
        "latency_ms": latency * 1e3,
        "users_per_s": users / latency,
        "graphed": graphed,
        **graph,
        "select_ms": select_s * 1e3,
        "eager_ms": total_s * 1e3,
        "select_share": select_s / total_s,
    }


def _genrec_row(sweep, index, cat, model_name, beam, backend, users, model) -> dict:
    device = sweep.device
    top_k = beam
    batch = history_batch(cat, users, device)
    if model_name == "tiger":

        def make_step(b):
            return model.step_fn(b, beam)

    else:
        pre = PrecomputedLogits(users, beam, cat.level_sizes, device)
        make_step = pre.step_fn
    search = GraphedBeamSearch(
        make_step, index, num_users=users, beam_size=beam, top_k=top_k, backend=backend.value
    )
    with torch.no_grad():
        times = time_calls(lambda: search(batch), device, sweep.repeats)
        graphed = search.graphed

        def instrumented(timer):
            beam_search(make_step(batch), index, users, beam, top_k, backend=backend.value, timer=timer)

        _select_share(instrumented, device)  # warm-up of the eager path
        select_s, total_s = _select_share(instrumented, device, runs=sweep.repeats)
    fallback = search.fallback_reason if not graphed and device.type == "cuda" else None
    return _decode_row(
        "genrec", backend.value, model_name, cat, beam, users, times, select_s, total_s, graphed,
        graph_fallback=fallback,
    )  # fmt: skip


def _python_trie_row(sweep, trie, cat, model_name, beam, users, model) -> dict:
    device = sweep.device
    batch = history_batch(cat, users, device)
    levels = len(cat.level_sizes)
    if model_name == "tiger":

        def make_step():
            return model.step_fn(batch, beam)

    else:
        pre = PrecomputedLogits(users, beam, cat.level_sizes, device)
        make_step = pre.step_fn
    with torch.no_grad():

        def run(timer=None):
            return python_trie_search(make_step(), trie, users, beam, beam, levels, device, timer)

        times = time_calls(run, device, max(1, sweep.repeats - 1), warmup=0)
        select_s, total_s = _select_share(run, device, runs=max(1, sweep.repeats - 1))
    return _decode_row("python_trie", "python", model_name, cat, beam, users, times, select_s, total_s)


def _hf_row(sweep, hf: HFGenerateBaseline, cat, beam, users) -> dict:
    batch = history_batch(cat, users, sweep.device)
    times = time_calls(
        lambda: hf.decode(batch, beam, beam), sweep.device, max(1, sweep.repeats - 1), warmup=0
    )
    hf.callback_seconds = 0.0
    t0 = time.perf_counter()
    hf.decode(batch, beam, beam)
    total = time.perf_counter() - t0
    # The select share is the callbacks' alone: a lower bound.
    return _decode_row("hf_generate", "python", "t5-tiger-size", cat, beam, users, times, hf.callback_seconds, total)


def run_sweep(
    sweep: DecodeSweep, ceilings: dict, log: Callable[[str], None] = print
) -> tuple[list[dict], list[dict]]:
    rows: list[dict] = []
    builds: list[dict] = []
    for n in sweep.items:
        cat = synthetic_catalogue(n)
        index, info = build_index(cat, sweep.device)
        builds.append(info)
        log(
            f"catalogue {n:,} items: trie built in {info['build_trie_s']:.2f}s (index {info['from_codes_s']:.2f}s)"
        )
        rows += _catalogue_rows(sweep, cat, index, log)
        kernel_beams = list(sweep.beams) + [b for m, bs in sweep.extra_kernels if m == n for b in bs]
        for beam in dict.fromkeys(kernel_beams):
            rows += kernel_rows(
                index, _kernel_users(sweep), beam, sweep.backends, ceilings, sweep.device, sweep.quick
            )
        del index
    for n, kernel_beams in sweep.extra_kernels:
        if n in sweep.items:
            continue
        index, info = build_index(synthetic_catalogue(n), sweep.device)
        builds.append(info)
        for beam in kernel_beams:
            rows += kernel_rows(
                index, _kernel_users(sweep), beam, sweep.backends, ceilings, sweep.device, sweep.quick
            )
        del index
    _add_speedups(rows)
    return rows, builds


def _catalogue_rows(sweep: DecodeSweep, cat: Catalogue, index: TrieIndex, log) -> list[dict]:
    """Every decode row of one catalogue: genrec per backend, then the baselines, per model and beam."""
    n = cat.num_items
    rows: list[dict] = []
    need_trie = "python_trie" in sweep.baselines or "hf_generate" in sweep.baselines
    trie = PythonTrie(cat.codes) if need_trie and n <= sweep.baseline_max_items else None
    hf = None
    if "hf_generate" in sweep.baselines and trie is not None and hf_available():
        hf = HFGenerateBaseline(cat, trie, sweep.device)
    too_large = f"catalogue above --baseline-max-items ({sweep.baseline_max_items:,})"
    for model_name in sweep.models:
        model = tiger_model(cat.level_sizes, sweep.device, sweep.dtype) if model_name == "tiger" else None
        for beam in sweep.beams:
            users = _users_for(sweep, model_name, beam, "genrec")
            for backend in sweep.backends:
                try:
                    row = _genrec_row(sweep, index, cat, model_name, beam, backend, users, model)
                except Exception as exc:  # one failing backend must not cost the other rows
                    rows.append(failed_row("genrec", backend.value, model_name, n, beam, exc))
                    log(f"  genrec {backend.value} beam={beam}: FAILED {rows[-1]['error']}")
                    continue
                rows.append(row)
                log(_describe(row))
            if "python_trie" in sweep.baselines:
                if trie is None:
                    rows.append(_skipped("python_trie", model_name, n, beam, too_large))
                else:
                    users = _users_for(sweep, model_name, beam, "python_trie")
                    rows.append(_python_trie_row(sweep, trie, cat, model_name, beam, users, model))
                    log(_describe(rows[-1]))
            if "hf_generate" in sweep.baselines and model_name == "tiger":
                if not hf_available():
                    rows.append(_skipped("hf_generate", "t5-tiger-size", n, beam, "transformers is not installed"))
                elif hf is None:
                    rows.append(_skipped("hf_generate", "t5-tiger-size", n, beam, too_large))
                else:
                    users = _users_for(sweep, model_name, beam, "hf_generate")
                    rows.append(_hf_row(sweep, hf, cat, beam, users))
                    log(_describe(rows[-1]))
        del model
    return rows


def _kernel_users(sweep: DecodeSweep) -> int:
    return sweep.kernel_users or (4096 if sweep.device.type == "cuda" else 256)


def _skipped(method, model, n, beam, why) -> dict:
    return {
        "kind": "decode",
        "method": method,
        "backend": "python",
        "model": model,
        "num_items": n,
        "beam": beam,
        "skipped": why,
    }


def _describe(row: dict) -> str:
    return (
        f"  {row['method']:>11} {row['backend']:>9} {row['model']:>13} items={row['num_items']:>9,} "
        f"beam={row['beam']:>3} users={row['users']:>5}: {row['users_per_s']:>10,.1f} users/s, "
        f"{row['latency_ms']:9.2f} ms/batch, select {100 * row['select_share']:5.1f}%"
        + (" (graph)" if row.get("graphed") else "")
    )


def _add_speedups(rows: list[dict]) -> None:
    """speedup_vs_python_trie: users/s over the Python-trie baseline's with the same model, catalogue, beam."""
    base = {
        (r["model"], r["num_items"], r["beam"]): r["users_per_s"]
        for r in rows
        if r.get("method") == "python_trie" and "users_per_s" in r
    }
    hf = {
        (r["num_items"], r["beam"]): r["users_per_s"]
        for r in rows
        if r.get("method") == "hf_generate" and "users_per_s" in r
    }
    for r in rows:
        if r.get("kind") != "decode" or "users_per_s" not in r:
            continue
        key = (r["model"], r["num_items"], r["beam"])
        if key in base:
            r["speedup_vs_python_trie"] = r["users_per_s"] / base[key]
        if r["model"] == "tiger" and (r["num_items"], r["beam"]) in hf:
            r["speedup_vs_hf_generate"] = r["users_per_s"] / hf[(r["num_items"], r["beam"])]


def default_backends(device: torch.device) -> list[Backend]:
    found = available_backends("constrained_beam_step", device)
    if device.type == "cpu":
        found = [b for b in found if b is not Backend.TRITON]  # the interpreter is for tests only
    return found


def run_decode_benchmarks(
    out_dir: Path,
    device: str | torch.device,
    *,
    items: tuple[int, ...] = (10_000, 1_000_000, 10_000_000),
    beams: tuple[int, ...] = (10, 20, 50, 100),
    models: tuple[str, ...] = ("tiger", "precomputed"),
    backends: list[str] | None = None,
    baselines: tuple[str, ...] = ("python_trie", "hf_generate"),
    baseline_max_items: int = 1_000_000,
    repeats: int = 3,
    users: int | None = None,
    dtype: str | None = None,
    quick: bool = False,
    extra_kernels: tuple[tuple[int, tuple[int, ...]], ...] = (),
    kernel_users: int | None = None,
    background: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the decode sweep on ``device``; write decode.json/.csv/.png under ``out_dir``.

    ``extra_kernels``: (catalogue size, beams) pairs timed for the beam-step kernel alone.
    ``background``: CPU-bound processes kept running beside the sweep (genrec.bench.background)."""
    device = torch.device(device)
    chosen = [Backend(b) for b in backends] if backends else default_backends(device)
    torch_dtype = (
        getattr(torch, dtype) if dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    sweep = DecodeSweep(
        device, tuple(items), tuple(beams), tuple(models), chosen, tuple(baselines), baseline_max_items,
        repeats, quick, torch_dtype, users, kernel_users, tuple(extra_kernels),
    )  # fmt: skip
    load_before = _load()
    t0 = time.perf_counter()
    with background_load(background) as load_record:
        ceilings = measure_ceilings(device)
        rows, builds = run_sweep(sweep, ceilings, log)
    payload = {
        "benchmark": "decode",
        **environment(device),
        "ceilings": ceilings,
        "config": {
            "items": list(items),
            "beams": list(beams),
            "models": list(models),
            "backends": [b.value for b in chosen],
            "baselines": list(baselines),
            "baseline_max_items": baseline_max_items,
            "model_size": TIGER_SIZE,
            "model_dtype": str(torch_dtype).removeprefix("torch."),
            "history_items": HISTORY_ITEMS,
            "catalogue": "synthetic: 3 levels of 256 uniform random codes + a disambiguation token",
            "repeats": repeats,
            "quick": quick,
        },
        "trie_builds": builds,
        "load_average": {"before": load_before, "after": _load()},
        "background_load": load_record,
        "threads": torch.get_num_threads(),
        "openmp": _openmp.describe(),
        "seconds": time.perf_counter() - t0,
    }
    out_dir = Path(out_dir)
    paths = write_results(out_dir, "decode", payload, rows)
    png = plot_decode(out_dir / "decode.png", rows, f"constrained beam search on {payload['device']}")
    if png:
        paths["png"] = png
    return {"payload": payload, "rows": rows, "paths": paths}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
