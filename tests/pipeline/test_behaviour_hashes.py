"""Behaviour, pinned bit for bit: a tiny end-to-end run (fixed seed, one thread) and the hashes of
what it produces (semantic IDs, trained weights, the fusion's tuning table, co-occurrence
statistics, test metrics and each test user's target rank), recorded in behaviour_hashes.json.

A refactor must leave every hash as it is (issue 16). A change that means to alter behaviour
re-records them: ``GENREC_RECORD_BEHAVIOUR=1 pytest tests/pipeline/test_behaviour_hashes.py``
replaces every record with this machine's, and its commit says why. Floating-point results
depend on the CPU and the library versions, so each record holds the fingerprint of the machine
it was made on; the hashes are checked on a machine that matches one, and the test skips, naming
them, elsewhere. ``GENREC_RECORD_BEHAVIOUR=add`` adds (or renews) this machine's record beside the
others, for a machine that runs the same behaviour: record on it at the commit the others were
made at.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import load_file

from genrec.config import load_config
from genrec.pipeline import run_pipeline
from tests.pipeline.conftest import tiny_overrides

RECORD = Path(__file__).with_name("behaviour_hashes.json")

# The demo's recipe in miniature: ItemDecoder with the sampled item head, dropout on (the RNG
# path), hashed users, co-occurrence fusion tuned on validation.
SETTINGS = [
    "run.seed=7",
    "model.kind=item_decoder",
    "model.item_embeddings=true",
    "model.item_loss=1.0",
    "model.item_negatives=8",
    "model.dropout=0.1",
    "model.user_buckets=8",
    "model.tune_fusion=true",
    "model.fusion_candidates=5",
    "train.epochs=3",
]


def _cpu_model() -> str:
    """The CPU's vendor and model: MKL takes other kernels on other CPUs with the same instruction set."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    keys = ("vendor_id", "cpu family", "model", "model name")
    return " / ".join(fields.get(k, "") for k in keys)


def _cpu_flags() -> str:
    """A digest of the instruction-set flags the kernel reports: two virtual machines that name the
    same CPU may expose different extensions, and MKL dispatches on them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    flags = next((line.split(":", 1)[1] for line in lines if line.startswith("flags")), "")
    return _sha(" ".join(sorted(flags.split())).encode())[:16]


def fingerprint() -> dict:
    return {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__.split("+")[0],
        "numpy": np.__version__,
    }


def matches(recorded: dict, here: dict) -> bool:
    """Whether this machine is the one a record was made on (on every key the record holds: the
    first record predates the flags digest)."""
    return all(here.get(key) == value for key, value in recorded.items())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _array_hash(a: np.ndarray) -> str:
    return _sha(f"{a.dtype.str}{a.shape}".encode() + np.ascontiguousarray(a).tobytes())


def _json_hash(path: Path) -> str:
    return _sha(json.dumps(json.loads(path.read_text()), sort_keys=True).encode())


def run_hashes(run: Path) -> dict[str, str]:
    """Hashes of a finished run's outputs, each over values (not file bytes: a file's layout may
    change in a refactor while its contents stay)."""
    weights = load_file(run / "model.safetensors")
    hashes = {
        "semantic_ids": _array_hash(np.load(run / "tokenizer" / "semantic_ids.npy")),
        "weights": _sha("".join(f"{k}:{_array_hash(weights[k])}" for k in sorted(weights)).encode()),
        "metrics": _json_hash(run / "metrics.json"),
    }
    hashes["fusion_tuning"] = _json_hash(run / "fusion_tuning.json")  # every weight tried, its score
    cooccurrence = load_file(run / "cooccurrence.safetensors")
    hashes["cooccurrence"] = _sha(
        "".join(f"{k}:{_array_hash(cooccurrence[k])}" for k in sorted(cooccurrence)).encode()
    )
    ranks = pq.read_table(run / "test_eval.per_user.parquet").to_pydict()  # each test user's target rank
    hashes["test_per_user"] = _sha(json.dumps(ranks, sort_keys=True).encode())
    return hashes


@pytest.fixture(scope="module")
def tiny_hashes(tmp_path_factory, tiny_prepared):
    root = tmp_path_factory.mktemp("behaviour")
    config = load_config(None, overrides=tiny_overrides(tiny_prepared, root / "cache", *SETTINGS))
    run_pipeline(config, root / "run", progress=False)
    return run_hashes(root / "run")


def _records() -> list[dict]:
    data = json.loads(RECORD.read_text())
    return data["records"]


def _record(hashes: dict[str, str], mode: str) -> None:
    here = fingerprint()
    kept = [r for r in _records() if not matches(r["fingerprint"], here)] if mode == "add" else []
    records = [*kept, {"fingerprint": here, "hashes": hashes}]
    RECORD.write_text(json.dumps({"records": records}, indent=2) + "\n")


def test_a_tiny_run_produces_the_recorded_outputs_bit_for_bit(tiny_hashes):
    mode = os.environ.get("GENREC_RECORD_BEHAVIOUR")
    if mode in ("1", "add"):
        _record(tiny_hashes, mode)
        pytest.skip(f"recorded {RECORD.name} ({mode}): commit it and say why")
    here = fingerprint()
    record = next((r for r in _records() if matches(r["fingerprint"], here)), None)
    if record is None:
        pytest.skip(f"hashes recorded on {[r['fingerprint'] for r in _records()]}, this machine is {here}")
    assert set(tiny_hashes) == set(record["hashes"])
    changed = [name for name in tiny_hashes if tiny_hashes[name] != record["hashes"][name]]
    assert not changed, (
        f"changed outputs: {changed} (re-record only where the change means to alter behaviour)"
    )


def test_a_record_matches_only_its_machine():
    """The AMD record (without the flags digest) does not match a machine that differs in any key
    it holds; a record with the digest needs it to match too."""
    here = fingerprint()
    assert matches(here, here)
    for key in here:
        other = {**here, key: here[key] + "x"}
        assert not matches(other, here)
    assert matches({k: v for k, v in here.items() if k != "cpu_flags"}, here)


def test_the_hashes_see_a_one_bit_change(tmp_path):
    """The hash of an array changes with one flipped bit, with its dtype and with its shape."""
    a = np.arange(12, dtype=np.float32)
    b = a.copy()
    b.view(np.uint32)[5] ^= 1
    assert (
        len({_array_hash(a), _array_hash(b), _array_hash(a.astype(np.float64)), _array_hash(a.reshape(3, 4))})
        == 4
    )
