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


def main(out: Path) -> Path:
    import torch

    result: dict = {
        "git_sha": os.environ.get("GENREC_GIT_SHA", "unknown"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
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
    train = _load(out / "tiger_beauty" / "gpu_summary.json")
    if train:
        result["tiger_beauty"] = train
    path = out / f"gpu_check-{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("kernels",)}, indent=1)[:3000])
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main(Path(sys.argv[1]))
