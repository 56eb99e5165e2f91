"""``genrec bench train-step``: a training step of the demo's model at catalogue sizes, with
genrec's CPU dropout against torch's in the same run.

Each cell trains the model of ``configs/tiger_beauty.toml --profile cpu`` (the ItemDecoder with
its sampled item head; the item table row-sparse from 100,000 items, as ``genrec train`` does) on
seeded synthetic windows, and times blocks of steps (forward, backward, clipping, optimizer);
the figure of a block is its median step. The two dropouts alternate block by block, so drift in
the machine's load hits both alike:

- ``genrec``: genrec.models.layers.Dropout (the counter-based masks of genrec.ops.dropout_multiplier);
- ``torch``: every such layer swapped for ``torch.nn.Dropout`` (bernoulli_ masks), what the
  models used before.

Beside them, the dropout of the step's largest activation alone (the depth decoder's
feed-forward: 128 windows x 20 targets x 4 levels x 384 features).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.bench.results import environment, plot_bars, write_results
from genrec.bench.timing import median_seconds
from genrec.config import load_config
from genrec.models import build_model
from genrec.models.layers import Dropout
from genrec.ops import dropout_multiplier
from genrec.train.examples import BatchMaker, build_examples, epoch_batches
from genrec.train.recipe import LossModule, make_optimizer, uses_sparse_item_table

DROPOUTS = ("genrec", "torch")
USERS = 50_000
LEVELS = [256, 256, 256, 4]  # three levels of 256 codes and a small disambiguation level


def _torch_dropout(model: nn.Module) -> None:
    """Swap every genrec Dropout of ``model`` for torch.nn.Dropout with the same p."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Dropout):
                setattr(module, name, nn.Dropout(child.p))


class _Trainer:
    """One model, optimizer and batch stream; ``block(steps)`` returns the median step seconds."""

    def __init__(self, config_path: Path, num_items: int, dropout: str, seed: int) -> None:
        config = load_config(config_path, profile="cpu")
        self.t = config.train
        rng = np.random.default_rng(seed)
        # Users with 5 to 40 training items: full windows (max_history + 1) and shorter ones.
        lengths = rng.integers(5, 41, USERS)
        flat = rng.integers(0, num_items, int(lengths.sum()))
        ends = np.cumsum(lengths)
        codes = np.stack([rng.integers(0, v, num_items) for v in LEVELS], axis=1)
        torch.manual_seed(seed)
        device = torch.device("cpu")
        self.model = build_model(config.model, LEVELS, self.t.max_history, num_items)
        if dropout == "torch":
            _torch_dropout(self.model)
        self.sparse = uses_sparse_item_table(config, self.model, device)
        if self.sparse:
            self.model.sparse_item_grads(True)
        self.optimizer = make_optimizer(self.model, config, device, self.sparse)
        examples = build_examples(ends - lengths, ends, self.t.max_history, self.model.example_kind)
        self.maker = BatchMaker(examples, flat, codes, device)
        self.batches = epoch_batches(examples, self.t.batch_size, seed, 0, self.t.length_grouping)
        self.loss = LossModule(self.model, self.t.label_smoothing)
        self.params = list(self.model.parameters())
        self.next = 0
        self.model.train()

    def step(self) -> None:
        batch = self.maker(self.batches[self.next % len(self.batches)])
        self.next += 1
        total = self.loss(batch)
        (total / 1000).backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def block(self, steps: int) -> float:
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def _dropout_rows(quick: bool) -> list[dict]:
    x = torch.randn(128 * 20 * 4, 384)
    p = 0.2
    calls = {
        "genrec": lambda: x * dropout_multiplier(x, 12345, p),
        "torch": lambda: F.dropout(x, p, training=True),
    }
    rows = []
    for name, fn in calls.items():
        seconds = median_seconds(fn, "cpu", min_run_time=0.1 if quick else 0.5)
        rows.append(
            {
                "kind": "dropout",
                "dropout": name,
                "elements": x.numel(),
                "median_ms": 1e3 * seconds,
                "ns_per_element": 1e9 * seconds / x.numel(),
            }
        )
    return rows


def run_train_step_benchmark(
    out_dir: Path,
    sizes: tuple[int, ...],
    *,
    config: Path = Path("configs/tiger_beauty.toml"),
    steps: int = 12,
    reps: int = 3,
    warmup: int = 3,
    seed: int = 0,
    quick: bool = False,
) -> dict:
    """Time the training step at each catalogue size with each dropout; write train_step.json,
    .csv and .png under ``out_dir``."""
    if not Path(config).is_file():
        raise FileNotFoundError(f"{config}: no such config (the demo's is configs/tiger_beauty.toml)")
    if steps < 1 or reps < 1 or warmup < 0:
        raise ValueError(f"steps and reps must be >= 1 and warmup >= 0, got {steps}, {reps}, {warmup}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    load_before = os.getloadavg()[0]
    for num_items in sizes:
        trainers = {name: _Trainer(Path(config), num_items, name, seed) for name in DROPOUTS}
        batch_size = trainers["genrec"].t.batch_size
        blocks: dict[str, list[float]] = {name: [] for name in DROPOUTS}
        for trainer in trainers.values():
            for _ in range(warmup):
                trainer.step()
        for rep in range(reps):
            order = DROPOUTS if rep % 2 == 0 else DROPOUTS[::-1]
            for name in order:
                blocks[name].append(trainers[name].block(steps))
        for name in DROPOUTS:
            seconds = statistics.median(blocks[name])
            rows.append(
                {
                    "kind": "train_step",
                    "items": num_items,
                    "dropout": name,
                    "sparse_item_table": trainers[name].sparse,
                    "batch_size": batch_size,
                    "median_step_s": seconds,
                    "examples_per_s": batch_size / seconds,
                    "block_medians_s": blocks[name],
                }
            )
        base = next(r for r in rows if r["items"] == num_items and r["dropout"] == "torch")
        for r in rows:
            if r["items"] == num_items:
                r["speedup_vs_torch_dropout"] = base["median_step_s"] / r["median_step_s"]
        del trainers
    rows += _dropout_rows(quick)
    payload = {
        "benchmark": "train_step",
        **environment("cpu"),
        "threads": torch.get_num_threads(),
        "config": str(config),
        "steps_per_block": steps,
        "blocks": reps,
        "warmup_steps": warmup,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }
    paths = write_results(out_dir, "train_step", payload, rows)
    step_rows = [r for r in rows if r["kind"] == "train_step"]
    groups = [f"{n:,} items" for n in sizes]
    series = {
        f"{name} dropout": [
            next(r["examples_per_s"] for r in step_rows if r["items"] == n and r["dropout"] == name) for n in sizes
        ]
        for name in DROPOUTS
    }
    png = plot_bars(out_dir / "train_step.png", "training step, CPU (examples / s)", groups, series, "examples / s")
    if png:
        paths["png"] = png
    return {"payload": payload, "rows": rows, "paths": paths}
