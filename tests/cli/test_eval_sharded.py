"""``genrec eval`` under torchrun: each rank scores a share of the users' batches, and the gathered
metrics and per-user values equal one process's (and, for a run, its test stage's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genrec.eval import load_per_user
from genrec.eval.sharding import my_batches
from genrec.train.distributed import DistInfo
from tests.cli.tiny_runs import ITEM_DECODER, train_tiny_run
from tests.one_thread import one_thread  # noqa: F401  (tiny models: one CPU thread)
from tests.pipeline.conftest import tiny_prepared  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_prepared):  # noqa: F811
    return train_tiny_run(tmp_path_factory.mktemp("sharded"), tiny_prepared, ITEM_DECODER)[0]


def genrec(args: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    """genrec in fresh processes: alone, or ``nproc`` ranks under torchrun (gloo on the CPU)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command = [*(launcher if nproc > 1 else [sys.executable]), "-m", "genrec.cli", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("rows, batch, world", [(60, 16, 2), (60, 7, 2), (5, 16, 3), (0, 4, 2), (33, 1, 4)])
def test_the_ranks_share_the_batches_of_one_process(rows, batch, world):
    shares = [my_batches(rows, batch, DistInfo(rank, world)) for rank in range(world)]
    assert sorted(lo for share in shares for lo in share) == list(range(0, rows, batch))
    assert (
        my_batches(rows, batch, None)
        == my_batches(rows, batch, DistInfo(0, 1))
        == list(range(0, rows, batch))
    )


@pytest.mark.parametrize(
    "extra", [[], ["--batch-size", "7", "--users", "41", "--seed", "3"]], ids=["test", "sample"]
)
def test_a_run_scored_by_two_ranks_equals_one_process(tiny_run, tmp_path, extra):
    alone, shared = tmp_path / "alone.json", tmp_path / "shared.json"
    base = ["eval", "--no-progress", *extra]
    one = genrec([*base, "--run", str(tiny_run), "--output", str(alone)])
    assert one.returncode == 0, one.stdout + one.stderr
    # torchrun's own parser would read --run as an abbreviation of its --run-path
    two = genrec([*base, "--run-dir", str(tiny_run), "--output", str(shared)], nproc=2)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("recall") == 1  # rank 0 alone prints
    a, b = json.loads(alone.read_text()), json.loads(shared.read_text())
    assert b["world_size"] == 2 and "world_size" not in a
    # each rank scored its own batches: 0, 2 | 1, 3 of 16 users (the sample: 0, 2, 4 | 1, 3, 5 of 7)
    assert b["users_per_rank"] == ([32, 28] if not extra else [21, 20])
    assert a["metrics"] == b["metrics"]  # exactly
    pa, pb = load_per_user(alone), load_per_user(shared)
    assert pa.keys() == pb.keys()
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)
    if not extra:  # the whole test split with the test's settings: the test stage's own numbers
        stored = json.loads((tiny_run / "metrics.json").read_text())
        assert {key: stored[key] for key in b["metrics"]} == b["metrics"]


def test_a_baseline_scored_by_two_ranks_equals_one_process(tiny_run, tmp_path):
    data = json.loads((tiny_run / "run.json").read_text())["dataset"]["path"]
    base = ["eval", "--model", "cooccurrence", "--data", data, "--batch-size", "9", "--no-progress"]
    one = genrec([*base, "--output", str(tmp_path / "alone.json")])
    two = genrec([*base, "--output", str(tmp_path / "shared.json")], nproc=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stdout + two.stderr
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("alone", "shared"))
    assert a["metrics"] == b["metrics"] and a["num_users"] == b["num_users"] == 60
    assert b["users_per_rank"] == [33, 27]  # batches of 9: 0, 2, 4, 6 (6 users) | 1, 3, 5


def test_run_evaluation_refuses_baseline_options(tiny_run, tmp_path):
    res = genrec(["eval", "--run", str(tiny_run), "--tune", "--exclude-history"])
    assert res.returncode == 1 and "--tune, --exclude-history apply to --model only" in " ".join(
        res.stderr.split()
    )
    res = genrec(["eval", "--run", str(tiny_run), "--model", "mostpop"])
    assert res.returncode == 1 and "either --model" in res.stderr


def test_the_test_stage_under_torchrun_equals_one_process(tiny_run, tiny_prepared, tmp_path):  # noqa: F811
    """genrec train under torchrun: every rank scores its share of the test batches, rank 0 writes
    the same metrics and per-user files one process wrote (the training and the fusion reused)."""
    import shutil

    from tests.pipeline.conftest import tiny_overrides

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    (copy / "metrics.json").unlink()  # the test runs again; training and fusion weights are reused
    for name in ("test_eval.json", "test_eval.beam.json"):
        (copy / name).unlink()
    overrides = tiny_overrides(tiny_prepared, tiny_run.parent / "cache", *ITEM_DECODER)
    overrides += ["train.epochs=2", "eval.batch_users=16"]
    args = ["train", "--run-dir", str(copy), "--no-progress"] + [x for o in overrides for x in ("--set", o)]
    two = genrec(args, nproc=2)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("train: cached") == 1 and two.stdout.count("test: done") == 1  # rank 0 prints
    assert json.loads((copy / "metrics.json").read_text()) == json.loads(
        (tiny_run / "metrics.json").read_text()
    )
    for name in ("test_eval.json", "test_eval.beam.json", "test_eval.beam_head.json"):
        a, b = load_per_user(tiny_run / name), load_per_user(copy / name)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    shared = json.loads((copy / "test_eval.json").read_text())
    assert shared["world_size"] == 2 and shared["users_per_rank"] == [32, 28]
