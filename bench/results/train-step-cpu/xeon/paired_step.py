"""One pass of training steps over a fixed list of batches, for the paired old/new comparison in
../NOTES.md. Runs from a worktree of either commit (it finds that commit's loss module and
optimizer); the driver alternates processes of the two commits:

    PYTHONPATH=<worktree> python paired_step.py <label> <items> <out.jsonl>

The synthetic windows are genrec.bench.train_step's (50,000 users of 5-40 items, seeded); the
timed batches are batches 3 .. 3 + STEPS of that epoch's length-grouped order in every pass and
in both commits, so both time the same windows (the batches' target count is printed as a
check). Each pass's figure is its total time: examples/s = 128 * STEPS / seconds.
"""

import json
import sys
import time

import torch
from windows import LEVELS, synthetic_users  # beside this script

from genrec.config import load_config
from genrec.models import build_model
from genrec.train.examples import BatchMaker, build_examples, epoch_batches

STEPS, PASSES, WARMUP = 40, 2, 3


def main(label: str, num_items: int, out: str) -> None:
    config = load_config("configs/tiger_beauty.toml", profile="cpu")
    t = config.train
    lengths, flat, ends, codes = synthetic_users(num_items)
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build_model(config.model, LEVELS, t.max_history, num_items)
    try:  # today's code: a row-sparse item table at 1M items
        from genrec.train.recipe import LossModule, make_optimizer, uses_sparse_item_table

        sparse = uses_sparse_item_table(config, model, device)
        if sparse:
            model.sparse_item_grads(True)
        optimizer = make_optimizer(model, config, device, sparse)
    except ImportError:  # ea5c964: a dense table, AdamW over all of it
        from genrec.train import loop

        LossModule = loop._LossModule
        optimizer = loop.make_optimizer(model, config, device)
    examples = build_examples(ends - lengths, ends, t.max_history, model.example_kind)
    maker = BatchMaker(examples, flat, codes, device)
    batches = epoch_batches(examples, t.batch_size, 0, 0, t.length_grouping)
    loss = LossModule(model, t.label_smoothing)
    params = list(model.parameters())
    model.train()

    def step(index: int) -> None:
        (loss(maker(batches[index])) / 1000).backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    timed = range(WARMUP, WARMUP + STEPS)
    items_seen = int(sum(int(examples.lengths[batches[i]].sum()) for i in timed))  # the same in both commits
    for i in range(WARMUP):
        step(i)
    passes = []
    for _ in range(PASSES):
        start = time.perf_counter()
        for i in timed:
            step(i)
        passes.append(time.perf_counter() - start)
    row = {
        "code": label,
        "items": num_items,
        "steps": STEPS,
        "window_items": items_seen,
        "pass_s": passes,
        "examples_per_s": [t.batch_size * STEPS / s for s in passes],
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(row), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
