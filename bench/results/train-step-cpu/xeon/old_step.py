"""Median training step of the demo's model (cpu profile) at 12k and 1M items, on seeded synthetic
windows identical to genrec.bench.train_step's, for whichever genrec is on PYTHONPATH: the old
commit (dense item table, torch dropout) or HEAD (sparse table from 100k items, genrec dropout)."""
import json, statistics, sys, time
import numpy as np, torch
import genrec
from genrec.config import load_config
from genrec.models import build_model
from genrec.train.examples import BatchMaker, build_examples, epoch_batches
from genrec.train import loop as L  # old
USERS, LEVELS = 50_000, [256, 256, 256, 4]
label, out = sys.argv[1], sys.argv[2]
rows = []
for n in (12_000, 1_000_000):
    config = load_config("configs/tiger_beauty.toml", profile="cpu")
    t = config.train
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 41, USERS); flat = rng.integers(0, n, int(lengths.sum())); ends = np.cumsum(lengths)
    codes = np.stack([rng.integers(0, v, n) for v in LEVELS], axis=1)
    torch.manual_seed(0)
    model = build_model(config.model, LEVELS, t.max_history, n)
    opt = L.make_optimizer(model, config, torch.device("cpu"))
    ex = build_examples(ends - lengths, ends, t.max_history, model.example_kind)
    maker = BatchMaker(ex, flat, codes, torch.device("cpu"))
    batches = epoch_batches(ex, t.batch_size, 0, 0, t.length_grouping)
    lossm = L._LossModule(model, t.label_smoothing); params = list(model.parameters()); model.train()
    i = 0
    def step():
        global i
        b = maker(batches[i % len(batches)]); i += 1
        (lossm(b) / 1000).backward(); torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(3): step()
    blocks = []
    for _ in range(3):
        ts = []
        for _ in range(12 if n < 100_000 else 8):
            s = time.perf_counter(); step(); ts.append(time.perf_counter() - s)
        blocks.append(statistics.median(ts))
    med = statistics.median(blocks)
    rows.append({"code": label, "items": n, "median_step_s": med, "examples_per_s": t.batch_size / med, "block_medians_s": blocks})
    print(rows[-1], flush=True)
json.dump({"rows": rows, "threads": torch.get_num_threads(), "torch": torch.__version__}, open(out, "w"), indent=1)
