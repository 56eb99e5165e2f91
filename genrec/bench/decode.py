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

import contextlib
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from genrec import _openmp
from genrec.bench.background import background_load
from genrec.bench.ceilings import measure_ceilings
from genrec.bench.results import environment, write_results
from genrec.decoding import GraphedBeamSearch, TrieIndex, beam_search
from genrec.files import atomic_write_text, save_figure
from genrec.ops import Backend, available_backends, constrained_beam_step, empty_beam_step

TIGER_SIZE = dict(d_model=128, encoder_layers=4, decoder_layers=4, num_heads=6, head_dim=64, d_ff=1024)
HISTORY_ITEMS = 20
BEAUTY_ITEMS = 12_101
TARGET_USERS_PER_S = 100_000
TARGET_SELECT_SHARE = 0.05


# ---------------------------------------------------------------- catalogues
@dataclass(frozen=True)
class Catalogue:
    codes: torch.Tensor  # int64 [N, 4]
    level_sizes: list[int]

    @property
    def num_items(self) -> int:
        return self.codes.shape[0]


def synthetic_catalogue(num_items: int, seed: int = 0, codebook: int = 256, levels: int = 3) -> Catalogue:
    """TIGER-style IDs: ``levels`` uniform random codes of ``codebook``, then a disambiguation token
    (0, 1, ... among items sharing the same codes), so every ID is unique."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, codebook, (num_items, levels), generator=g)
    key = torch.zeros(num_items, dtype=torch.long)
    for t in range(levels):
        key = key * codebook + codes[:, t]
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    first = torch.ones(num_items, dtype=torch.bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    run_start = torch.cummax(torch.where(first, torch.arange(num_items), 0), 0).values
    dup = torch.empty(num_items, dtype=torch.long)
    dup[order] = torch.arange(num_items) - run_start
    codes = torch.cat([codes, dup[:, None]], dim=1)
    return Catalogue(codes, [codebook] * levels + [int(dup.max()) + 1 if num_items else 1])


def build_index(cat: Catalogue, device: torch.device) -> tuple[TrieIndex, dict]:
    """The catalogue's index on ``device`` and how long building it took."""
    from genrec.ops import build_trie

    t0 = time.perf_counter()
    build_trie(cat.codes, cat.level_sizes)
    t_cpp = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = TrieIndex.from_codes(cat.codes, level_sizes=cat.level_sizes)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = index.to(device)
    _sync(device)
    t_move = time.perf_counter() - t0
    info = {
        "num_items": cat.num_items,
        "level_sizes": cat.level_sizes,
        "nodes_per_level": list(index.nodes_per_level),
        "dense_levels": list(index.dense_levels),
        "index_MiB": index.nbytes() / 2**20,
        "build_trie_s": t_cpp,
        "from_codes_s": t_index,
        "to_device_s": t_move,
    }
    return index, info


# ---------------------------------------------------------------- models
class PrecomputedLogits:
    """A cost-free model: fixed random logits per step shape, so only the search is timed."""

    def __init__(self, users: int, beam: int, level_sizes: list[int], device: torch.device, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.logits = [
            (torch.randn(users, 1 if t == 0 else beam, v, generator=g) * 3).to(device)
            for t, v in enumerate(level_sizes)
        ]

    def step_fn(self, batch=None):
        def step(prefix: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
            return self.logits[prefix.shape[2]]

        return step


def tiger_model(level_sizes: list[int], device: torch.device, dtype: torch.dtype):
    """``genrec.models.Tiger`` at TIGER's size with random weights (hashed user tokens, as TIGER has)."""
    from genrec.models import Tiger

    torch.manual_seed(0)
    model = Tiger(level_sizes, max_history=HISTORY_ITEMS, dropout=0.0, user_buckets=2000, **TIGER_SIZE)
    return model.to(device=device, dtype=dtype).eval()


def history_batch(cat: Catalogue, users: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(0, cat.num_items, (users, HISTORY_ITEMS), generator=g)
    return {
        "history": cat.codes[items].to(device),
        "history_len": torch.randint(5, HISTORY_ITEMS + 1, (users,), generator=g).to(device),
        "user_ids": torch.arange(users).to(device),
    }


# ---------------------------------------------------------------- timing helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls (device synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


class PartTimer:
    """Time spent in each named part of a run: CUDA events on a GPU, the host clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.events: list[tuple[str, object, object]] = []
        self.host: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events.append((name, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.host[name] = self.host.get(name, 0.0) + time.perf_counter() - t0

    def seconds(self) -> dict[str, float]:
        if not self.cuda:
            return dict(self.host)
        torch.cuda.synchronize(self.device)
        out: dict[str, float] = {}
        for name, start, end in self.events:
            out[name] = out.get(name, 0.0) + start.elapsed_time(end) / 1e3
        return out


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


# ---------------------------------------------------------------- the Python-trie baseline
class PythonTrie:
    """A dict trie: prefix tuple -> allowed next tokens, and full ID -> item (the usual Python way)."""

    def __init__(self, codes: torch.Tensor):
        self.children: dict[tuple, list[int]] = {}
        self.items: dict[tuple, int] = {}
        levels = codes.shape[1]
        for item, row in enumerate(codes.tolist()):
            for t in range(levels):
                kids = self.children.setdefault(tuple(row[:t]), [])
                if not kids or kids[-1] != row[t]:
                    kids.append(row[t])
            self.items[tuple(row)] = item
        for kids in self.children.values():
            kids.sort()
        for key, kids in self.children.items():  # drop duplicates left by unsorted input
            self.children[key] = sorted(set(kids))

    def allowed(self, prefix: list[int]) -> list[int]:
        return self.children.get(tuple(prefix), [])


def python_trie_search(
    step_fn, trie: PythonTrie, users: int, beam: int, top_k: int, levels: int, device, timer=None
):
    """Beam search masking each beam with a Python callback, as ``prefix_allowed_tokens_fn`` does."""
    timer = timer or (lambda name: contextlib.nullcontext())
    prefix = torch.zeros(users, 1, 0, dtype=torch.long, device=device)
    parents = torch.zeros(users, 1, dtype=torch.long, device=device)
    scores = torch.zeros(users, 1, device=device)
    for t in range(levels):
        with timer("model"):
            logits = step_fn(prefix, parents)
        with timer("select"):
            K = beam if t < levels - 1 else top_k
            logp = torch.log_softmax(logits.float(), dim=-1) + scores[:, :, None]
            mask = torch.full_like(logp, float("-inf"))
            prefixes = prefix.tolist()
            alive = (scores > float("-inf")).tolist()
            for u in range(users):
                for b in range(logp.shape[1]):
                    if alive[u][b]:
                        mask[u, b, trie.allowed(prefixes[u][b])] = 0.0
            flat = (logp + mask).reshape(users, -1)
            if flat.shape[1] < K:  # keep exactly K beams (fixed shapes for the model), the extra ones dead
                flat = torch.cat([flat, flat.new_full((users, K - flat.shape[1]), float("-inf"))], dim=1)
            scores, idx = flat.topk(K, dim=1)
            V = logits.shape[2]
            idx = torch.where(scores > float("-inf"), idx, 0)
            parents, tokens = idx // V, idx % V
            prefix = torch.cat(
                [prefix.gather(1, parents[:, :, None].expand(users, K, t)), tokens[:, :, None]], 2
            )
    with timer("select"):
        rows = prefix.tolist()
        items = [[trie.items.get(tuple(r), -1) for r in user] for user in rows]
    return torch.tensor(items), scores


# ---------------------------------------------------------------- the transformers baseline
def hf_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


class HFGenerateBaseline:
    """T5 of TIGER's size decoding with ``generate(num_beams, prefix_allowed_tokens_fn)``.

    Vocabulary: 0 pad (also the decoder start), 1 eos, then each level's codes at an offset.
    """

    def __init__(self, cat: Catalogue, trie: PythonTrie, device: torch.device):
        from transformers import T5Config, T5ForConditionalGeneration

        self.offsets = [2]
        for v in cat.level_sizes[:-1]:
            self.offsets.append(self.offsets[-1] + v)
        vocab = self.offsets[-1] + cat.level_sizes[-1]
        config = T5Config(
            vocab_size=vocab,
            d_model=TIGER_SIZE["d_model"],
            d_kv=TIGER_SIZE["head_dim"],
            num_heads=TIGER_SIZE["num_heads"],
            d_ff=TIGER_SIZE["d_ff"],
            num_layers=TIGER_SIZE["encoder_layers"],
            num_decoder_layers=TIGER_SIZE["decoder_layers"],
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
        torch.manual_seed(0)
        self.model = T5ForConditionalGeneration(config).to(device).eval()
        self.trie = trie
        self.cat = cat
        self.device = device
        self.levels = len(cat.level_sizes)
        self.callback_seconds = 0.0

    def _allowed(self, batch_id: int, sent: torch.Tensor) -> list[int]:
        t0 = time.perf_counter()
        generated = sent.tolist()[1:]  # after the decoder start token
        t = len(generated)
        if t >= self.levels:
            out = [1]
        else:
            prefix = [tok - self.offsets[i] for i, tok in enumerate(generated)]
            out = [self.offsets[t] + c for c in self.trie.allowed(prefix)]
        self.callback_seconds += time.perf_counter() - t0
        return out

    def decode(self, batch: dict[str, torch.Tensor], beam: int, top_k: int):
        history = batch["history"].cpu()
        ids = history + torch.tensor(self.offsets)
        lengths = batch["history_len"].cpu()
        U, S, T = ids.shape
        valid = (torch.arange(S)[None, :] < lengths[:, None]).repeat_interleave(T, dim=1)
        input_ids = torch.where(valid, ids.reshape(U, S * T), 0).to(self.device)
        with torch.no_grad():
            return self.model.generate(
                input_ids=input_ids,
                attention_mask=valid.long().to(self.device),
                num_beams=beam,
                num_return_sequences=min(top_k, beam),
                max_new_tokens=self.levels,
                do_sample=False,
                prefix_allowed_tokens_fn=self._allowed,
            )


# ---------------------------------------------------------------- kernel rows
def kernel_rows(
    index: TrieIndex, users: int, beam: int, backends: list[Backend], ceilings: dict, device, quick: bool
):
    """Time the beam step alone at each level on the inputs a real search feeds it."""
    model = PrecomputedLogits(users, beam, list(index.level_sizes), device, seed=7)
    inputs = []
    step = model.step_fn()
    states = torch.zeros(users, 1, dtype=torch.int32, device=device)
    scores = torch.zeros(users, 1, device=device)
    prefix = torch.zeros(users, 1, 0, dtype=torch.long, device=device)
    for t in range(index.levels):
        logits = step(prefix, None)
        inputs.append((logits, scores, states))
        level = index.level(t)
        out = constrained_beam_step(
            logits,
            scores,
            states,
            level.row_ptr,
            level.child_tokens,
            beam_size=beam,
            dense=level.dense,
            validate=False,
        )
        scores, states = out.scores, out.states
        prefix = torch.zeros(users, beam, t + 1, dtype=torch.long, device=device)
    rows = []
    for t, (logits, scores, states) in enumerate(inputs):
        level = index.level(t)
        B, V = logits.shape[1], logits.shape[2]
        live = states.long().clamp_min(0)
        if level.dense is not None:
            trie_bytes = int((states >= 0).sum()) * V * 4
            candidates = int((states >= 0).sum()) * V
        else:
            counts = (level.row_ptr.long()[live + 1] - level.row_ptr.long()[live]) * (states >= 0)
            candidates = int(counts.sum())
            trie_bytes = candidates * 4 + int((states >= 0).sum()) * 8
        moved = logits.numel() * logits.element_size() + users * B * 8 + trie_bytes + users * beam * 24
        for backend in backends:
            out = empty_beam_step(users, beam, device)

            def call(backend=backend, level=level, logits=logits, scores=scores, states=states, out=out):
                constrained_beam_step(
                    logits, scores, states, level.row_ptr, level.child_tokens, beam_size=beam, dense=level.dense,
                    backend=backend, validate=False, out=out,
                )  # fmt: skip

            from genrec.bench.timing import median_seconds

            try:
                seconds = median_seconds(call, device, min_run_time=0.05 if quick else 0.2)
            except Exception as exc:  # keep the other backends' figures
                rows.append(
                    {
                        **_failed("kernel", backend.value, "precomputed", index.num_items, beam, exc),
                        "level": t,
                    }
                )
                rows[-1]["kind"] = "kernel"
                continue
            gbps = moved / seconds / 1e9
            rows.append(
                {
                    "kind": "kernel",
                    "backend": backend.value,
                    "num_items": index.num_items,
                    "beam": beam,
                    "level": t,
                    "users": users,
                    "in_beams": B,
                    "vocab": V,
                    "dense": level.dense is not None,
                    "candidates": candidates,
                    "median_ms": seconds * 1e3,
                    "user_steps_per_s": users / seconds,
                    "bytes_moved": moved,
                    "GBps": gbps,
                    "pct_of_copy_bw": 100 * gbps / ceilings["copy_GBps"]
                    if ceilings.get("copy_GBps")
                    else None,
                }
            )
    return rows


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
    latency = statistics.median(times)
    return {
        "kind": "decode",
        "method": "genrec",
        "backend": backend.value,
        "model": model_name,
        "num_items": cat.num_items,
        "beam": beam,
        "top_k": top_k,
        "users": users,
        "latency_ms": latency * 1e3,
        "users_per_s": users / latency,
        "graphed": graphed,
        "graph_fallback": search.fallback_reason if not graphed and device.type == "cuda" else None,
        "select_ms": select_s * 1e3,
        "eager_ms": total_s * 1e3,
        "select_share": select_s / total_s,
    }


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
    latency = statistics.median(times)
    return {
        "kind": "decode",
        "method": "python_trie",
        "backend": "python",
        "model": model_name,
        "num_items": cat.num_items,
        "beam": beam,
        "top_k": beam,
        "users": users,
        "latency_ms": latency * 1e3,
        "users_per_s": users / latency,
        "graphed": False,
        "select_ms": select_s * 1e3,
        "eager_ms": total_s * 1e3,
        "select_share": select_s / total_s,
    }


def _hf_row(sweep, hf: HFGenerateBaseline, cat, beam, users) -> dict:
    batch = history_batch(cat, users, sweep.device)
    times = time_calls(
        lambda: hf.decode(batch, beam, beam), sweep.device, max(1, sweep.repeats - 1), warmup=0
    )
    hf.callback_seconds = 0.0
    t0 = time.perf_counter()
    hf.decode(batch, beam, beam)
    total = time.perf_counter() - t0
    latency = statistics.median(times)
    return {
        "kind": "decode",
        "method": "hf_generate",
        "backend": "python",
        "model": "t5-tiger-size",
        "num_items": cat.num_items,
        "beam": beam,
        "top_k": beam,
        "users": users,
        "latency_ms": latency * 1e3,
        "users_per_s": users / latency,
        "graphed": False,
        "select_ms": hf.callback_seconds * 1e3,
        "eager_ms": total * 1e3,
        "select_share": hf.callback_seconds / total,  # the callbacks alone: a lower bound
    }


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
        need_trie = "python_trie" in sweep.baselines or "hf_generate" in sweep.baselines
        trie = PythonTrie(cat.codes) if need_trie and n <= sweep.baseline_max_items else None
        hf = None
        if "hf_generate" in sweep.baselines and trie is not None and hf_available():
            hf = HFGenerateBaseline(cat, trie, sweep.device)
        for model_name in sweep.models:
            model = tiger_model(cat.level_sizes, sweep.device, sweep.dtype) if model_name == "tiger" else None
            for beam in sweep.beams:
                users = _users_for(sweep, model_name, beam, "genrec")
                for backend in sweep.backends:
                    try:
                        row = _genrec_row(sweep, index, cat, model_name, beam, backend, users, model)
                    except Exception as exc:  # one failing backend must not cost the other rows
                        row = _failed("genrec", backend.value, model_name, n, beam, exc)
                        rows.append(row)
                        log(f"  genrec {backend.value} beam={beam}: FAILED {row['error']}")
                        continue
                    rows.append(row)
                    log(_describe(row))
                if "python_trie" in sweep.baselines:
                    if trie is None:
                        rows.append(
                            _skipped(
                                "python_trie",
                                model_name,
                                n,
                                beam,
                                f"catalogue above --baseline-max-items ({sweep.baseline_max_items:,})",
                            )
                        )
                    else:
                        row = _python_trie_row(
                            sweep,
                            trie,
                            cat,
                            model_name,
                            beam,
                            _users_for(sweep, model_name, beam, "python_trie"),
                            model,
                        )
                        rows.append(row)
                        log(_describe(row))
                if "hf_generate" in sweep.baselines and model_name == "tiger":
                    if not hf_available():
                        rows.append(
                            _skipped("hf_generate", "t5-tiger-size", n, beam, "transformers is not installed")
                        )
                    elif hf is None:
                        rows.append(
                            _skipped(
                                "hf_generate",
                                "t5-tiger-size",
                                n,
                                beam,
                                f"catalogue above --baseline-max-items ({sweep.baseline_max_items:,})",
                            )
                        )
                    else:
                        row = _hf_row(
                            sweep, hf, cat, beam, _users_for(sweep, model_name, beam, "hf_generate")
                        )
                        rows.append(row)
                        log(_describe(row))
            del model
        kernel_beams = list(sweep.beams) + [b for m, bs in sweep.extra_kernels if m == n for b in bs]
        for beam in dict.fromkeys(kernel_beams):
            rows += kernel_rows(
                index, _kernel_users(sweep), beam, sweep.backends, ceilings, sweep.device, sweep.quick
            )
        del index, trie, hf
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


def _kernel_users(sweep: DecodeSweep) -> int:
    return sweep.kernel_users or (4096 if sweep.device.type == "cuda" else 256)


def _failed(method, backend, model, n, beam, exc: BaseException) -> dict:
    message = str(exc).strip().splitlines()
    return {
        "kind": "decode",
        "method": method,
        "backend": backend,
        "model": model,
        "num_items": n,
        "beam": beam,
        "error": f"{type(exc).__name__}: {message[0] if message else ''}"[:500],
    }


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


# ---------------------------------------------------------------- the GPU check
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
    import json

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
        atomic_write_text(Path(out_dir) / "decode_summary.json", json.dumps(summary, indent=2) + "\n")
        return {"summary": summary, **result}
    best = max(decode, key=lambda r: r["users_per_s"])
    summary = {
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
    atomic_write_text(Path(out_dir) / "decode_summary.json", json.dumps(summary, indent=2) + "\n")
    return {"summary": summary, **result}
