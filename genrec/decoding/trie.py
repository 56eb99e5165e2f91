"""The decoding index: a prefix tree of every item's semantic ID, laid out for the beam-step kernels.

Layout. Node ids at depth d (d = 0 is the root, d = L the leaves) number the distinct d-token
prefixes in lexicographic order, so

- the children of node s at depth d are one contiguous run of depth-(d+1) ids,
  ``row_ptr[d][s] .. row_ptr[d][s+1] - 1`` (CSR), their last tokens ``child_tokens[d]``
  ascending within the run;
- every node covers a contiguous run of leaves, and leaf p is item ``leaf_items[p]``;
- where a level is small and full enough (``nodes * V <= dense_max_entries`` and at least
  ``dense_min_fill`` of its (node, token) pairs are children, typically the first levels),
  a dense table [nodes, V] of child ids (-1: none) is kept beside the CSR arrays: the kernels
  then read one entry per (beam, token) instead of walking a run.

All arrays are int32. The index is built once on the CPU (C++, ``genrec.ops.build_trie``),
moved to the decoding device once (``index.to(device)``), and saved beside the tokenizer's
artifacts as ``TOK/trie.safetensors`` (the CSR arrays, with JSON metadata in the header).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

import genrec
from genrec.files import atomic_write_bytes
from genrec.ops import build_trie

FORMAT_VERSION = 1
TRIE_FILE = "trie.safetensors"
DENSE_MAX_ENTRIES = 1 << 22  # 16 MiB of int32 per dense level at most
DENSE_MIN_FILL = 0.25


@dataclass(frozen=True)
class TrieLevel:
    """What one decoding step reads: the level's CSR arrays and, when kept, its dense table."""

    row_ptr: torch.Tensor  # int32 [nodes + 1]
    child_tokens: torch.Tensor  # int32 [children]
    dense: torch.Tensor | None  # int32 [nodes, vocab] or None


class TrieIndex:
    """Prefix tree over the semantic IDs of a catalogue; see the module docstring for the layout.

    Build with :meth:`from_codes` (or :meth:`for_tokenizer`), move with :meth:`to`, persist with
    :meth:`save` / :meth:`load`.
    """

    def __init__(
        self,
        *,
        level_sizes: list[int],
        leaf_items: torch.Tensor,
        row_ptr: list[torch.Tensor],
        child_tokens: list[torch.Tensor],
        dense: list[torch.Tensor | None],
        codes_sha256: str | None = None,
    ) -> None:
        levels = len(level_sizes)
        if not (len(row_ptr) == len(child_tokens) == len(dense) == levels) or levels < 1:
            raise ValueError("a trie needs one row_ptr, child_tokens and dense entry per level")
        self.level_sizes: tuple[int, ...] = tuple(int(v) for v in level_sizes)
        self.leaf_items = leaf_items
        self.row_ptr = list(row_ptr)
        self.child_tokens = list(child_tokens)
        self.dense = list(dense)
        self.codes_sha256 = codes_sha256
        self._leaf_start: dict[int, torch.Tensor] = {}
        self._item_leaves: torch.Tensor | None = None

    # ---- building ----
    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor | np.ndarray,
        device: torch.device | str | None = None,
        *,
        level_sizes: list[int] | None = None,
        dense_max_entries: int = DENSE_MAX_ENTRIES,
        dense_min_fill: float = DENSE_MIN_FILL,
        backend: str = "auto",
    ) -> TrieIndex:
        """The index of ``codes`` [num_items, L] (unique rows; row i is item i), on ``device`` (default CPU).

        ``level_sizes``: the vocabulary of each column, i.e. the width of the model's logits at
        each step (default: max code + 1 per column). ``dense_max_entries=0`` keeps no dense
        table. Built on the CPU by ``genrec.ops.build_trie`` (``backend`` "cpp" or "reference").
        """
        if isinstance(codes, np.ndarray):
            codes = torch.from_numpy(np.ascontiguousarray(codes))
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"codes must be a torch.Tensor or numpy array, got {type(codes).__name__}")
        if dense_max_entries < 0 or not 0.0 <= dense_min_fill <= 1.0:
            raise ValueError("dense_max_entries must be >= 0 and dense_min_fill in [0, 1]")
        codes = codes.to("cpu", torch.long)
        arrays = build_trie(codes, level_sizes, backend=backend)
        if level_sizes is None:
            level_sizes = (codes.amax(0) + 1).tolist() if codes.shape[0] else [1] * codes.shape[1]
        levels = len(level_sizes)
        row_ptr = arrays[1::2]
        child_tokens = arrays[2::2]
        dense = [
            _dense_table(row_ptr[t], child_tokens[t], level_sizes[t], dense_max_entries, dense_min_fill)
            for t in range(levels)
        ]
        index = cls(
            level_sizes=level_sizes,
            leaf_items=arrays[0],
            row_ptr=row_ptr,
            child_tokens=child_tokens,
            dense=dense,
            codes_sha256=codes_digest(codes, level_sizes),
        )
        return index.to(device) if device is not None else index

    @classmethod
    def for_tokenizer(
        cls, tok_dir: str | Path, device: torch.device | str | None = None, *, rebuild: bool = False
    ) -> TrieIndex:
        """The index of a tokenizer's ``semantic_ids.npy``: loaded from ``TOK/trie.safetensors`` when
        it matches those IDs, else built from them and saved there (atomically)."""
        tok_dir = Path(tok_dir)
        ids_path = tok_dir / "semantic_ids.npy"
        if not ids_path.exists():
            raise FileNotFoundError(f"{ids_path} not found: run `genrec tokenize` first")
        codes = torch.from_numpy(np.load(ids_path, allow_pickle=False).astype(np.int64, copy=False))
        level_sizes = None
        meta_path = tok_dir / "tokenizer.json"
        if meta_path.exists():
            level_sizes = json.loads(meta_path.read_text()).get("level_sizes")
        if level_sizes is None:
            level_sizes = (codes.amax(0) + 1).tolist()
        trie_path = tok_dir / TRIE_FILE
        if trie_path.exists() and not rebuild:
            index = cls.load(trie_path)
            if index.codes_sha256 == codes_digest(codes, level_sizes):
                return index.to(device) if device is not None else index
        index = cls.from_codes(codes, level_sizes=level_sizes)
        index.save(trie_path)
        return index.to(device) if device is not None else index

    # ---- shape of the tree ----
    @property
    def levels(self) -> int:
        return len(self.level_sizes)

    @property
    def num_items(self) -> int:
        return self.leaf_items.numel()

    @property
    def device(self) -> torch.device:
        return self.leaf_items.device

    @property
    def nodes_per_level(self) -> tuple[int, ...]:
        """Nodes at depth 0 (the root) .. L (the leaves)."""
        return (*(r.numel() - 1 for r in self.row_ptr), self.num_items)

    @property
    def dense_levels(self) -> tuple[bool, ...]:
        return tuple(d is not None for d in self.dense)

    def level(self, t: int) -> TrieLevel:
        """The arrays the decoding step at level t (choosing token t, from depth t to t + 1) reads."""
        return TrieLevel(self.row_ptr[t], self.child_tokens[t], self.dense[t])

    def nbytes(self) -> int:
        tensors = [
            self.leaf_items,
            *self.row_ptr,
            *self.child_tokens,
            *(d for d in self.dense if d is not None),
        ]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> TrieIndex:
        """The same index on ``device`` (one copy of every array; a no-op when already there)."""
        device = torch.device(device)
        if device == self.device:
            return self

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return TrieIndex(
            level_sizes=list(self.level_sizes),
            leaf_items=move(self.leaf_items),
            row_ptr=[move(t) for t in self.row_ptr],
            child_tokens=[move(t) for t in self.child_tokens],
            dense=[move(t) for t in self.dense],
            codes_sha256=self.codes_sha256,
        )

    def __repr__(self) -> str:
        return (
            f"TrieIndex(items={self.num_items}, level_sizes={list(self.level_sizes)}, "
            f"nodes={list(self.nodes_per_level)}, dense={list(self.dense_levels)}, device={self.device}, "
            f"{self.nbytes() / 2**20:.1f} MiB)"
        )

    # ---- leaves, items and ancestors ----
    def items_of_leaves(self, leaves: torch.Tensor) -> torch.Tensor:
        """Item index (int64) of each leaf id; -1 where the leaf id is negative."""
        safe = leaves.long().clamp(0, max(self.num_items - 1, 0))
        items = self.leaf_items[safe].long() if self.num_items else torch.zeros_like(safe)
        return torch.where(leaves >= 0, items, -1)

    def leaves_of_items(self, items: torch.Tensor) -> torch.Tensor:
        """Leaf id (int64) of each item index."""
        if self._item_leaves is None:
            inverse = torch.empty_like(self.leaf_items)
            inverse[self.leaf_items.long()] = torch.arange(
                self.num_items, dtype=torch.int32, device=self.device
            )
            self._item_leaves = inverse
        return self._item_leaves[items.long()].long()

    def leaf_start(self, depth: int) -> torch.Tensor:
        """First leaf of each node at ``depth`` plus a final num_items: int64 [nodes + 1]."""
        if not 0 <= depth <= self.levels:
            raise ValueError(f"depth must be in [0, {self.levels}], got {depth}")
        if depth not in self._leaf_start:
            if depth == self.levels:
                start = torch.arange(self.num_items + 1, device=self.device)
            else:
                # A node's first leaf is its first child's first leaf.
                start = self.leaf_start(depth + 1)[self.row_ptr[depth].long()]
            self._leaf_start[depth] = start
        return self._leaf_start[depth]

    def ancestors(self, leaves: torch.Tensor, depth: int) -> torch.Tensor:
        """The node at ``depth`` above each leaf id (int64)."""
        start = self.leaf_start(depth)
        return torch.searchsorted(start[:-1], leaves.long(), right=True) - 1

    def codes(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The semantic IDs [n, L] (int64) of ``items`` (default: every item, in item order)."""
        if items is None:
            items = torch.arange(self.num_items, device=self.device)
        leaves = self.leaves_of_items(items.to(self.device))
        cols = [self.child_tokens[d - 1][self.ancestors(leaves, d)].long() for d in range(1, self.levels + 1)]
        return torch.stack(cols, dim=1) if cols else leaves.new_zeros(len(leaves), 0)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Item index of each semantic ID in ``codes`` [n, L], or -1 where it is no item's ID."""
        codes = codes.to(self.device, torch.long)
        if codes.dim() != 2 or codes.shape[1] != self.levels:
            raise ValueError(f"codes must be [n, {self.levels}], got {tuple(codes.shape)}")
        node = torch.zeros(codes.shape[0], dtype=torch.long, device=self.device)
        ok = torch.ones(codes.shape[0], dtype=torch.bool, device=self.device)
        for t in range(self.levels):
            v = codes[:, t]
            ok &= (v >= 0) & (v < self.level_sizes[t])
            # Children of all nodes, keyed parent * V + token, are sorted: one searchsorted finds any edge.
            keys = self._edge_keys(t)
            query = node * self.level_sizes[t] + v.clamp(0, self.level_sizes[t] - 1)
            pos = torch.searchsorted(keys, query).clamp(max=max(keys.numel() - 1, 0))
            ok &= (keys[pos] == query) if keys.numel() else torch.zeros_like(ok)
            node = pos
        return torch.where(ok, self.items_of_leaves(node), -1)

    def _edge_keys(self, t: int) -> torch.Tensor:
        counts = self.row_ptr[t].diff().long()
        parent = torch.repeat_interleave(torch.arange(counts.numel(), device=self.device), counts)
        return parent * self.level_sizes[t] + self.child_tokens[t].long()

    # ---- persistence ----
    def metadata(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "levels": self.levels,
            "level_sizes": list(self.level_sizes),
            "num_items": self.num_items,
            "nodes_per_level": list(self.nodes_per_level),
            "dense_levels": list(self.dense_levels),
            "codes_sha256": self.codes_sha256,
            "genrec_version": genrec.__version__,
        }

    def save(self, path: str | Path) -> Path:
        """Write the CSR arrays and metadata to ``path`` (safetensors), atomically. Dense tables are
        rebuilt on load (they are derived), so the file holds only what cannot be recomputed."""
        path = Path(path)
        tensors = {"leaf_items": self.leaf_items.cpu().contiguous()}
        for t in range(self.levels):
            tensors[f"row_ptr.{t}"] = self.row_ptr[t].cpu().contiguous()
            tensors[f"child_tokens.{t}"] = self.child_tokens[t].cpu().contiguous()
        data = save(tensors, metadata={"genrec_trie": json.dumps(self.metadata())})
        atomic_write_bytes(path, data)
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> TrieIndex:
        """Read an index written by :meth:`save`, checking its format and consistency."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found")
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("genrec_trie")
            if raw is None:
                raise ValueError(f"{path} is not a genrec trie (no genrec_trie metadata)")
            meta = json.loads(raw)
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"{path} has trie format {meta.get('format_version')}, this genrec reads {FORMAT_VERSION}"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        levels = int(meta["levels"])
        level_sizes = [int(v) for v in meta["level_sizes"]]
        try:
            row_ptr = [tensors[f"row_ptr.{t}"] for t in range(levels)]
            child_tokens = [tensors[f"child_tokens.{t}"] for t in range(levels)]
            leaf_items = tensors["leaf_items"]
        except KeyError as exc:
            raise ValueError(f"{path} lacks the array {exc.args[0]!r}") from None
        nodes = [1] + [c.numel() for c in child_tokens]
        if [r.numel() - 1 for r in row_ptr] != nodes[:-1] or nodes[-1] != leaf_items.numel():
            raise ValueError(f"{path}: array sizes do not form a trie (nodes per level {nodes})")
        dense_levels = meta.get("dense_levels", [False] * levels)
        dense = [
            _dense_table(row_ptr[t], child_tokens[t], level_sizes[t], 1 << 62, 0.0)
            if dense_levels[t]
            else None
            for t in range(levels)
        ]
        index = cls(
            level_sizes=level_sizes,
            leaf_items=leaf_items,
            row_ptr=row_ptr,
            child_tokens=child_tokens,
            dense=dense,
            codes_sha256=meta.get("codes_sha256"),
        )
        return index.to(device) if device is not None else index


def _dense_table(
    row_ptr: torch.Tensor, child_tokens: torch.Tensor, vocab: int, max_entries: int, min_fill: float
) -> torch.Tensor | None:
    nodes = row_ptr.numel() - 1
    entries = nodes * vocab
    if entries == 0 or entries > max_entries or child_tokens.numel() < min_fill * entries:
        return None
    counts = row_ptr.diff().long()
    parent = torch.repeat_interleave(torch.arange(nodes, device=row_ptr.device), counts)
    table = torch.full((nodes, vocab), -1, dtype=torch.int32, device=row_ptr.device)
    table[parent, child_tokens.long()] = torch.arange(
        child_tokens.numel(), dtype=torch.int32, device=row_ptr.device
    )
    return table


def codes_digest(codes: torch.Tensor, level_sizes: list[int]) -> str:
    """SHA-256 of the semantic IDs (int64, row-major) and level sizes: names the catalogue a trie was built from."""
    h = hashlib.sha256()
    h.update(json.dumps([int(v) for v in level_sizes]).encode())
    h.update(np.ascontiguousarray(codes.to("cpu", torch.long).numpy()).tobytes())
    return h.hexdigest()
