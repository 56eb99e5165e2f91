"""The item-head benchmark: both modes in their own processes, the same lists, the skip rule."""

from __future__ import annotations

import json

from genrec.bench.item_head import _codes, measure_one, parse_size, run


def test_sizes_and_codes():
    assert [parse_size(s) for s in ("12k", "1m", "2.5M", "300")] == [12_000, 1_000_000, 2_500_000, 300]
    codes = _codes(5000, 0)
    assert codes.shape == (5000, 4) and len({tuple(c) for c in codes.tolist()}) == 5000
    assert codes[:, :3].max() < 256 and (codes[:, 3] == 0).all()


def test_whole_and_chunked_give_full_lists_and_the_cap_skips_whole(tmp_path):
    # A cap below the whole mode's logits (40 users x 3,000 items x 4 bytes) records it as not run.
    result = run([3000], tmp_path, users=40, history=5, memory_cap_gb=1e-6, timeout=300)
    rows = {r["mode"]: r for r in result["rows"]}
    assert rows["whole"]["status"].startswith("not run: its logits alone need")
    assert rows["chunked"]["status"] == "ok" and rows["chunked"]["lists_full"]
    saved = json.loads((tmp_path / "item_head.json").read_text())
    assert saved["rows"] == result["rows"]
    assert (tmp_path / "item_head.csv").read_text().count("\n") == 3 and (
        tmp_path / "item_head.png"
    ).stat().st_size


def test_one_batch_is_measured_in_either_mode():
    whole = measure_one(2000, "whole", users=16, history=4)
    chunked = measure_one(3000, "chunked", users=16, history=4, chunk=700)  # five chunks
    assert whole["lists_full"] and chunked["lists_full"]
    assert whole["batch_seconds"] > 0 and chunked["peak_rss_gb"] > 0
