"""Summarise paired.sh's passes: paired.json / .csv (one row per commit and size: every pass, the
median) and paired.png (examples/s, log scale).

    python paired_summary.py paired.jsonl OUT_DIR
"""

import json
import statistics
import sys
from pathlib import Path

from genrec.bench.results import environment, plot_bars, write_results


def main(passes_path: str, out_dir: str) -> None:
    passes = [json.loads(line) for line in Path(passes_path).read_text().splitlines() if line.strip()]
    codes = list(dict.fromkeys(p["code"] for p in passes))
    sizes = sorted({p["items"] for p in passes})
    rows = []
    for items in sizes:
        for code in codes:
            mine = [p for p in passes if p["code"] == code and p["items"] == items]
            rates = [r for p in mine for r in p["examples_per_s"]]
            rows.append(
                {
                    "code": code,
                    "items": items,
                    "processes": len(mine),
                    "passes": len(rates),
                    "steps_per_pass": mine[0]["steps"],
                    "window_items_per_pass": mine[0]["window_items"],
                    "median_examples_per_s": statistics.median(rates),
                    "min_examples_per_s": min(rates),
                    "max_examples_per_s": max(rates),
                    "pass_examples_per_s": rates,
                }
            )
        old, new = (r for r in rows if r["items"] == items)
        new["speedup_vs_" + old["code"]] = new["median_examples_per_s"] / old["median_examples_per_s"]
    payload = {"benchmark": "train_step_paired", **environment("cpu"), "threads": passes[0]["threads"]}
    write_results(Path(out_dir), "paired", payload, rows)
    series = {
        code: [
            next(r["median_examples_per_s"] for r in rows if r["code"] == code and r["items"] == n)
            for n in sizes
        ]
        for code in codes
    }
    plot_bars(
        Path(out_dir) / "paired.png",
        "training step, CPU: the same 40 batches",
        [f"{n:,} items" for n in sizes],
        series,
        "examples / s",
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
