"""genrec bench train-step: both dropouts timed per size, the torch cell really runs torch's
dropout, the files written; bad options refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from genrec.bench.train_step import _Trainer, run_train_step_benchmark
from genrec.cli import app
from genrec.models.layers import Dropout

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiger_beauty.toml"


def test_the_torch_cell_trains_with_torch_dropout_and_the_genrec_cell_with_genrec_s():
    kinds = {
        name: {type(m) for m in _Trainer(CONFIG, 300, name, 0).model.modules()} for name in ("genrec", "torch")
    }
    assert Dropout in kinds["genrec"] and torch.nn.Dropout not in kinds["genrec"]
    assert torch.nn.Dropout in kinds["torch"] and Dropout not in kinds["torch"]


def test_a_tiny_run_writes_both_dropouts_per_size_and_their_ratio(tmp_path):
    result = run_train_step_benchmark(tmp_path, (300, 500), config=CONFIG, steps=1, reps=2, warmup=0, quick=True)
    data = json.loads((tmp_path / "train_step.json").read_text())
    steps = [r for r in data["rows"] if r["kind"] == "train_step"]
    assert [(r["items"], r["dropout"]) for r in steps] == [
        (300, "genrec"), (300, "torch"), (500, "genrec"), (500, "torch")
    ]
    for r in steps:
        torch_row = next(s for s in steps if s["items"] == r["items"] and s["dropout"] == "torch")
        assert r["speedup_vs_torch_dropout"] == pytest.approx(torch_row["median_step_s"] / r["median_step_s"])
        assert r["examples_per_s"] == pytest.approx(r["batch_size"] / r["median_step_s"])
        assert len(r["block_medians_s"]) == 2
    assert {r["dropout"] for r in data["rows"] if r["kind"] == "dropout"} == {"genrec", "torch"}
    assert (tmp_path / "train_step.csv").is_file()
    assert set(result["paths"]) >= {"json", "csv"}


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--sizes", "lots"], "not a number"), (["--config", "nope.toml"], "no such file")],
)
def test_bad_options_exit_with_the_reason_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "train-step", "--out", str(out), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert not out.exists()
