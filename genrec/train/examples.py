"""Training examples from a prepared dataset, and the seeded order they are batched in.

"prefix" examples (TIGER): one per target position j >= 1 of each user's training sequence,
with the up to ``max_history`` items before it as history. "window" examples (decoder-only):
runs of up to ``max_history + 1`` consecutive training items, consecutive runs overlapping by one
item, so every position j >= 1 is a target exactly once with up to ``max_history`` items before
it. Either way each training item after a user's first is predicted once per epoch.

The order of an epoch is a pure function of (seed, epoch): resuming at (epoch, batch) replays the
same batches, and every process of a distributed run derives the same global batches and takes
its own slice of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Examples:
    """Example e covers ``items[ends[e] - lengths[e] : ends[e]]`` of the flat item array.

    prefix: the first ``lengths - 1`` items are the history and the last is the target;
    window: all ``lengths`` items form one run. ``users`` [E] say whose sequence it is.
    """

    kind: str
    users: np.ndarray
    ends: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


def build_examples(train_starts: np.ndarray, train_ends: np.ndarray, max_history: int, kind: str) -> Examples:
    """Examples from each user's training range [start, end) of the flat item array."""
    starts = np.asarray(train_starts, dtype=np.int64)
    ends = np.asarray(train_ends, dtype=np.int64)
    sizes = np.maximum(ends - starts, 0)
    users = np.arange(len(starts), dtype=np.int64)
    if kind == "prefix":
        count = np.maximum(sizes - 1, 0)  # targets j = start+1 .. end-1
        user = np.repeat(users, count)
        first = np.repeat(starts + 1 - np.cumsum(count) + count, count)
        target = first + np.arange(int(count.sum()))  # flat position of each target
        start = starts[user]
        length = np.minimum(target - start, max_history) + 1
        return Examples(kind, user, target + 1, length)
    if kind == "window":
        stride = max_history  # windows share one item, so each j >= 1 is a target once
        count = np.where(sizes >= 2, (sizes - 2) // stride + 1, 0)
        user = np.repeat(users, count)
        k = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        start = starts[user] + k * stride
        end = np.minimum(start + max_history + 1, ends[user])
        return Examples(kind, user, end, end - start)
    raise ValueError(f"unknown example kind {kind!r}; expected 'prefix' or 'window'")


def epoch_batches(
    examples: Examples, batch_size: int, seed: int, epoch: int, length_grouping: bool
) -> list[np.ndarray]:
    """The global batches of one epoch (arrays of example indices), a pure function of (seed, epoch).

    With ``length_grouping``, a shuffled epoch is cut into chunks of 64 batches, each chunk is
    sorted by example length and cut into batches, and the batches are shuffled: little padding,
    still random. The last partial batch is dropped (every step sees a full batch).
    """
    rng = np.random.default_rng([seed, epoch, 0x6E5])
    order = rng.permutation(len(examples))
    n_batches = len(order) // batch_size
    order = order[: n_batches * batch_size]
    if length_grouping and n_batches > 1:
        chunk = 64 * batch_size
        pieces = []
        for i in range(0, len(order), chunk):
            part = order[i : i + chunk]
            pieces.append(part[np.argsort(examples.lengths[part], kind="stable")])
        order = np.concatenate(pieces)
        batches = order.reshape(n_batches, batch_size)
        return list(batches[rng.permutation(n_batches)])
    return list(order.reshape(n_batches, batch_size))


def shard(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This process's contiguous slice of a global batch (the batch size divides by world_size)."""
    per = len(batch) // world_size
    return batch[rank * per : (rank + 1) * per]


class BatchMaker:
    """Turns example indices into model inputs on ``device``: semantic IDs gathered on the device.

    ``codes`` [num_items, T] are the items' semantic IDs; the flat item array and the codes live on
    the device, so a batch costs one small host-to-device copy of (end, length) pairs.
    """

    def __init__(
        self, examples: Examples, flat_items: np.ndarray, codes: np.ndarray, device: torch.device
    ) -> None:
        self.examples = examples
        self.device = device
        self.items = torch.as_tensor(flat_items, dtype=torch.long, device=device)
        self.codes = torch.as_tensor(codes, dtype=torch.long, device=device)

    def __call__(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        ex = self.examples
        ends = ex.ends[idx]
        lengths = ex.lengths[idx]
        width = int(lengths.max())  # items per row in this batch
        host = torch.from_numpy(np.stack([ends, lengths, ex.users[idx]]))
        if self.device.type == "cuda":
            host = host.pin_memory()  # so the copy below does not wait for the GPU's queue
        ends_t, lengths_t, users_t = host.to(self.device, non_blocking=True)
        cols = torch.arange(width, device=self.device)
        valid = cols[None, :] < lengths_t[:, None]  # (B, W)
        pos = (ends_t - lengths_t)[:, None] + cols[None, :]  # (B, W) left-aligned runs
        pos = torch.where(valid, pos, torch.zeros_like(pos))
        item = self.items[pos] * valid  # (B, W) item indices, padding = 0
        run = self.codes[item]  # (B, W, T); padding rows hold item 0's ID, which models ignore
        if ex.kind == "window":
            return {"window": run, "window_len": lengths_t, "window_items": item, "user_ids": users_t}
        hist_len = lengths_t - 1
        rows = torch.arange(len(idx), device=self.device)
        target = run[rows, hist_len]  # (B, T)
        keep = cols[None, : width - 1] < hist_len[:, None]  # (B, W-1)
        return {
            "history": run[:, : width - 1] * keep[:, :, None],
            "history_len": hist_len,
            "history_items": item[:, : width - 1] * keep,
            "target": target,
            "user_ids": users_t,
        }

    def target_tokens(self, idx: np.ndarray, num_levels: int) -> int:
        """Target tokens of a (global) batch: the loss normaliser shared by all processes."""
        lengths = self.examples.lengths[idx]
        per_example = 1 if self.examples.kind == "prefix" else lengths - 1
        return int(np.sum(np.broadcast_to(per_example, lengths.shape))) * num_levels
