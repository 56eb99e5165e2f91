"""The decoding stages of ``genrec bench scale`` (``--decode-sizes``): what serving a catalogue of
N items costs beyond the pipeline, each stage one child process the sweep measures (wall time and
peak memory, genrec.bench.measured_process.run_measured):

- ``semantic_ids``: N synthetic semantic IDs (3 levels x 256 + the disambiguation token, code cells
  with Zipf popularity: genrec.bench.scale_data.synthetic_semantic_ids), written to WORK/ids.npy;
- ``trie``: the decoding index of those IDs (genrec.bench.decode_fixtures.build_index: ``genrec.ops.build_trie``
  alone, then ``TrieIndex.from_codes``), saved to WORK/trie.safetensors;
- ``beam``: one batch of constrained beam search (256 users, beam 20) over the saved index, with
  random logits as the model (genrec.bench.decode_fixtures.PrecomputedLogits: the search alone, as the
  model's cost does not grow with the catalogue); first call and the median of a few;
- ``encode``: a genrec tokenizer (residual k-means, 3 x 256) fitted on a sample of N synthetic
  embeddings (genrec.bench.scale_data.SyntheticEmbeddings), then ``Tokenizer.encode`` of all N in
  chunks, generated chunk by chunk so the N x dim floats are never all in memory.

Each stage writes its facts (its own timings, sizes and checks) to the JSON file ``--result``.

    python -m genrec.bench.scale_decode --stage trie --work WORK --items 1000000 --result trie.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from genrec.bench.decode_fixtures import Catalogue, PrecomputedLogits, build_index
from genrec.bench.scale_data import CELL_ZIPF, SyntheticEmbeddings, synthetic_semantic_ids
from genrec.bench.timing import time_calls
from genrec.decoding import TrieIndex, beam_search
from genrec.files import atomic_write_text, json_text
from genrec.ops._backends import resolve_backend
from genrec.tokenize import TokenizeConfig, tokenize

DECODE_STAGES = ("semantic_ids", "trie", "beam", "encode")
BEAM, USERS = 20, 256
DIM, CHUNK, FIT_ROWS = 192, 262_144, 65_536
IDS_FILE, TRIE_FILE = "ids.npy", "trie.safetensors"
STEP_FN = "random logits (genrec.bench.decode_fixtures.PrecomputedLogits): the search alone, no model"


def make_semantic_ids(work: Path, items: int, seed: int = 0) -> dict:
    """Write WORK/ids.npy and WORK/ids.json (level sizes); return the IDs' collision facts."""
    started = time.perf_counter()
    ids, level_sizes = synthetic_semantic_ids(items, seed)
    seconds = time.perf_counter() - started
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / f".{IDS_FILE}.tmp.npy"
    np.save(tmp, ids)
    tmp.replace(work / IDS_FILE)
    last = ids[:, -1]
    facts = {
        "ids_seconds": round(seconds, 3),
        "level_sizes": level_sizes,
        "largest_cell": level_sizes[-1],
        # Token 1 marks each shared cell's second item: items past the first, plus one first per cell.
        "items_sharing_a_cell": int((last > 0).sum() + (last == 1).sum()),
        "cell_zipf": CELL_ZIPF,
    }
    atomic_write_text(work / "ids.json", json.dumps({"level_sizes": level_sizes}) + "\n")
    return facts


def _load_ids(work: Path) -> tuple[np.ndarray, list[int]]:
    ids = np.load(work / IDS_FILE, allow_pickle=False)
    return ids, json.loads((work / "ids.json").read_text())["level_sizes"]


def build_trie(work: Path, seed: int = 0, check_rows: int = 100_000) -> dict:
    """Build the decoding index of WORK/ids.npy, save it, and check a sample of IDs against it."""
    ids, level_sizes = _load_ids(work)
    index, info = build_index(Catalogue(torch.from_numpy(ids), level_sizes), torch.device("cpu"))
    started = time.perf_counter()
    index.save(work / TRIE_FILE)
    save_s = time.perf_counter() - started
    rows = np.random.default_rng(seed).choice(len(ids), size=min(check_rows, len(ids)), replace=False)
    found = index.lookup(torch.from_numpy(ids[rows])).numpy()
    if not np.array_equal(found, rows):
        raise AssertionError(f"the index maps {(found != rows).sum()} of {len(rows)} sampled IDs to the wrong item")
    return {
        "build_trie_seconds": round(info["build_trie_s"], 3),
        "from_codes_seconds": round(info["from_codes_s"], 3),
        "save_seconds": round(save_s, 3),
        "index_MiB": round(info["index_MiB"], 1),
        "nodes_per_level": info["nodes_per_level"],
        "dense_levels": info["dense_levels"],
        "ids_checked": len(rows),
    }


def beam_batch(work: Path, users: int = USERS, beam: int = BEAM, seed: int = 0, repeats: int = 3) -> dict:
    """One batch of constrained beam search over WORK/trie.safetensors: timings and checks that
    every returned item is a catalogue item whose ID the index holds, none twice for a user."""
    started = time.perf_counter()
    index = TrieIndex.load(work / TRIE_FILE)
    load_s = time.perf_counter() - started
    ids, _ = _load_ids(work)
    cpu = torch.device("cpu")
    step = PrecomputedLogits(users, beam, list(index.level_sizes), cpu, seed).step_fn()

    def search():
        return beam_search(step, index, users, beam)

    with torch.no_grad():
        started = time.perf_counter()
        result = search()
        first_s = time.perf_counter() - started
        times = time_calls(search, cpu, repeats, warmup=0)
    items = result.items.numpy()
    check_items(items, ids, index)
    return {
        "beam_users": users,
        "beam": beam,
        "step_fn": STEP_FN,
        "load_index_seconds": round(load_s, 3),
        "first_batch_seconds": round(first_s, 4),
        "batch_seconds": round(statistics.median(times), 4),
        "batch_repeats": repeats,
        "users_per_s": round(users / statistics.median(times), 1),
        "backend": resolve_backend("constrained_beam_step", "auto", cpu).value,
        "torch_threads": torch.get_num_threads(),
    }


def check_items(items: np.ndarray, ids: np.ndarray, index) -> None:
    """Raise AssertionError unless ``items`` [users, k] are all catalogue items (no -1: the catalogue
    has more than k), distinct per user, and the index maps each one's semantic ID back to it."""
    if items.min() < 0 or items.max() >= len(ids):
        raise AssertionError(f"beam returned items outside 0..{len(ids) - 1}: {items.min()}..{items.max()}")
    if any(len(set(row.tolist())) != len(row) for row in items):
        raise AssertionError("beam returned an item twice for one user")
    flat = items.reshape(-1)
    if not np.array_equal(index.lookup(torch.from_numpy(ids[flat])).numpy(), flat):
        raise AssertionError("beam returned items whose semantic IDs the index does not map back to them")


def fit_tokenizer(embeddings, fit_rows: int = FIT_ROWS):
    """(tokenizer, fit seconds, its k-means backend): residual k-means, 3 levels of 256, on the
    first ``fit_rows`` rows (the rows are independent draws, so the first rows are a sample)."""
    sample = embeddings.rows(0, min(fit_rows, embeddings.items))
    config = TokenizeConfig(method="rqkmeans", levels=3, codebook_size=256, device="cpu", disambiguation="index",
                            progress=False)  # fmt: skip
    started = time.perf_counter()
    result = tokenize(sample, config)
    return result.tokenizer, time.perf_counter() - started, result.metrics.get("kmeans_backend")


def encode_in_chunks(tokenizer, embeddings, chunk: int = CHUNK) -> tuple[np.ndarray, float, float]:
    """(codes int64 [N, levels], generating seconds, encoding seconds): ``tokenizer.encode`` of every
    row of ``embeddings``, ``chunk`` rows at a time."""
    codes = np.empty((embeddings.items, tokenizer.levels), dtype=np.int64)
    generate_s = encode_s = 0.0
    for start in range(0, embeddings.items, chunk):
        stop = min(start + chunk, embeddings.items)
        t0 = time.perf_counter()
        x = embeddings.rows(start, stop)
        t1 = time.perf_counter()
        codes[start:stop] = tokenizer.encode(x)
        generate_s += t1 - t0
        encode_s += time.perf_counter() - t1
    return codes, generate_s, encode_s


def encode_all(items: int, seed: int = 0, dim: int = DIM, chunk: int = CHUNK, fit_rows: int = FIT_ROWS) -> dict:
    """Fit on a sample, encode all ``items`` synthetic embeddings; timings and the codes' cells."""
    embeddings = SyntheticEmbeddings(items, dim=dim, seed=seed)
    tokenizer, fit_s, backend = fit_tokenizer(embeddings, fit_rows)
    codes, generate_s, encode_s = encode_in_chunks(tokenizer, embeddings, chunk)
    cells = np.unique(np.ravel_multi_index(codes.T, (tokenizer.codebook_size,) * tokenizer.levels),
                      return_counts=True)[1]  # fmt: skip
    return {
        "dim": dim,
        "chunk_rows": chunk,
        "fit_rows": min(fit_rows, items),
        "fit_seconds": round(fit_s, 3),
        "kmeans_backend": backend,
        "generate_seconds": round(generate_s, 3),
        "encode_seconds": round(encode_s, 3),
        "encode_rows_per_s": round(items / encode_s, 1) if encode_s > 0 else None,
        "embeddings_GB": round(items * dim * 4 / 1e9, 2),
        "distinct_codes": len(cells),
        "largest_cell": int(cells.max()),
        "cells_over_codebook": int((cells > tokenizer.codebook_size).sum()),
        "encode_backend": resolve_backend("rq_encode", tokenizer.encode_backend, tokenizer.device).value,
        "torch_threads": torch.get_num_threads(),
    }


def stage_command(python: str, stage: str, work: Path, items: int, seed: int, result: Path) -> list[str]:
    return [python, "-m", "genrec.bench.scale_decode", "--stage", stage, "--work", str(work),
            "--items", str(items), "--seed", str(seed), "--result", str(result)]  # fmt: skip


def run_stage(stage: str, work: Path, items: int, seed: int) -> dict:
    if stage == "semantic_ids":
        return make_semantic_ids(work, items, seed)
    if stage == "trie":
        return build_trie(work, seed)
    if stage == "beam":
        return beam_batch(work, seed=seed)
    if stage == "encode":
        return encode_all(items, seed)
    raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(DECODE_STAGES)}")


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genrec.bench.scale_decode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, choices=DECODE_STAGES)
    parser.add_argument("--work", required=True, type=Path, help="folder for ids.npy and trie.safetensors")
    parser.add_argument("--items", required=True, type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--result", required=True, type=Path, help="JSON file for the stage's facts")
    args = parser.parse_args(argv)
    if args.items < 2:
        parser.error(f"--items {args.items}: need at least 2")
    facts = run_stage(args.stage, args.work, args.items, args.seed)
    atomic_write_text(args.result, json_text(facts) + "\n")
    print(json_text(facts), flush=True)


if __name__ == "__main__":
    _main()
