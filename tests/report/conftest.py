"""Small prepared datasets and scored runs for the report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genrec.data import load_prepared, write_prepared
from genrec.eval import CoOccurrence, CoOccurrenceConfig, MostPop, evaluate

NUM_ITEMS = 30


def toy_sequences(seed: int = 0, num_users: int = 120) -> list[list[int]]:
    """Users mostly walk a cycle (item i then i + 1), sometimes jumping: learnable, not trivial.

    Items 0-5 are visited far more often (popularity skew, so head/torso/tail all exist).
    """
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(num_users):
        n = int(rng.integers(4, 16))
        item = int(rng.integers(6)) if rng.random() < 0.6 else int(rng.integers(NUM_ITEMS))
        seq = [item]
        for _ in range(n - 1):
            item = (item + 1) % NUM_ITEMS if rng.random() < 0.7 else int(rng.integers(NUM_ITEMS))
            seq.append(item)
        seqs.append(seq)
    return seqs


def make_dataset(path: Path, seed: int = 0, name: str = "toy") -> Path:
    write_prepared(path, toy_sequences(seed), item_ids=range(NUM_ITEMS), name=name)
    return path


def score(dataset_path: Path, model: str, out: Path, split: str = "test", **params) -> Path:
    dataset = load_prepared(dataset_path)
    if model == "mostpop":
        rec = MostPop.from_dataset(dataset)
    else:
        starts, ends = dataset.train_bounds()
        seqs = [dataset.items[s:e] for s, e in zip(starts, ends, strict=True)]
        rec = CoOccurrence(seqs, dataset.num_items, dataset.train_item_counts(), CoOccurrenceConfig(**params))
    evaluate(rec, dataset, split, ks=(5, 10, 20), progress=False, output=out)
    return out


def fake_training_run(folder: Path, dataset_path: Path, seed: int, name: str, **params) -> Path:
    """A run folder as genrec train leaves it (run.json, test results, cost.json), scored by a baseline."""
    folder.mkdir(parents=True)
    score(dataset_path, "cooccurrence", folder / "test_eval.json", **params)
    run = {"format_version": 1, "config": {"run": {"seed": seed, "name": name}}}
    (folder / "run.json").write_text(json.dumps(run))
    cost = {
        "device": "test CPU",
        "train_seconds": 10.0 + seed,
        "train_peak_memory": {"bytes": 2**20, "kind": "process peak RSS"},
        "parameters": 1234,
        "decode": {"latency_ms_p50": 1.5, "latency_ms_p95": 2.5, "throughput_users_per_s": 5000.0},
    }
    (folder / "cost.json").write_text(json.dumps(cost))
    return folder


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    data = make_dataset(root / "data")
    paths = {"root": root, "data": data}
    paths["mostpop"] = score(data, "mostpop", root / "mostpop.json")
    paths["cooc"] = score(data, "cooccurrence", root / "cooc.json", window=2, history=2, recency=0.5)
    return paths
