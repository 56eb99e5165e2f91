"""Runs in their own processes: killed and resumed runs end bit-identical to uninterrupted ones, and
torchrun with 2 gloo processes follows the loss curve of 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Dropout, user-token dropout and hashed users on: the random-number state must survive the kill too.
RESUME_SETTINGS = [
    "train.epochs=8",
    "train.eval_every=7",
    "train.checkpoint_every=4",
    "model.dropout=0.1",
    "model.user_buckets=7",
    "model.user_dropout=0.3",
]


def tiny_run(run_dir: Path, *args: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [*(launcher or (sys.executable,)), "-m", "tests.train.tiny_run", "--run-dir", str(run_dir), *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def sets(settings: list[str]) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# The item table with row-sparse updates (LazyAdamW): its moments must survive the kill as AdamW's do.
SPARSE_ITEMS = ["model.item_embeddings=true", "train.sparse_item_table=on"]


@pytest.mark.parametrize("extra", [[], SPARSE_ITEMS], ids=["adamw", "sparse-item-table"])
def test_killed_run_resumes_bit_identical(tmp_path, extra):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    settings = [*RESUME_SETTINGS, *extra]
    finish(tiny_run(straight, *sets(settings)))

    proc = tiny_run(killed, *sets(settings))
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if pointer.is_file() and json.loads(pointer.read_text())["step"] >= 12:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "tiny_result.json").exists()

    out = finish(tiny_run(killed, "--resume", *sets(settings)))
    assert "resumed from step-" in out
    for name in ("model.safetensors", "best.safetensors"):
        assert (killed / name).read_bytes() == (straight / name).read_bytes(), name
    assert json.loads((killed / "tiny_result.json").read_text()) == json.loads(
        (straight / "tiny_result.json").read_text()
    )
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("time", "seconds")} for r in rs]  # noqa: E731
    assert strip(records(killed, "val")) == strip(records(straight, "val"))


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], SPARSE_ITEMS], ids=["adamw", "sparse-item-table"])
def test_torchrun_two_processes_follow_the_single_process_loss_curve(tmp_path, extra):
    settings = sets(["train.epochs=3", "train.log_every=1", "train.batch_size=32", "train.eval_every=1000", *extra])
    single = tiny_run(tmp_path / "one", *settings)
    finish(single)
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    finish(tiny_run(tmp_path / "two", *settings, launcher=launcher))
    one, two = records(tmp_path / "one", "train"), records(tmp_path / "two", "train")
    assert len(one) == len(two) > 20
    for a, b in zip(one, two, strict=True):
        assert a["step"] == b["step"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6), (a, b)
    assert one[-1]["loss"] < one[0]["loss"]  # a curve, not a constant
