"""``genrec train`` killed (SIGKILL, through GENREC_FAULT_AT, see genrec.faults) at kill points in
every stage, then resumed, leaves a run folder identical to an uninterrupted run's.

Each scenario starts from nothing (a killed run in a data stage also starts without the stage
cache), kills the run at one point, resumes it with ``--resume`` and compares every file of the run
folder with the uninterrupted run's, byte for byte. Files are compared modulo the fields that
record measurements of this invocation rather than results: wall-clock times, examples per
second, memory peaks, decode latency and throughput, creation times, and whether a stage was
reused by this invocation (``cached``); those are listed in MEASURED below. Not compared:
``.genrec-run`` (the lock file: it holds the PID of the last training) and ``tensorboard/`` (event
files are named by the time and host). Each run is a fresh interpreter (see run_cli).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.conftest import tiny_overrides
from tests.train.helpers import synthetic_world

REPO = Path(__file__).resolve().parents[2]

# Fields that hold measurements (times, rates, memory) or how this invocation got a stage.
MEASURED = {
    "time",
    "seconds",
    "train_seconds",
    "train_loop_seconds",
    "stage_seconds",
    "examples_per_s",
    "peak_memory",
    "train_peak_memory",
    "decode_peak_memory",
    "latency_ms_p50",
    "latency_ms_p95",
    "latency_ms_mean",
    "throughput_users_per_s",
    "users_per_second",
    "created",
    "cached",
}
NOT_COMPARED = (".genrec-run", "tensorboard")
DATA_STAGE_POINTS = [
    "prepare-produced",
    "prepare-marked",
    "prepare-cached",
    "embed-produced",
    "embed-cached",
    "tokenize-produced",
    "tokenize-marked",
    "tokenize-cached",
]
RUN_POINTS = [
    "run-dir-semantic_ids.npy",
    "run-dir-tokenizer.json",
    "run-dir-items",
    "run-dir-config",
    "train-step#3",
    "best-saved",
    "checkpoint-staged",
    "checkpoint-renamed",
    "checkpoint-pointed#2",
    "checkpoint-saved#3",
    "train-step#17",
    "train-end-logged",
    "model-saved",
    "train-recorded",
    "test-eval-saved",
    "test-metrics-saved",  # between the test metrics and the cost file
    "test-cost-saved",
    "test-recorded",
    "summary-saved",
]


def normalised(value):
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def snapshot(run_dir: Path) -> dict[str, object]:
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if rel.parts[0] in NOT_COMPARED or path.is_dir():
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            out[str(rel)] = normalised(json.loads(data))
        elif path.suffix == ".jsonl":
            out[str(rel)] = [normalised(json.loads(line)) for line in data.decode().splitlines()]
        else:
            out[str(rel)] = data
    return out


RUNNER = """
import sys
import tests.pipeline.conftest  # registers the tiny test encoder the runs use
from genrec.cli import app
app(sys.argv[1:])
"""


def run_cli(args: list[str], log: Path, fault: str | None = None) -> int:
    """``genrec train ARGS`` in a fresh interpreter; its exit code (negative: the killing signal).

    Not a fork of the test process: by the time this runs, earlier tests may have started thread
    pools there (polars, OpenMP) that a forked child inherits without their threads and hangs in."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("GENREC_FAULT_AT", None)
    if fault:
        env["GENREC_FAULT_AT"] = fault
    with open(log, "ab") as out:
        proc = subprocess.run(
            [sys.executable, "-c", RUNNER, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return proc.returncode


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A table source (so the prepare stage runs), the train arguments, and the reference run."""
    base = tmp_path_factory.mktemp("faults")
    offsets, flat, _, _ = synthetic_world(num_users=60, num_items=24)
    lines = ["user_id,item_id,timestamp"]
    for u in range(len(offsets) - 1):
        for t, i in enumerate(flat[offsets[u] : offsets[u + 1]]):
            lines.append(f"U{u},I{i:03d},{t}")
    (base / "interactions.csv").write_text("\n".join(lines) + "\n")
    overrides = [o for o in tiny_overrides(base, base / "cache") if not o.startswith("data.prepared")]
    overrides += [
        f"data.source={base / 'interactions.csv'}",
        "data.format=table",
        "train.epochs=2",
        "train.checkpoint_every=4",
        "train.log_every=3",
        "train.val_users=20",
        "model.dropout=0.1",  # the random state must survive the kills too
    ]
    args = ["train", "--run-dir", str(base / "run"), "--no-progress"]
    args += [a for o in overrides for a in ("--set", o)]
    assert run_cli(args, base / "reference.log") == 0, (base / "reference.log").read_text()
    reference = snapshot(base / "run")
    return base, args, reference


@pytest.mark.slow
def test_killed_and_resumed_runs_equal_the_uninterrupted_run(world):
    base, args, reference = world
    assert {"model.safetensors", "cost.json", "metrics.json", "test_eval.json", "run.json"} <= set(reference)
    assert len(DATA_STAGE_POINTS + RUN_POINTS) >= 20
    for point in DATA_STAGE_POINTS + RUN_POINTS:
        shutil.rmtree(base / "run")
        if point in DATA_STAGE_POINTS:
            shutil.rmtree(base / "cache")
        log = base / f"{point}.log"
        status = run_cli(args, log, fault=point)
        assert status == -signal.SIGKILL, (
            f"{point}: the run was not killed there (status {status}); the kill point is never reached\n"
            + log.read_text()
        )
        assert run_cli([*args, "--resume"], log) == 0, f"{point}: the resumed run failed\n" + log.read_text()
        got = snapshot(base / "run")
        assert sorted(got) == sorted(reference), f"{point}: files differ\n{sorted(set(got) ^ set(reference))}"
        for name in reference:
            assert got[name] == reference[name], f"{point}: {name} differs from the uninterrupted run's"
    assert np.all(np.isfinite([reference["metrics.json"]["recall@10"]]))
    # A finished run whose stage cache was deleted: --resume prepares the same data again, and the
    # dataset fingerprint (content and settings, not the preparation time) lets the run continue.
    shutil.rmtree(base / "cache")
    assert run_cli([*args, "--resume"], base / "cache-deleted.log") == 0, (
        base / "cache-deleted.log"
    ).read_text()
    got = snapshot(base / "run")
    for name in reference:
        assert got[name] == reference[name], f"after deleting the stage cache: {name} differs"
