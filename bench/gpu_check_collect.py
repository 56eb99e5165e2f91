"""Gathers what bench/gpu_check.sh produced under OUT into one gpu_check-<date>.json."""

from __future__ import annotations

import datetime
import json
import os
import re
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


def _junit_counts(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        suite = ET.parse(path).getroot()
    except ET.ParseError:  # cut short mid-write
        return None
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def _sanitizer(out: Path) -> dict | None:
    """Per compute-sanitizer tool: the errors it counted (None when its run did not finish), the tests it
    ran, the exit status and seconds; or why the step was skipped."""
    status = out / "sanitizer_status.txt"
    if not status.exists():
        return None
    tools: dict = {}
    for line in status.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            continue
        if parts[0] == "skipped":
            return {"skipped": parts[1]}
        tool, rest = parts
        if rest.startswith("skipped"):
            tools[tool] = {"skipped": rest.removeprefix("skipped").strip()}
            continue
        _ran, rc, seconds, cap = rest.split()
        log = out / f"sanitizer_{tool}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        summary = re.search(r"ERROR SUMMARY: (\d+) error", text)
        hazards = re.search(r"RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)", text)
        # racecheck ends with its own summary line instead of an error summary.
        errors = int(summary.group(1)) if summary else int(hazards.group(2)) if hazards else None
        tools[tool] = {
            "errors": errors,
            "completed": errors is not None,
            "exit_status": int(rc),
            "timed_out": int(rc) in (124, 130, 137),
            "seconds": float(seconds),
            "cap_seconds": int(cap),
            "tests": _junit_counts(out / f"sanitizer_{tool}.xml"),
        }
        if hazards:
            tools[tool]["racecheck_hazards"] = {
                "displayed": int(hazards.group(1)), "errors": int(hazards.group(2)), "warnings": int(hazards.group(3)),
            }  # fmt: skip
    return tools


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
    cuda_tests = _junit_counts(out / "cuda_tests.xml")
    if cuda_tests:
        result["cuda_tests"] = cuda_tests
    sanitizer = _sanitizer(out)
    if sanitizer:
        result["sanitizer"] = sanitizer
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
