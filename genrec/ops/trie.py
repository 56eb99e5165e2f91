"""``build_trie``: the decoding index of a set of semantic IDs, built on the CPU.

The compiled kernel (csrc/cpu/trie_build.cpp) radix-sorts packed IDs and emits every node in one
pass; the PyTorch reference (genrec/ops/reference/trie.py) builds the same arrays and is what a
pure-PyTorch install uses. ``genrec.decoding.TrieIndex.from_codes`` is the friendly entry point.
"""

from __future__ import annotations

import torch

from genrec.ops._backends import Backend, BackendUnavailableError, resolve_backend
from genrec.ops._checks import require_rank, require_tensor
from genrec.ops.reference import build_trie_reference


def build_trie(
    codes: torch.Tensor, level_sizes: list[int] | None = None, *, backend: str | Backend = "auto"
) -> list[torch.Tensor]:
    """``[leaf_items, row_ptr_0, child_tokens_0, ..., row_ptr_{L-1}, child_tokens_{L-1}]`` (int32, CPU).

    ``codes`` [N, L] integer semantic IDs, unique rows; ``level_sizes`` the vocabulary of each
    column (default: max + 1). Node ids at depth d number the distinct d-token prefixes in
    lexicographic order; the children of node s at depth d are the depth-(d+1) nodes
    ``row_ptr_d[s] .. row_ptr_d[s+1] - 1`` with ascending ``child_tokens_d``; leaf p (depth L) is
    item ``leaf_items[p]``. Raises ValueError for duplicate rows or codes outside ``level_sizes``.
    """
    require_tensor("codes", codes)
    require_rank("codes", codes, 2, "[num_items, levels]")
    if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"codes must hold integers, got {codes.dtype}")
    if codes.shape[1] < 1 or codes.shape[1] > 64:
        raise ValueError(f"codes must have 1 to 64 levels (columns), got {codes.shape[1]}")
    if codes.shape[0] >= 2**31 - 1:
        raise ValueError(f"at most 2^31 - 2 items, got {codes.shape[0]}")
    codes = codes.to("cpu", torch.long)
    if level_sizes is None:
        level_sizes = (codes.amax(0) + 1).tolist() if codes.shape[0] else [1] * codes.shape[1]
    level_sizes = [int(v) for v in level_sizes]
    if len(level_sizes) != codes.shape[1]:
        raise ValueError(f"{codes.shape[1]} code columns but level_sizes has {len(level_sizes)} entries")
    if min(level_sizes) < 1 or max(level_sizes) >= 2**31:
        raise ValueError(f"level_sizes must lie in [1, 2^31 - 1], got {level_sizes}")
    if Backend(backend) in (Backend.CUDA, Backend.TRITON):
        raise BackendUnavailableError(
            f"genrec.ops.build_trie runs on the CPU only (backend 'cpp' or 'reference'), not {Backend(backend).value!r}"
        )
    chosen = resolve_backend("build_trie", backend, torch.device("cpu"))
    if chosen is Backend.REFERENCE:
        return build_trie_reference(codes, level_sizes)
    try:
        return list(torch.ops.genrec.build_trie(codes, level_sizes))
    except RuntimeError as exc:  # the kernel's value checks: same exception type as the reference
        message = str(exc).split("\n")[0]
        if "build_trie:" in message:
            raise ValueError(message.split("build_trie: ", 1)[1]) from None
        raise
