"""The CLI entry points of the foundation: --help, info, bench kernels."""

from __future__ import annotations

import json
import platform
from importlib import metadata

import torch
from typer.testing import CliRunner

import genrec
from genrec.cli import app

runner = CliRunner()


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("info", "bench"):
        assert command in result.output


def test_info_reports_versions_and_backends():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["torch"] == torch.__version__ and info["torch_cuda"] == torch.version.cuda
    assert info["python"] == platform.python_version() and info["genrec"] == genrec.__version__
    assert info["triton"] == _installed("triton")
    assert info["cuda_available"] == torch.cuda.is_available()
    assert info["extension_loaded"] == genrec.extension_loaded()
    backends = info["ops"]["rq_encode"]["backends"]
    assert backends["reference@cpu"] == "ok"
    if info["extension_loaded"]:
        assert backends["cpp@cpu"] == "ok"
        assert info["ops"]["rq_encode"]["compiled_kernels"]["CPU"]
    dropout = info["ops"]["dropout_multiplier"]["backends"]
    assert dropout["reference@cpu"] == "ok" and dropout["triton@cpu"] != "ok"
    if info["extension_loaded"]:
        assert dropout["cpp@cpu"] == "ok"
    table = runner.invoke(app, ["info"])
    assert table.exit_code == 0 and "rq_encode" in table.output


def test_bench_kernels_writes_json_csv_png(tmp_path):
    result = runner.invoke(app, ["bench", "kernels", "--quick", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["device"] and data["torch"] and "copy_GBps" in data["ceilings"]
    assert data["memory"]["allocator"]  # which malloc ran: it moves CPU timings (genrec.heap.describe)
    rows = data["rows"]
    assert {r["backend"] for r in rows} >= {"reference"}
    for r in rows:
        assert r["median_ms"] > 0 and r["speedup_vs_reference"] > 0
        if r["backend"] == "reference":
            assert r["speedup_vs_reference"] == 1.0
    assert (tmp_path / "kernels.csv").read_text().startswith("op,backend,size")
    assert (tmp_path / "kernels.png").stat().st_size > 1000
