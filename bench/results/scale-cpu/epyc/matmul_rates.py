"""Single-precision and bfloat16 matrix-product rates of this CPU at the 1M train step's shapes
(notes: ../NOTES.md). Writes matmul-rates.json beside this file.

    python matmul_rates.py
"""

import json
import statistics
from pathlib import Path

import torch

from genrec.bench.timing import time_calls
from genrec.devices import cpu_model

# (m, k, n) of the step's largest products: the depth decoder's feed-forward and q/k/v over 2,560
# targets x 4 levels, their weight gradients, the item head's 1,024 negatives, a level's logits.
SHAPES = [
    (10240, 96, 384),
    (10240, 384, 96),
    (96, 10240, 384),
    (10240, 96, 288),
    (2560, 96, 1024),
    (2560, 96, 256),
]


def median_ms(fn) -> float:
    return statistics.median(time_calls(fn, torch.device("cpu"), repeats=25, warmup=3)) * 1e3


torch.set_num_threads(2)
rows = []
for m, k, n in SHAPES:
    a, b = torch.randn(m, k), torch.randn(k, n)
    gflop = 2 * m * k * n / 1e9
    row = {"m": m, "k": k, "n": n}
    for name, (x, y) in {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}.items():
        ms = median_ms(lambda x=x, y=y: torch.mm(x, y))
        row[f"{name}_ms"], row[f"{name}_gflops"] = round(ms, 3), round(gflop / ms * 1e3, 1)
    rows.append(row)
    print(row)
out = {
    "cpu": cpu_model(),
    "torch": torch.__version__,
    "threads": 2,
    "rows": rows,
    "fp32_gflops_median": statistics.median(r["fp32_gflops"] for r in rows),
    "bf16_gflops_median": statistics.median(r["bf16_gflops"] for r in rows),
}
Path(__file__).with_name("matmul-rates.json").write_text(json.dumps(out, indent=1) + "\n")
