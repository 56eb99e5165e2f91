"""Per-request masks: exclude given items (a user's history, say) or restrict to an allow-list,
without touching the trie.

A request's item lists become, for every depth d = 1..L, a sorted list of depth-d node ids per
user that the beam-step kernels check each candidate against (``genrec.ops.StepMask``):

- a user with an allow-list A (and exclusions E) may enter only the nodes above some item of
  A minus E (``allow[u]`` True), so no beam is spent on a prefix with nothing allowed below;
- a user with exclusions E only may not enter a node whose every item is in E (``allow[u]``
  False): an excluded leaf, and any prefix that the exclusions empty completely.

So a search under masks is exactly a search over the reduced catalogue: with a beam at least
that large, it returns the exhaustive ranking of the allowed items.

Item lists come as a LongTensor [U, M] padded with negative values, or as a sequence of U
one-dimensional arrays/lists/tensors (``None`` for "no list" for that user).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genrec.decoding.trie import TrieIndex
from genrec.ops import StepMask

ItemLists = torch.Tensor | np.ndarray | Sequence[Sequence[int] | np.ndarray | torch.Tensor | None]


@dataclass(frozen=True)
class RequestMasks:
    """The node lists of every depth: ``offsets`` [L, U + 1], ``nodes[t]`` int32, ``allow`` [U]."""

    offsets: torch.Tensor  # int64 [L, U + 1]; row t belongs to the step at level t (depth t + 1)
    nodes: list[torch.Tensor]  # per level, int32, sorted within each user
    allow: torch.Tensor  # bool [U]

    @property
    def num_users(self) -> int:
        return self.allow.numel()

    def step(self, t: int) -> StepMask:
        """The mask of the decoding step at level t (its candidates are depth-(t+1) nodes)."""
        return StepMask(self.offsets[t], self.nodes[t], self.allow)

    def max_nodes(self) -> int:
        return max((n.numel() for n in self.nodes), default=0)

    @classmethod
    def build(
        cls,
        index: TrieIndex,
        num_users: int,
        *,
        exclude: ItemLists | None = None,
        allow: ItemLists | None = None,
    ) -> RequestMasks | None:
        """The masks of a request batch, on the index's device; None when neither list is given."""
        if exclude is None and allow is None:
            return None
        device = index.device
        n = index.num_items
        ex_users, ex_items, _ = _pairs(exclude, num_users, n, "exclude", device)
        al_users, al_items, has_allow = _pairs(allow, num_users, n, "allow", device)
        ex_keys = _unique_keys(ex_users, index.leaves_of_items(ex_items), n)
        al_keys = _unique_keys(al_users, index.leaves_of_items(al_items), n)
        # Allow-list users search A minus E; the others are denied what E covers entirely.
        al_keys = al_keys[~torch.isin(al_keys, ex_keys)]
        ex_keys = ex_keys[~has_allow[ex_keys // max(n, 1)]]
        al_u, al_leaf = al_keys // max(n, 1), al_keys % max(n, 1)
        ex_u, ex_leaf = ex_keys // max(n, 1), ex_keys % max(n, 1)

        offsets, nodes = [], []
        for depth in range(1, index.levels + 1):
            # Allowed: every node above an allowed leaf. Keys stay sorted: leaves are, per user.
            a_node = index.ancestors(al_leaf, depth)
            a_keys = torch.unique_consecutive(al_u * (1 << 31) + a_node)
            # Denied: nodes all of whose leaves are excluded.
            e_node = index.ancestors(ex_leaf, depth)
            e_keys, counts = torch.unique_consecutive(ex_u * (1 << 31) + e_node, return_counts=True)
            start = index.leaf_start(depth)
            e_nodes = e_keys % (1 << 31)
            full = counts == (start[e_nodes + 1] - start[e_nodes])
            keys, _ = torch.sort(torch.cat([a_keys, e_keys[full]]))
            users = keys // (1 << 31)
            per_user = torch.bincount(users, minlength=num_users)
            off = torch.zeros(num_users + 1, dtype=torch.long, device=device)
            off[1:] = per_user.cumsum(0)
            offsets.append(off)
            nodes.append((keys % (1 << 31)).int())
        return cls(torch.stack(offsets), nodes, has_allow)


def _pairs(lists: ItemLists | None, num_users: int, num_items: int, name: str, device: torch.device):
    """(users, items) int64 of every listed item, and which users gave a list at all (bool [U])."""
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if lists is None:
        return empty, empty, torch.zeros(num_users, dtype=torch.bool, device=device)
    if isinstance(lists, np.ndarray) and lists.dtype != object:
        lists = torch.from_numpy(lists)
    if isinstance(lists, torch.Tensor):
        if lists.dim() != 2 or lists.shape[0] != num_users:
            raise ValueError(
                f"{name} must be [num_users = {num_users}, max_items] (padded with -1), got {tuple(lists.shape)}"
            )
        if lists.dtype.is_floating_point or lists.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer item indices, got {lists.dtype}")
        lists = lists.to(device, torch.long)
        keep = lists >= 0
        users = torch.arange(num_users, device=device)[:, None].expand_as(lists)[keep]
        items = lists[keep]
        given = torch.ones(num_users, dtype=torch.bool, device=device)
    else:
        if len(lists) != num_users:
            raise ValueError(f"{name} must hold one list per user ({num_users}), got {len(lists)}")
        given = torch.tensor([entry is not None for entry in lists], dtype=torch.bool)
        parts = [
            torch.as_tensor(np.asarray(entry if entry is not None else [], dtype=np.int64)).reshape(-1)
            for entry in lists
        ]
        users = torch.repeat_interleave(
            torch.arange(num_users), torch.tensor([len(p) for p in parts], dtype=torch.long)
        )
        items = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        if bool((items < 0).any()):
            raise ValueError(f"{name} holds a negative item index ({int(items.min())})")
        users, items, given = users.to(device), items.to(device), given.to(device)
    if items.numel() and int(items.max()) >= num_items:
        raise ValueError(f"{name} holds item {int(items.max())}, but the catalogue has {num_items} items")
    return users, items, given


def _unique_keys(users: torch.Tensor, leaves: torch.Tensor, num_items: int) -> torch.Tensor:
    """Sorted unique keys user * num_items + leaf."""
    return torch.unique(users * max(num_items, 1) + leaves)
