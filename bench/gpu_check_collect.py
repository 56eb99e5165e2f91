"""Gathers what bench/gpu_check.sh produced under OUT into one gpu_check-<date>.json."""

from __future__ import annotations

import datetime
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _cached_stage_seconds(run_dir: Path) -> dict:
    """Stages the run took from the carried stage cache, with the seconds they took where they were
    computed (the CPU machine): what "all stages after the data is prepared" adds to the GPU's time."""
    run = _load(run_dir / "run.json") or {}
    found = {}
    for name, stage in (run.get("stages") or {}).items():
        if name == "prepare" or not isinstance(stage, dict) or not stage.get("cached"):
            continue
        record = _load(Path(stage.get("path", "")) / "stage.json") or {}
        found[name] = {"key": stage.get("key"), "seconds_where_computed": record.get("seconds")}
    return found


def _spread(runs: list[dict]) -> dict:
    """Mean and sample standard deviation of the headline metrics over seeds."""
    import statistics

    out: dict = {"seeds": [r.get("seed") for r in runs], "n": len(runs)}
    for key in ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "train_seconds"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if len(values) == len(runs):
            out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values), "values": values}
    return out


def main(out: Path) -> Path:
    import torch

    result: dict = {
        "git_sha": os.environ.get("GENREC_GIT_SHA", "unknown"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "train_args": os.environ.get("GPU_CHECK_TRAIN_ARGS", ""),
        "budget_s": float(os.environ.get("GPU_CHECK_BUDGET_S", 560)),
    }
    steps = out / "step_seconds.txt"
    if steps.exists():
        result["step_seconds"] = {
            k: float(v) for k, v in (line.split() for line in steps.read_text().splitlines() if line.strip())
        }
    junit = out / "cuda_tests.xml"
    if junit.exists():
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        result["cuda_tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    kernels = _load(out / "kernels.json")
    if kernels:
        result["ceilings"] = kernels.get("ceilings")
        result["kernels"] = kernels.get("rows")
    decode = _load(out / "decode_summary.json")
    if decode:
        result["decode"] = decode
    train = _load(out / "tiger_beauty" / "summary.json")
    if train:
        train["cached_stages"] = _cached_stage_seconds(out / "tiger_beauty")
        cost = _load(out / "tiger_beauty" / "cost.json") or {}
        train["decode"] = cost.get("decode")  # the trained recipe's own test-time latency and throughput
        train["time_budget_s"] = ((_load(out / "tiger_beauty" / "config.json") or {}).get("train") or {}).get(
            "time_budget_s"
        )
        result["tiger_beauty"] = train
    seeds = [train] if train else []
    seeds += [s for d in sorted(out.glob("tiger_beauty_seed*")) if (s := _load(d / "summary.json"))]
    if len(seeds) > 1:
        result["tiger_beauty_seeds"] = _spread(seeds)
    path = out / f"gpu_check-{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("kernels",)}, indent=1)[:3000])
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main(Path(sys.argv[1]))
