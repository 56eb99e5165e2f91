"""constrained_beam_step in Triton.

One program per user. It walks the user's beams in tiles of BLOCK_B whole rows of logits
(BLOCK_V >= V), so each row's logsumexp stays in registers; every (beam, token) of the tile
becomes one int64 key, (score order key << 32) | (2^32 - 1 - (beam * V + token)), or INT64_MIN
when it is not a valid candidate. Larger key = better under the tie rule (score descending,
parent ascending, token ascending), and keys are unique, so a running top-K of keys is all the
state a program keeps: each tile's best keys replace the current worst while they beat it. The
final top-K comes out by repeated maximum, then each key is decoded back to (parent, token,
score) and the child node is looked up again (dense table, or binary search of the CSR run).

Trie children: dense levels read ``dense[state, token]``; CSR levels binary-search the token in
the beam's run of ``child_tokens`` (bit_length(V) + 1 steps). The per-request mask is a binary
search of the child id in the user's sorted node list. Shapes and loop counts are run-time
arguments and the blocks are padded to powers of two (vocab >= 64, beam >= 16), so few variants
compile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_INT64_MIN = -(2**63)
_TILE_ELEMENTS = 4096  # BLOCK_B * BLOCK_V per tile
MAX_VOCAB = 16384
MAX_BEAM = 1024


@triton.jit
def _score_key(score):
    """float32 -> int32 that orders like the float (-0.0 folded into +0.0)."""
    s = (score + 0.0).to(tl.int32, bitcast=True)
    return s ^ ((s >> 31) & 0x7FFFFFFF)


@triton.jit
def _key_score(key):
    s = key ^ ((key >> 31) & 0x7FFFFFFF)
    return s.to(tl.float32, bitcast=True)


@triton.jit
def _find_child(
    state,
    v,
    row_ptr_ptr,
    child_tokens_ptr,
    dense_ptr,
    n_children,
    V,
    ok,
    csr_iters,
    DENSE: tl.constexpr,
):
    """Child node of (state, token v), or -1."""
    if DENSE:
        c = tl.load(dense_ptr + state.to(tl.int64) * V + v, mask=ok, other=-1)
    else:
        lo = tl.load(row_ptr_ptr + state, mask=ok, other=0)
        end = tl.load(row_ptr_ptr + state + 1, mask=ok, other=0)
        lo = tl.minimum(tl.maximum(lo, 0), n_children)
        end = tl.minimum(tl.maximum(end, lo), n_children)
        hi = end
        for _ in range(csr_iters):
            active = lo < hi
            mid = (lo + hi) // 2
            t = tl.load(child_tokens_ptr + mid, mask=ok & active, other=0)
            right = t < v
            lo = tl.where(active & right, mid + 1, lo)
            hi = tl.where(active & (~right), mid, hi)
        t = tl.load(child_tokens_ptr + lo, mask=ok & (lo < end), other=-1)
        c = tl.where(ok & (lo < end) & (t == v), lo, -1)
    return c


@triton.jit(do_not_specialize=["B", "V", "K", "nodes", "n_children", "n_mask", "csr_iters", "mask_iters"])
def _beam_step_kernel(
    logits_ptr, beam_scores_ptr, states_ptr,
    row_ptr_ptr, child_tokens_ptr, dense_ptr,
    mask_offsets_ptr, mask_nodes_ptr, mask_allow_ptr,
    tokens_ptr, parents_ptr, scores_ptr, next_states_ptr,
    B, V, K, nodes, n_children, n_mask, csr_iters, mask_iters,
    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, K_PAD: tl.constexpr,
    DENSE: tl.constexpr, HAS_MASK: tl.constexpr,
):  # fmt: skip
    u = tl.program_id(0).to(tl.int64)
    NEG: tl.constexpr = -9223372036854775808
    slots = tl.arange(0, K_PAD)
    top = tl.full([K_PAD], NEG, tl.int64)
    top = tl.where(slots < K, top, 9223372036854775807)  # padding slots are never the worst
    if HAS_MASK:
        m_lo = tl.load(mask_offsets_ptr + u)
        m_hi = tl.load(mask_offsets_ptr + u + 1)
        m_lo = tl.minimum(tl.maximum(m_lo, 0), n_mask)
        m_hi = tl.minimum(tl.maximum(m_hi, m_lo), n_mask)
        allow = tl.load(mask_allow_ptr + u).to(tl.int1)
    rb = tl.arange(0, BLOCK_B)
    cv = tl.arange(0, BLOCK_V)
    for b0 in range(0, B, BLOCK_B):
        b = b0 + rb  # (BLOCK_B,)
        b_ok = b < B
        s = tl.load(states_ptr + u * B + b, mask=b_ok, other=-1)
        bs = tl.load(beam_scores_ptr + u * B + b, mask=b_ok, other=float("-inf"))
        alive = b_ok & (s >= 0) & (s < nodes) & (bs > float("-inf"))
        v_ok = cv < V
        ok = alive[:, None] & v_ok[None, :]  # (BLOCK_B, BLOCK_V)
        rows = (u * B + b).to(tl.int64)
        x = tl.load(logits_ptr + rows[:, None] * V + cv[None, :], mask=b_ok[:, None] & v_ok[None, :],
                    other=float("-inf")).to(tl.float32)  # fmt: skip
        m = tl.max(x, axis=1)
        m = tl.where(m > float("-inf"), m, 0.0)  # an all -inf row: lse = -inf, its scores NaN
        lse = m + tl.log(tl.sum(tl.exp(x - m[:, None]), axis=1))
        score = bs[:, None] + (x - lse[:, None])
        c = _find_child(s[:, None], cv[None, :], row_ptr_ptr, child_tokens_ptr, dense_ptr, n_children, V, ok,
                        csr_iters, DENSE)  # fmt: skip
        valid = ok & (c >= 0) & (score > float("-inf"))
        if HAS_MASK:
            lo = tl.zeros([BLOCK_B, BLOCK_V], tl.int64) + m_lo
            hi = tl.zeros([BLOCK_B, BLOCK_V], tl.int64) + m_hi
            for _ in range(mask_iters):
                active = lo < hi
                mid = (lo + hi) // 2
                node = tl.load(mask_nodes_ptr + mid, mask=valid & active, other=0)
                right = node < c
                lo = tl.where(active & right, mid + 1, lo)
                hi = tl.where(active & (~right), mid, hi)
            node = tl.load(mask_nodes_ptr + lo, mask=valid & (lo < m_hi), other=-1)
            listed = (lo < m_hi) & (node == c)
            valid = valid & (listed == allow)
        flat = b[:, None].to(tl.int64) * V + cv[None, :]
        key = (_score_key(score).to(tl.int64) << 32) | (4294967295 - flat)
        key = tl.where(valid, key, NEG)
        tile = tl.reshape(key, [BLOCK_B * BLOCK_V])
        best = tl.max(tile, axis=0)
        worst = tl.min(top, axis=0)
        while best > worst:
            at = tl.min(tl.where(top == worst, slots, K_PAD), axis=0)
            top = tl.where(slots == at, best, top)
            tile = tl.where(tile == best, NEG, tile)
            best = tl.max(tile, axis=0)
            worst = tl.min(top, axis=0)

    top = tl.where(slots < K, top, NEG)
    for r in range(0, K):
        best = tl.max(top, axis=0)
        top = tl.where(top == best, NEG, top)
        found = best != NEG
        flat = 4294967295 - (best & 4294967295)
        b = tl.where(found, flat // V, 0)
        v = tl.where(found, flat % V, 0)
        s = tl.load(states_ptr + u * B + b)
        c = _find_child(
            s, v, row_ptr_ptr, child_tokens_ptr, dense_ptr, n_children, V, found, csr_iters, DENSE
        )
        score = _key_score((best >> 32).to(tl.int32))
        o = u * K + r
        tl.store(tokens_ptr + o, tl.where(found, v, -1))
        tl.store(parents_ptr + o, tl.where(found, b, -1))
        tl.store(scores_ptr + o, tl.where(found, score, float("-inf")))
        tl.store(next_states_ptr + o, tl.where(found, c, -1).to(tl.int32))


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def constrained_beam_step_triton(
    logits: torch.Tensor,
    beam_scores: torch.Tensor,
    states: torch.Tensor,
    row_ptr: torch.Tensor,
    child_tokens: torch.Tensor,
    dense: torch.Tensor | None,
    mask_offsets: torch.Tensor | None,
    mask_nodes: torch.Tensor | None,
    mask_allow: torch.Tensor | None,
    beam_size: int,
    *,
    out=None,
    num_warps: int = 4,
):
    """Triton constrained_beam_step; inputs are checked by ``genrec.ops.constrained_beam_step``."""
    U, B, V = logits.shape
    K = beam_size
    if V > MAX_VOCAB or K > MAX_BEAM:
        raise ValueError(
            f"the Triton beam step handles vocab <= {MAX_VOCAB} and beam_size <= {MAX_BEAM} "
            f"(got {V} and {K}); use the cuda or cpp backend"
        )
    device = logits.device
    if out is None:
        out = (
            torch.empty(U, K, dtype=torch.long, device=device),
            torch.empty(U, K, dtype=torch.long, device=device),
            torch.empty(U, K, dtype=torch.float32, device=device),
            torch.empty(U, K, dtype=torch.int32, device=device),
        )
    if U == 0:
        return tuple(out)
    logits = logits.contiguous()
    has_mask = mask_offsets is not None
    # Few specialisations (each is a JIT compile): vocab padded to a power of two of at least 64 and
    # beam to one of at least 16, a fixed tile of whole rows, loop counts passed at run time.
    block_v = max(64, _next_pow2(V))
    block_b = max(1, _TILE_ELEMENTS // block_v)
    dummy = row_ptr  # never read: a valid pointer for the absent optional arrays
    _beam_step_kernel[(U,)](
        logits,
        beam_scores.contiguous(),
        states.contiguous(),
        row_ptr.contiguous(),
        child_tokens if child_tokens.numel() else dummy,
        dense.contiguous() if dense is not None else dummy,
        mask_offsets.contiguous() if has_mask else dummy,
        mask_nodes if has_mask and mask_nodes.numel() else dummy,
        mask_allow.contiguous() if has_mask else dummy,
        *out,
        B,
        V,
        K,
        row_ptr.numel() - 1,
        child_tokens.numel(),
        mask_nodes.numel() if has_mask else 0,
        V.bit_length() + 1,
        (mask_nodes.numel() if has_mask else 0).bit_length() + 1,
        BLOCK_B=block_b,
        BLOCK_V=block_v,
        K_PAD=max(16, _next_pow2(K)),
        DENSE=dense is not None,
        HAS_MASK=has_mask,
        num_warps=num_warps,
    )
    return tuple(out)
