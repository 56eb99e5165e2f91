"""Matrix-product FLOPs of one 1M training epoch (cpu profile), from the epoch's real batches
(notes: NOTES.md).

Counts every dense product of the forward (the item transformer's two blocks over each batch's padded
windows, the depth decoder's block over each target's 4 levels, the level logits and the item head's
1,024 shared negatives) and takes the step as 3x that (each product's backward is two products of
the same size). Prints JSON; with rates (GFLOP/s) also the seconds the products alone need at each.

    python bench/results/scale-cpu/epoch_flops.py /tmp/scale_bench/epoch/items-1000000 164 296
"""

import glob
import json
import sys

from genrec.config import load_config
from genrec.data import load_prepared
from genrec.tokenize.artifacts import read_tokenizer_info
from genrec.train.examples import build_examples, epoch_batches

work = sys.argv[1]
cfg = load_config("configs/tiger_beauty.toml", profile="cpu")
m, t = cfg.model, cfg.train
ds = load_prepared(f"{work}/prepared")
levels = [int(v) for v in read_tokenizer_info(glob.glob(f"{work}/cache/tokenize/*")[0])["level_sizes"]]
ex = build_examples(*ds.train_bounds(), t.max_history, "window")
batches = epoch_batches(ex, t.batch_size, cfg.run.seed, 0, t.length_grouping)
C, F, H, dh = m.d_model, m.d_ff, m.num_heads, m.head_dim
inner = H * dh
per_position = 2 * (C * 3 * inner + inner * C + C * F + F * C)  # q/k/v, out, feed-forward
T = len(levels)
fwd = 0.0
for b in batches:
    lengths = ex.lengths[b]
    width = int(lengths.max()) - 1  # positions the item transformer reads per window
    n = int((lengths - 1).sum())  # targets
    rows = len(b)
    fwd += m.decoder_layers * (rows * width * per_position + 2 * 2 * rows * H * width * width * dh)
    fwd += m.depth_layers * (n * T * per_position + 2 * 2 * n * H * T * T * dh)
    fwd += 2 * n * C * sum(levels)  # level logits
    fwd += 2 * n * C * m.item_negatives + 2 * n * C  # item head
total = 3 * fwd
out = {
    "steps": len(batches),
    "windows": len(batches) * t.batch_size,
    "forward_gflop": fwd / 1e9,
    "train_gflop": total / 1e9,
    "train_gflop_per_step": total / 1e9 / len(batches),
}
for rate in sys.argv[2:]:
    out[f"seconds_at_{rate}_gflops"] = total / 1e9 / float(rate)
print(json.dumps(out, indent=1))
