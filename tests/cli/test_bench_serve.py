"""``genrec bench serve``: the options reach run_load, bad settings exit 1 with nothing written, and
one real (small) load run on the tiny served run writes its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genrec.bench import serve_load
from genrec.cli import app
from tests.one_thread import one_thread  # noqa: F401  (tiny models: one CPU thread)
from tests.pipeline.conftest import tiny_prepared  # noqa: F401  (fixture)
from tests.serve.conftest import served_run  # noqa: F401  (fixture)

runner = CliRunner()


def test_options_reach_run_load(tmp_path, monkeypatch):
    seen = {}

    def fake(run, out, **kwargs):
        seen.update(run=run, out=out, **kwargs)
        row = {"mode": "batched", "max_wait_ms": 2.0, "answered": 5, "requests_per_s": 1.0, "latency_ms_p50": 3.0,
               "latency_ms_p99": 4.0, "errors": 0, "mean_batch": 2.5}  # fmt: skip
        return {"environment": {"device": "cpu"}, "rows": [row], "paths": {"json": out / "serve_load.json"}}

    monkeypatch.setattr(serve_load, "run_load", fake)
    args = ["bench", "serve", "--run", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--clients", "3",
            "--requests", "7", "--duration", "5", "--k", "4", "--max-batch", "9", "--max-wait-ms", "2,20",
            "--max-wait-ms", "0.5", "--modes", "batched", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen == {
        "run": tmp_path / "r", "out": tmp_path / "o", "clients": 3, "requests": 7, "duration": 5.0, "k": 4,
        "max_batch": 9, "max_wait_ms": (2.0, 20.0, 0.5), "device": "cpu", "warmup": 8, "modes": ("batched",),
        "seed": 0,
    }  # fmt: skip
    assert "batched" in result.output and "2.5" in result.output
    # The defaults the brief of the command promises.
    seen.clear()
    assert runner.invoke(app, ["bench", "serve", "--run", str(tmp_path / "r")]).exit_code == 0
    assert (seen["out"], seen["clients"], seen["requests"], seen["duration"], seen["k"]) == (
        Path("bench/results/serve-cpu"), 64, 2000, 60.0, 10,
    )  # fmt: skip
    assert (seen["max_batch"], seen["max_wait_ms"], seen["modes"]) == (64, (2.0,), ("batched", "unbatched"))


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--modes", "batched,fast"], "modes fast"),
        (["--clients", "0"], "clients = 0"),
        (["--max-wait-ms", "-1"], "max_wait_ms"),
    ],
)
def test_bad_settings_exit_1_and_write_nothing(tmp_path, extra, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    out = tmp_path / "out"
    result = runner.invoke(app, ["bench", "serve", "--run", str(run), "--out", str(out), *extra])
    assert result.exit_code == 1, result.output
    assert "error" in result.output and message in result.output
    assert not out.exists()


def test_a_folder_that_is_not_a_run_exits_1(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["bench", "serve", "--run", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 1 and "no run.json" in result.output
    assert not out.exists()


def test_unreadable_max_wait_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["bench", "serve", "--run", str(tmp_path), "--max-wait-ms", "2,soon"])
    assert result.exit_code == 2 and "--max-wait-ms" in result.output


def test_one_small_real_run(served_run, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    args = ["bench", "serve", "--run", str(served_run), "--out", str(out), "--clients", "2", "--requests", "6",
            "--k", "3", "--modes", "unbatched", "--warmup", "1"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "serve_load.json").read_text())
    [row] = data["rows"]
    assert row["mode"] == "unbatched" and row["answered"] == row["sent"] == 6 and row["errors"] == 0
    assert row["server_batches"] == 6 and data["settings"]["k"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["serve_load.csv", "serve_load.json", "serve_load.png"]
