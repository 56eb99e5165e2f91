"""The decoding trie of a set of semantic IDs, built in plain PyTorch: the ground truth for build_trie."""

from __future__ import annotations

import torch


def build_trie_reference(codes: torch.Tensor, level_sizes: list[int]) -> list[torch.Tensor]:
    """``[leaf_items, row_ptr_0, child_tokens_0, ..., row_ptr_{L-1}, child_tokens_{L-1}]`` (int32).

    Rows are sorted lexicographically (stable, so the smaller item comes first among equal
    rows); node ids at depth d number the distinct d-token prefixes in that order. The children
    of node s at depth d are the depth-(d+1) nodes ``row_ptr_d[s] .. row_ptr_d[s+1] - 1``, and
    ``child_tokens_d[c]`` is the last token of child c. Leaves are the sorted items:
    ``leaf_items[p]`` is the row of ``codes`` at leaf p.
    """
    codes = codes.to("cpu", torch.long)
    n, levels = codes.shape
    for t, size in enumerate(level_sizes):
        bad = (codes[:, t] < 0) | (codes[:, t] >= size)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"item {i} has code {int(codes[i, t])} at level {t}, outside [0, {size})")
    order = torch.arange(n)
    for t in reversed(range(levels)):  # LSD: stable sorts from the last column to the first
        order = order[torch.sort(codes[order, t], stable=True).indices]
    rows = codes[order]
    differs = rows[1:] != rows[:-1]  # (n-1, L)
    same = ~differs.any(1)
    if bool(same.any()):
        p = int(same.nonzero()[0, 0]) + 1
        raise ValueError(
            f"codes must be unique, but items {int(order[p - 1])} and {int(order[p])} share the ID "
            f"{rows[p].tolist()}"
        )
    first_diff = torch.cat([torch.zeros(min(n, 1), dtype=torch.long), differs.long().argmax(1)])  # (n,)
    out = [order.int()]
    # opens[d][p]: row p opens a node at depth d (1..L); node ids at depth d = running count - 1.
    opens = [None] + [(first_diff < d) | (torch.arange(n) == 0) for d in range(1, levels + 1)]
    node_of_row = [torch.zeros(n, dtype=torch.long)] + [o.long().cumsum(0) - 1 for o in opens[1:]]
    for d in range(levels):
        nodes_d = 1 if d == 0 else int(opens[d].sum())
        children = opens[d + 1]
        first_rows = torch.zeros(min(n, 1), dtype=torch.long) if d == 0 else opens[d].nonzero()[:, 0]
        row_ptr = torch.empty(nodes_d + 1, dtype=torch.long)
        row_ptr[: len(first_rows)] = node_of_row[d + 1][first_rows]
        row_ptr[len(first_rows) :] = int(children.sum())
        out += [row_ptr.int(), rows[children, d].int()]
    return out
