"""A finished run folder that was damaged or tampered with is refused with a message naming the
file (recommend, report, load_run), and a run that lost its cost file measures it again."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.config import load_config
from genrec.pipeline import run_pipeline
from genrec.run_format import RunError
from genrec.serve.run import load_run
from tests.pipeline.conftest import tiny_overrides


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_prepared):
    root = tmp_path_factory.mktemp("finished")
    overrides = [*tiny_overrides(tiny_prepared, root / "cache"), "train.epochs=2"]
    run_pipeline(load_config(None, overrides=overrides), root / "run", progress=False)
    return root / "run", overrides


@pytest.fixture
def run_copy(finished, tmp_path):
    run, overrides = finished
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run", overrides


def flip(path, count=16):
    data = bytearray(path.read_bytes())
    for i in range(count):
        data[-1 - 5 * i] ^= 0x55
    path.write_bytes(bytes(data))


def test_recommend_refuses_damaged_weights_with_a_message(run_copy):
    run, _ = run_copy
    flip(run / "model.safetensors")
    res = CliRunner().invoke(app, ["recommend", "--run", str(run), "--history", "I003,I004"])
    assert res.exit_code == 1, res.output
    assert "model.safetensors is damaged" in res.output.replace("\n", "")
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)


def test_report_refuses_damaged_weights(run_copy):
    from genrec.report.runs import ReportInputError, read_method

    run, _ = run_copy
    read_method(run)  # intact: reads
    flip(run / "model.safetensors")
    with pytest.raises(ReportInputError, match=r"model\.safetensors is damaged"):
        read_method(run)


def test_a_permuted_semantic_id_file_is_refused(run_copy):
    run, _ = run_copy
    ids = np.load(run / "tokenizer" / "semantic_ids.npy")
    np.save(run / "tokenizer" / "semantic_ids.npy", ids[::-1].copy())
    with pytest.raises(RunError, match=r"semantic_ids\.npy is not the file this run was trained on"):
        load_run(run, device="cpu")


def test_a_lost_cost_file_is_measured_again_on_resume(run_copy):
    run, overrides = run_copy
    (run / "cost.json").unlink()
    again = run_pipeline(load_config(None, overrides=overrides), run, resume=True, progress=False)
    assert not again.stages["test"]["cached"]
    assert json.loads((run / "cost.json").read_text())["format_version"] >= 1


def test_image_paths_cannot_leave_their_root(tmp_path):
    from genrec.embed.artifacts import EmbeddingError
    from genrec.embed.image import item_image_paths

    root = tmp_path / "images"
    root.mkdir()
    (root / "ok.png").write_bytes(b"")
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    for bad in ("../../etc/passwd", "/etc/passwd", "link.png"):
        table = pa.table({"item_id": ["a", "b"], "image_path": ["ok.png", bad]})
        with pytest.raises(EmbeddingError, match="points outside the image root"):
            item_image_paths(table, root=root)
    table = pa.table({"item_id": ["a"], "image_path": ["ok.png"]})
    assert item_image_paths(table, root=root) == [(root / "ok.png").resolve()]
