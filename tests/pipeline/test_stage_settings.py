"""What a run shows of its stages is what they hashed: run.json's stage_settings equal the settings
each stage wrote into its cache entry (stage.json), and a runtime setting changes neither."""

from __future__ import annotations

import json

from genrec.config import load_config
from genrec.pipeline import run_pipeline
from tests.pipeline.conftest import tiny_overrides


def _stage_json(cache, stage: str, key: str) -> dict:
    return json.loads((cache / stage / key / "stage.json").read_text())


def test_run_json_shows_the_settings_each_stage_hashed(tmp_path, tiny_prepared):
    cache = tmp_path / "cache"
    overrides = [*tiny_overrides(tiny_prepared, cache), "train.epochs=1"]
    run_pipeline(load_config(None, overrides=overrides), tmp_path / "run", until="train", progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    shown = info["stage_settings"]
    assert shown["prepare"] == {"given": str(tiny_prepared)}  # a given folder: keyed by its content
    for stage in ("embed", "tokenize"):
        key = info["stages"][stage]["key"] if "stages" in info else None
        entries = list((cache / stage).iterdir())
        assert len(entries) == 1 and (key is None or entries[0].name == key)
        assert shown[stage] == _stage_json(cache, stage, entries[0].name)["settings"]
    assert "progress" not in shown["tokenize"] and "device" not in shown["embed"]

    # A runtime setting (the tokenizer's progress bar, the embed batch size) reuses both entries.
    again = [*overrides, "tokenize.progress=true", "embed.batch_size=7"]
    run_pipeline(load_config(None, overrides=again), tmp_path / "run2", until="tokenize", progress=False)
    assert all(len(list((cache / stage).iterdir())) == 1 for stage in ("embed", "tokenize"))
