"""genrec bench decode: the sweep writes JSON/CSV/PNG, the baselines decode valid items, and the GPU
check's summary is complete (run here at toy size on the CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from genrec.bench.decode import default_backends
from genrec.bench.decode_baselines import HFGenerateBaseline, PythonTrie, python_trie_search
from genrec.bench.decode_fixtures import PrecomputedLogits, history_batch, synthetic_catalogue
from genrec.bench.gpu_check import run_gpu_check
from genrec.cli import app
from genrec.decoding import TrieIndex, beam_search


def test_synthetic_catalogue_is_tiger_shaped_and_unique():
    cat = synthetic_catalogue(20_000, seed=3)
    assert cat.codes.shape == (20_000, 4) and cat.level_sizes[:3] == [256, 256, 256]
    assert torch.unique(cat.codes, dim=0).shape[0] == 20_000
    assert int(cat.codes[:, 3].max()) + 1 == cat.level_sizes[3]
    assert bool((cat.codes[:, :3] < 256).all())


def test_python_trie_baseline_finds_the_same_items():
    cat = synthetic_catalogue(300, seed=1)
    index = TrieIndex.from_codes(cat.codes, level_sizes=cat.level_sizes)
    trie = PythonTrie(cat.codes)
    pre = PrecomputedLogits(3, 300, cat.level_sizes, torch.device("cpu"), seed=2)
    items, scores = python_trie_search(pre.step_fn(), trie, 3, 300, 10, 4, "cpu")
    ours = beam_search(pre.step_fn(), index, 3, 300, 10)
    assert torch.allclose(scores, ours.scores, atol=1e-4)
    assert torch.equal(items, ours.items)


def test_decode_cli_quick_run_writes_results(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            *(
                "bench",
                "decode",
                "--quick",
                "--device",
                "cpu",
                "--out",
                str(tmp_path),
                "--models",
                "precomputed",
            ),
            *("--baselines", "python_trie", "--users", "8", "--repeats", "1", "--threads", "1"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "decode.json").read_text())
    assert (
        data["device"] and data["ceilings"]["copy_GBps"] > 0 and data["trie_builds"][0]["num_items"] == 10_000
    )
    decode = [r for r in data["rows"] if r["kind"] == "decode"]
    methods = {(r["method"], r["backend"]) for r in decode}
    assert ("python_trie", "python") in methods and ("genrec", "reference") in methods
    baseline = {(r["model"], r["num_items"], r["beam"]): r for r in decode if r["method"] == "python_trie"}
    for r in decode:
        assert r["users_per_s"] > 0 and r["latency_ms"] > 0 and 0 < r["select_share"] <= 1
        assert r["beam"] in (10, 20) and r["users"] == 8
        assert r["users_per_s"] == pytest.approx(r["users"] / (r["latency_ms"] / 1e3))
        if r["method"] == "genrec":  # against the baseline of its own model, catalogue and beam
            base = baseline[(r["model"], r["num_items"], r["beam"])]
            assert r["speedup_vs_python_trie"] == pytest.approx(r["users_per_s"] / base["users_per_s"])
    assert {r["beam"] for r in baseline.values()} == {r["beam"] for r in decode}
    kernels = [r for r in data["rows"] if r["kind"] == "kernel"]
    assert {r["level"] for r in kernels} == {0, 1, 2, 3}
    for r in kernels:
        assert r["GBps"] > 0
        assert r["pct_of_copy_bw"] == pytest.approx(100 * r["GBps"] / data["ceilings"]["copy_GBps"])
    csv_lines = (tmp_path / "decode.csv").read_text().splitlines()
    assert csv_lines[0].startswith("kind,method,backend") and len(csv_lines) == 1 + len(data["rows"])
    assert (tmp_path / "decode.png").stat().st_size > 1000
    assert "users/s" in result.output


def test_decode_cli_rejects_bad_options(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "decode", "--device", "cpu", "--out", str(tmp_path), "--beams", "ten"])
    assert bad.exit_code != 0 and "comma-separated numbers" in bad.output
    bad = runner.invoke(
        app, ["bench", "decode", "--device", "cpu", "--out", str(tmp_path), "--models", "gpt"]
    )
    assert bad.exit_code != 0 and "tiger and/or precomputed" in bad.output


def test_gpu_check_summary_at_toy_size_on_the_cpu(tmp_path, monkeypatch):
    import genrec.bench.decode as decode

    usable = {b.value for b in default_backends(torch.device("cpu"))}
    backends = ["cpp", "reference"] if "cpp" in usable else ["reference"]
    real_row = decode._genrec_row

    def row_or_failure(sweep, index, cat, model_name, beam, backend, users, model):
        if backend.value == "reference" and len(backends) > 1:
            raise RuntimeError("simulated failure\nwith details")
        return real_row(sweep, index, cat, model_name, beam, backend, users, model)

    monkeypatch.setattr(decode, "_genrec_row", row_or_failure)
    out = run_gpu_check(
        tmp_path,
        log=lambda *_: None,
        device="cpu",
        items=2000,
        users=2,
        kernel_users=8,
        extra_kernel_items=3000,
        backends=backends,
        quick=True,
    )
    summary = json.loads((tmp_path / "decode_summary.json").read_text())
    assert summary == json.loads(json.dumps(out["summary"]))
    for key in (
        "users_per_s",
        "beam",
        "num_items",
        "d_model",
        "select_share",
        "kernels",
        "ceilings",
        "latency_ms",
    ):
        assert key in summary
    assert summary["beam"] == 20 and summary["num_items"] == 2000 and summary["d_model"] == 128
    assert 0 < summary["select_share"] < 1 and summary["users_per_s"] > 0
    beams = {(k["num_items"], k["beam"]) for k in summary["kernels"]}
    assert beams >= {(2000, 10), (2000, 20), (2000, 50), (2000, 100), (3000, 20)}
    assert all(k["pct_of_copy_bw"] > 0 for k in summary["kernels"])
    if len(backends) > 1:  # a failing backend is recorded and the others still report
        assert summary["backend"] == "cpp" and set(summary["by_backend"]) == {"cpp"}
        assert summary["errors"][0]["error"] == "RuntimeError: simulated failure"


def test_hf_generate_baseline_decodes_valid_items():
    pytest.importorskip("transformers")
    cat = synthetic_catalogue(500, seed=4)
    trie = PythonTrie(cat.codes)
    hf = HFGenerateBaseline(cat, trie, torch.device("cpu"))
    sequences = hf.decode(history_batch(cat, 2, torch.device("cpu")), beam=4, top_k=4)
    assert sequences.shape[0] == 8 and sequences.shape[1] == 5  # decoder start + 4 tokens
    for row in sequences.tolist():
        codes = tuple(tok - off for tok, off in zip(row[1:], hf.offsets, strict=True))
        assert codes in trie.items, "generate produced an ID of no item"
    assert hf.callback_seconds > 0
