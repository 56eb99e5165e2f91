"""The shipped recipes still resolve to the configs whose results the README quotes.

Each committed run folder holds the resolved config it ran with; a recipe edit that would change
the result (model, data, training or decoding settings) fails here until the figures are re-measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genrec.config import load_config
from genrec.model_config import migrate_model_table

ROOT = Path(__file__).resolve().parents[2]

# Settings that change where or how fast a run goes, not what it computes.
NOT_RESULT = {
    "run.name",
    "run.threads",
    "run.cache_dir",
    "run.device",
    "data.prepared",
    "train.time_budget_s",  # a cap; the committed runs name what stopped them
    "train.log_every",
    "train.eval_batch_users",
    "eval.batch_users",
}


def _flat(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@pytest.mark.parametrize(
    ("config", "profile", "run_folder", "allowed"),
    [
        ("tiger_beauty", None, "bench/results/default-beauty/run", {}),
        ("tiger_beauty", "cpu", "bench/results/demo-beauty/seed-42", {}),
        ("tiger_sports", "cpu", "bench/results/sports-cpu/run", {}),
        ("cold_beauty", "cpu", "bench/results/cold-beauty/xeon/share-cap", {}),
    ],
)
def test_recipe_matches_its_measured_run(config, profile, run_folder, allowed):
    # runs measured before item_decoder was a kind of its own spell it the old way
    measured = _flat(migrate_model_table(json.loads((ROOT / run_folder / "config.json").read_text()), run_folder, warn=False))
    shipped = _flat(load_config(ROOT / f"configs/{config}.toml", profile).to_dict())
    defaults = _flat(load_config(None).to_dict())
    differ = {
        key: (measured.get(key), shipped.get(key))
        for key in measured.keys() | shipped.keys()
        if key not in NOT_RESULT
        and measured.get(key) != shipped.get(key)
        # a setting added after the run was measured, left at its default, changes nothing
        and not (key not in measured and shipped.get(key) == defaults.get(key))
    }
    assert differ == {k: v for k, v in allowed.items() if k in differ} and set(differ) == set(allowed), differ
