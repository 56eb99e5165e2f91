"""The load benchmark end to end on the tiny run: both modes against real servers, results written."""

from __future__ import annotations

import csv
import json

from genrec.bench import serve_load


def test_the_load_benchmark_measures_both_modes(served_run, tmp_path):
    out = tmp_path / "bench"
    serve_load.main(
        ["--run", str(served_run), "--out", str(out), "--clients", "8", "--requests", "24",
         "--duration", "60", "--k", "5", "--max-wait-ms", "20", "--warmup", "2"]
    )  # fmt: skip
    data = json.loads((out / "serve_load.json").read_text())
    rows = {r["mode"]: r for r in data["rows"]}
    assert set(rows) == {"batched", "unbatched"}
    for row in rows.values():
        assert row["answered"] == row["sent"] == 24 and row["errors"] == 0
        assert row["requests_per_s"] > 0 and 0 < row["latency_ms_p50"] <= row["latency_ms_p99"]
    assert rows["unbatched"]["server_batches"] == 24 and rows["unbatched"]["largest_batch"] == 1
    assert rows["batched"]["server_batches"] < 24 and rows["batched"]["largest_batch"] > 1
    batched = rows["batched"]
    assert batched["vs_unbatched_compared"] == 24 and batched["vs_unbatched_max_score_difference"] < 1e-4
    assert batched["max_wait_ms"] == 20.0 and rows["unbatched"]["max_wait_ms"] is None
    with open(out / "serve_load.csv") as f:
        assert [r["mode"] for r in csv.DictReader(f)] == ["batched", "unbatched"]
    assert (out / "serve_load.png").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["serve_load.csv", "serve_load.json", "serve_load.png"]
