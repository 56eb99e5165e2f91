"""genrec bench threads / --background-load: the sweep's bookkeeping, and the load recorded in the JSON."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from genrec import _openmp
from genrec.bench.threads import summarize
from genrec.cli import app

runner = CliRunner()


def _cell(load, policy, threads, rate):
    return {"load": load, "policy": policy, "threads": threads, "results": {"decode": {"rate": rate}}}


def test_summary_takes_medians_and_compares_with_the_best_explicit_setting():
    cells = [
        _cell(1, "before", 0, 10.0), _cell(1, "before", 0, 30.0), _cell(1, "before", 0, 20.0),
        _cell(1, "before", 1, 300.0),
        _cell(1, "before", 2, 15.0),
        _cell(1, "after", 0, 250.0),
        _cell(1, "after", 1, 290.0),
        _cell(1, "after", 2, 200.0),
        _cell(0, "after", 0, 500.0),
        _cell(0, "after", 2, 500.0),
        _cell(0, "after", 1, 250.0),
    ]  # fmt: skip
    rows = {(r["background_load"], r["policy"], r["threads"]): r for r in summarize(cells)}
    before_default = rows[(1, "before", "default")]
    assert before_default["rate"] == 20.0 and sorted(before_default["rates"]) == [10.0, 20.0, 30.0]
    assert before_default["slowdown_vs_best_1_or_2_threads_same_policy"] == pytest.approx(15.0)
    after_default = rows[(1, "after", "default")]
    assert after_default["slowdown_vs_best_1_or_2_threads_same_policy"] == pytest.approx(290 / 250)
    assert after_default["slowdown_vs_best_1_or_2_threads_any_policy"] == pytest.approx(300 / 250)
    # Quiet rows are compared only with quiet rows.
    assert rows[(0, "after", "default")]["slowdown_vs_best_1_or_2_threads_any_policy"] == 1.0
    assert rows[(0, "after", 1)]["slowdown_vs_best_1_or_2_threads_any_policy"] == 2.0
    assert all(r["unit"] == "users/s" for r in rows.values())


def test_threads_cli_quick_run_writes_results(tmp_path):
    args = ["bench", "threads", "--quick", "--loads", "0", "--repeats", "1", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--workload", "rq_encode_d32", "--policy", "after"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "threads.json").read_text())
    assert data["background_loads"][0]["processes"] == 0
    assert {c["threads"] for c in data["cells"]} == {0, 1, 2}
    for cell in data["cells"]:
        assert cell["openmp"]["GOMP_SPINCOUNT"] == _openmp.SPIN_COUNT and cell["openmp"]["set_by_genrec"]
        assert cell["adaptive_threads"]["adaptive"] == (cell["threads"] == 0)
        assert cell["threads_used"] == (cell["threads"] or os.cpu_count())
    assert {r["threads"] for r in data["rows"]} == {"default", 1, 2}
    assert all(r["rate"] > 0 and r["workload"] == "rq_encode_d32" for r in data["rows"])
    assert (tmp_path / "threads.csv").read_text().startswith("workload,background_load,policy")
    assert (tmp_path / "threads.png").stat().st_size > 1000


def test_threads_cli_rejects_bad_options(tmp_path):
    bad = runner.invoke(app, ["bench", "threads", "--loads", "one", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "non-negative integers" in bad.output
    bad = runner.invoke(app, ["bench", "threads", "--workload", "sort", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "--workload takes" in bad.output


def test_kernels_records_its_background_load_and_threads(tmp_path):
    args = ["bench", "kernels", "--quick", "--device", "cpu", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--threads", "1", "--background-load", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert (
        data["background_load"]["processes"] == 1 and data["background_load"]["stopped_before_the_end"] == 0
    )
    assert data["threads"] == 1 and "OMP_WAIT_POLICY" in data["openmp"]


def test_background_load_is_refused_below_zero(tmp_path):
    bad = runner.invoke(app, ["bench", "decode", "--background-load", "-1", "--out", str(tmp_path)])
    assert bad.exit_code != 0
