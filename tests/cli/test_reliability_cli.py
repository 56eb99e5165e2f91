"""Bad options and configs end with a clear message and a non-zero exit, before any work is done."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data.errors import PreparedDatasetError
from genrec.data.npy import load_npy

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.device=tpu", "run.device = 'tpu' is invalid"),
        ("run.seed=-1", "run.seed = -1 is invalid"),
        ("run.seed=99999999999999999", "run.seed = 99999999999999999 is invalid"),
        ("train.weight_decay=-0.1", "train.weight_decay = -0.1 is invalid"),
        ("train.lr=inf", "train.lr = inf is invalid"),
        ("train.bach_size=3", "Valid keys of [train]"),  # rich must not swallow [train]
        ("train.[bold]x[/bold]=1", "unknown key 'train.[bold]x[/bold]'"),  # nor read markup in keys
    ],
)
def test_train_config_errors_are_plain_messages(tmp_path, override, message):
    res = invoke("train", "--set", override, "--run-dir", str(tmp_path / "r"))
    assert res.exit_code == 2, res.output
    assert message in res.output.replace("\n", "")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("profile_toml", ["profile = 3\n", "[profile]\ncpu = 3\n"])
def test_a_profile_that_is_not_a_table_is_named(tmp_path, profile_toml):
    config = tmp_path / "c.toml"
    config.write_text(profile_toml)
    res = invoke("train", "--config", str(config), "--profile", "cpu", "--run-dir", str(tmp_path / "r"))
    assert res.exit_code == 2, res.output
    assert "must be a table" in res.output


def test_train_reports_data_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    res = invoke(
        "train",
        "--set",
        f"data.prepared={bad}",
        "--set",
        f"run.cache_dir={tmp_path / 'c'}",
        "--run-dir",
        str(tmp_path / "r"),
        "--no-progress",
    )
    assert res.exit_code == 1, res.output
    assert "manifest.json: not valid JSON" in res.output.replace("\n", "")
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--users", "-5"], "--users"),
        (["--users", "0"], "--users"),
        (["--users", "5", "--seed", "-1"], "--seed"),
    ],
)
def test_eval_options_are_checked(tmp_path, args, message):
    res = invoke("eval", "--model", "mostpop", "--data", str(tmp_path / "none"), *args)
    assert res.exit_code == 2 and message in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "cooccurrence", "--param", "window=abc"], "--param (cooccurrence): window must be int, got 'abc'"),
        (["--model", "cooccurrence", "--param", "windw=3"], "unknown key 'windw'; did you mean 'window'?"),
        (["--model", "mostpop", "--param", "window=3"], "mostpop takes no parameters"),
        (["--model", "cooccurrence", "--param", "window"], "--param 'window' must look like key=value"),
        (["--model", "mostpop", "--output", "."], "is a folder"),
    ],
)
def test_eval_mistakes_are_found_before_any_work(tmp_path, args, message):
    # --data does not exist: the option error must come first, before anything is read or computed
    res = invoke("eval", "--data", str(tmp_path / "none"), *args)
    assert res.exit_code == 1, res.output
    assert message in res.output.replace("\n", "")


@pytest.mark.parametrize("args", [["--k", "-3"], ["--k", "0"], ["--beam", "0"], ["--device", "tpu"]])
def test_recommend_counts_must_be_positive(tmp_path, args):
    res = invoke("recommend", "--run", str(tmp_path), "--history", "a", *args)
    assert res.exit_code == 2 and args[0] in res.output


def test_prepare_names_an_unknown_encoding(tmp_path):
    source = tmp_path / "t.csv"
    source.write_text("user_id,item_id,timestamp\nu,a,1\nu,b,2\nu,c,3\n")
    res = invoke(
        "data",
        "prepare",
        "--format",
        "table",
        "--source",
        str(source),
        "--out",
        str(tmp_path / "o"),
        "--encoding",
        "klingon",
    )
    assert res.exit_code == 1 and "unknown text encoding 'klingon'" in res.output


def test_an_npy_header_claiming_an_impossible_shape_is_refused(tmp_path):
    path = tmp_path / "offsets.npy"
    with open(path, "wb") as f:  # a header claiming 4e12 int64 values, then 32 bytes of data
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<i8", "fortran_order": False, "shape": (4_000_000_000_000,)}
        )
        f.write(np.arange(4, dtype=np.int64).tobytes())
    with pytest.raises(
        PreparedDatasetError, match=r"offsets\.npy: its header claims shape \[4000000000000\]"
    ):
        load_npy(path, PreparedDatasetError)
    np.save(path, np.arange(4, dtype=np.int64))
    path.write_bytes(path.read_bytes()[:-8])  # a truncated file
    with pytest.raises(PreparedDatasetError, match="damaged or truncated"):
        load_npy(path, PreparedDatasetError)
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PreparedDatasetError, match="Python objects"):
        load_npy(path, PreparedDatasetError)
