"""The end of ``genrec train``: summary.json (headline metrics, seconds per stage) and the final
table printed to the console."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.table import Table

from genrec.config import Config
from genrec.faults import fault_point
from genrec.run_format import update_run_json, write_json
from genrec.settings import hashed_settings, stable_hash

STAGES = ("prepare", "embed", "tokenize", "train", "test")
HEADLINE = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


@dataclass
class PipelineResult:
    run_dir: Path
    stages: dict[str, dict] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    train: dict = field(default_factory=dict)


def finish_run(config: Config, run_dir: Path, result: PipelineResult, wall: dict, device) -> None:
    after_prepare = sum(v for k, v in wall.items() if k != "prepare")
    summary = {
        **{k: result.metrics.get(k) for k in HEADLINE},
        "invalid_rate": result.metrics.get("invalid_rate"),
        "train_seconds": round(after_prepare, 1),
        "train_loop_seconds": result.train.get("train_seconds"),
        "seed": config.run.seed,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": config.model.kind,
        "steps": result.train.get("steps"),
        "epochs": result.train.get("epochs"),
        "stopped_because": result.train.get("stopped_because"),
        "best_validation": result.train.get("best"),
        "stage_seconds": {k: round(v, 1) for k, v in wall.items()},
        "config_hash": stable_hash(hashed_settings(config)),
    }
    write_json(run_dir / "summary.json", summary)
    fault_point("summary-saved")
    if device.type == "cuda":
        write_json(run_dir / "gpu_summary.json", summary)
    update_run_json(run_dir, {"stages": result.stages, "summary": summary})


def print_summary(result: PipelineResult, console) -> None:
    """The final table: ranking quality, beyond-accuracy metrics, invalid IDs and time per stage."""
    m = result.metrics
    table = Table(title=f"test metrics ({result.run_dir})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        *HEADLINE,
        "mrr",
        "coverage@10",
        "gini@10",
        "novelty@10",
        "avg_popularity@10",
        "invalid_rate",
    ):
        if key in m and m[key] is not None:
            table.add_row(key, f"{m[key]:.4f}")
    # The parts of a fused list (genrec.fusion): the beam search alone, then with the item head,
    # and (with cold candidates) the final list without them.
    for key in ("cold_target/recall@10", "warm_target/recall@10"):
        if m.get(key) is not None:
            table.add_row(key, f"{m[key]:.4f}")
    for part in ("beam", "beam+head", "no-cold"):
        for key in ("recall@10", "ndcg@10"):
            if m.get(f"{part}/{key}") is not None:
                table.add_row(f"{part}: {key}", f"{m[f'{part}/{key}']:.4f}")
    console.print(table)
    times = Table(title="wall-clock per stage")
    times.add_column("stage")
    times.add_column("seconds", justify="right")
    times.add_column("")
    for name in STAGES:
        if name in result.stages:
            s = result.stages[name]
            note = "given" if s.get("given") else ("cached" if s.get("cached") else "")
            times.add_row(name, f"{s.get('seconds', 0.0):.1f}", note)
    console.print(times)
