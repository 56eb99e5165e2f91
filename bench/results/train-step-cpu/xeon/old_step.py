"""The training step of commit ea5c964 (the code issue 21 profiled) on genrec.bench.train_step's
synthetic windows, for the comparison in ../NOTES.md. Run it from a worktree of that commit:

    PYTHONPATH=. python old_step.py ea5c964 old_ea5c964.json

It uses that commit's model, loss module and optimizer (a dense item table, AdamW over all of it,
torch's dropout) and times three blocks of steps (forward, backward, clipping, update) after three
untimed ones; the figure of a size is the median of the block medians.
"""

import json
import statistics
import sys
import time

import torch
from windows import LEVELS, synthetic_users  # beside this script

from genrec.config import load_config
from genrec.models import build_model
from genrec.train import loop
from genrec.train.examples import BatchMaker, build_examples, epoch_batches


def time_size(num_items: int) -> dict:
    config = load_config("configs/tiger_beauty.toml", profile="cpu")
    t = config.train
    lengths, flat, ends, codes = synthetic_users(num_items)
    torch.manual_seed(0)
    model = build_model(config.model, LEVELS, t.max_history, num_items)
    optimizer = loop.make_optimizer(model, config, torch.device("cpu"))
    examples = build_examples(ends - lengths, ends, t.max_history, model.example_kind)
    maker = BatchMaker(examples, flat, codes, torch.device("cpu"))
    batches = epoch_batches(examples, t.batch_size, 0, 0, t.length_grouping)
    loss = loop._LossModule(model, t.label_smoothing)
    params = list(model.parameters())
    model.train()
    done = 0

    def step() -> None:
        nonlocal done
        batch = maker(batches[done % len(batches)])
        done += 1
        (loss(batch) / 1000).backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    blocks = []
    for _ in range(3):
        times = []
        for _ in range(12 if num_items < 100_000 else 8):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        blocks.append(statistics.median(times))
    median = statistics.median(blocks)
    return {
        "items": num_items,
        "median_step_s": median,
        "examples_per_s": t.batch_size / median,
        "block_medians_s": blocks,
    }


def main(label: str, out: str) -> None:
    rows = []
    for num_items in (12_000, 1_000_000):
        rows.append({"code": label, **time_size(num_items)})
        print(rows[-1], flush=True)
    payload = {"rows": rows, "threads": torch.get_num_threads(), "torch": torch.__version__}
    with open(out, "w") as f:
        json.dump(payload, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
