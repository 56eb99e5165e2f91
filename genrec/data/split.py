"""How a prepared dataset is split into training, validation and test parts.

A scheme turns the per-user chronological sequences (CSR ``offsets`` / ``items``) into:
- a training mask over interactions (what models and popularity counts may see), and
- evaluation splits: one row per held-out target, with its history as a slice of an item array.

Only leave-one-out exists today; a scheme is looked up by the ``split.scheme`` name stored in
the manifest, so another one (say, cold-start items withheld from training) slots in beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

SPLIT_NAMES = ("train", "valid", "test")


@dataclass(frozen=True, eq=False)
class Split:
    """Rows of (user, history, held-out target); row i's history is ``items[starts[i]:ends[i]]``.

    Histories are chronological (oldest first) and are views into ``items``, never copies.
    """

    name: str
    users: np.ndarray  # int64 [R] user index of each row
    targets: np.ndarray  # int64 [R] the held-out item of each row
    starts: np.ndarray  # int64 [R]
    ends: np.ndarray  # int64 [R]
    items: np.ndarray  # int64 [*] the array the histories slice

    def __len__(self) -> int:
        return len(self.users)

    @property
    def history_lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def history(self, i: int) -> np.ndarray:
        return self.items[self.starts[i] : self.ends[i]]

    def history_list(self, rows: np.ndarray | slice | None = None) -> list[np.ndarray]:
        """The histories of ``rows`` (all rows by default) as a list of views."""
        idx = _rows(rows, len(self))
        return [
            self.items[s:e] for s, e in zip(self.starts[idx].tolist(), self.ends[idx].tolist(), strict=True)
        ]

    def histories(
        self,
        rows: np.ndarray | slice | None = None,
        max_len: int | None = None,
        pad_value: int = -1,
        pad_side: str = "right",
    ) -> np.ndarray:
        """Histories of ``rows`` as one int64 array [len(rows), max_len], oldest item first.

        Only the most recent ``max_len`` items are kept (default: the longest history among the
        rows). ``pad_side="right"`` puts the items first and ``pad_value`` after them; ``"left"``
        right-aligns the items so the most recent one is always in the last column.
        """
        if pad_side not in ("left", "right"):
            raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
        idx = _rows(rows, len(self))
        starts, ends = self.starts[idx], self.ends[idx]
        lengths = ends - starts
        if max_len is None:
            max_len = int(lengths.max()) if len(lengths) else 0
        if max_len < 0:
            raise ValueError(f"max_len must be >= 0, got {max_len}")
        kept = np.minimum(lengths, max_len)
        out = np.full((len(idx), max_len), pad_value, dtype=np.int64)
        if max_len == 0 or len(idx) == 0:
            return out
        col = np.arange(max_len)
        if pad_side == "right":
            valid = col[None, :] < kept[:, None]
            src = (ends - kept)[:, None] + col[None, :]
        else:
            valid = col[None, :] >= (max_len - kept)[:, None]
            src = ends[:, None] - max_len + col[None, :]
        out[valid] = self.items[src[valid]]
        return out


def _rows(rows: np.ndarray | slice | None, n: int) -> np.ndarray:
    if rows is None:
        return np.arange(n)
    if isinstance(rows, slice):
        return np.arange(n)[rows]
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1:
        raise ValueError(f"rows must be one-dimensional, got shape {rows.shape}")
    return rows


class LeaveOneOut:
    """User u's chronological sequence s of length n (n >= 3):

    - train: s[:n-2]; as evaluation rows, history s[:n-3] and target s[n-3];
    - valid: history s[:n-2], target s[n-2];
    - test:  history s[:n-1], target s[n-1].
    """

    name: ClassVar[str] = "leave_one_out"
    min_length: ClassVar[int] = 3
    _held_out: ClassVar[dict[str, int]] = {"train": 3, "valid": 2, "test": 1}

    @classmethod
    def from_config(cls, config: dict) -> LeaveOneOut:
        return cls()

    def describe(self, offsets: np.ndarray) -> dict:
        """The manifest's ``split`` entry for these sequences."""
        num_users = len(offsets) - 1
        return {
            "scheme": self.name,
            "train": "each user's sequence minus its last two items",
            "valid": "second-to-last item, history before it",
            "test": "last item, history before it",
            "num_train_interactions": int(offsets[-1]) - 2 * num_users,
            "num_valid": num_users,
            "num_test": num_users,
        }

    def train_bounds(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per user, the [start, end) range of its training part in the items array."""
        return offsets[:-1].copy(), offsets[1:] - 2

    def train_mask(self, offsets: np.ndarray) -> np.ndarray:
        """bool [num_interactions]: True where an interaction belongs to the training part."""
        starts, ends = self.train_bounds(offsets)
        lengths = np.diff(offsets)
        position = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)
        return position < np.repeat(ends - starts, lengths)

    def split(self, name: str, offsets: np.ndarray, items: np.ndarray) -> Split:
        if name not in self._held_out:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLIT_NAMES)}")
        back = self._held_out[name]
        users = np.arange(len(offsets) - 1, dtype=np.int64)
        ends = offsets[1:] - back
        return Split(name, users, items[ends], offsets[:-1].copy(), ends, items)


SCHEMES: dict[str, type] = {LeaveOneOut.name: LeaveOneOut}


def scheme_from_config(config: dict | None):
    """The split scheme a manifest's ``split`` entry names (leave-one-out when absent)."""
    config = config or {}
    name = config.get("scheme", LeaveOneOut.name)
    try:
        return SCHEMES[name].from_config(config)
    except KeyError:
        raise ValueError(f"unknown split scheme {name!r}; known: {', '.join(SCHEMES)}") from None
