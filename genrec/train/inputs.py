"""What training reads: a dataset's training sequences and validation rows, and the items'
semantic IDs (and content vectors), as flat arrays that a GPU machine without polars can load."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrainInputs:
    """What training reads: the dataset's sequences and splits, and the items' semantic IDs."""

    flat_items: np.ndarray  # int64 [num_interactions], per-user chronological (CSR)
    train_starts: np.ndarray  # int64 [num_users] training part of user u: [start, end)
    train_ends: np.ndarray
    valid_users: np.ndarray  # int64 [U] validation rows: history = flat_items[v_starts:v_ends]
    valid_starts: np.ndarray
    valid_ends: np.ndarray
    valid_targets: np.ndarray
    codes: np.ndarray  # int64 [num_items, T] semantic IDs (codes + disambiguation token)
    level_sizes: list[int]
    fingerprints: dict[str, str]  # dataset / tokenizer hashes: what the run was trained from
    item_content: np.ndarray | None = None  # float32 [num_items, D]: the model's content vectors' input

    @classmethod
    def from_dataset(
        cls,
        dataset,
        codes: np.ndarray,
        level_sizes: list[int],
        fingerprints: dict[str, str],
        item_content: np.ndarray | None = None,
    ):
        starts, ends = dataset.train_bounds()
        valid = dataset.split("valid")
        return cls(
            flat_items=dataset.items,
            train_starts=starts,
            train_ends=ends,
            valid_users=valid.users,
            valid_starts=valid.starts,
            valid_ends=valid.ends,
            valid_targets=valid.targets,
            codes=np.asarray(codes, dtype=np.int64),
            level_sizes=list(level_sizes),
            fingerprints=dict(fingerprints),
            item_content=item_content,
        )

    def trained_items(self) -> np.ndarray:
        """bool [num_items]: the items some training sequence holds (the others are cold)."""
        seen = np.zeros(len(self.codes), dtype=bool)
        lengths = self.train_ends - self.train_starts
        rows = np.repeat(self.train_starts, lengths) + (
            np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        )
        seen[self.flat_items[rows]] = True
        return seen
