"""constrained_beam_step in Triton.

One program per user. It walks the user's beams in tiles of BLOCK_B rows and each row in chunks
of BLOCK_V tokens: a row that fits one chunk keeps its logits in registers for its logsumexp, a
longer one is read twice (an online logsumexp over the chunks, then the candidates). Every (beam,
token) of a chunk becomes one int64 key, (score order key << 32) | (2^32 - 1 - (beam * V + token)),
or INT64_MIN when it is not a valid candidate. Larger key = better under the tie rule (score
descending, parent ascending, token ascending), and keys are unique, so a running top-K of keys is
all the state a program keeps: each chunk's best keys replace the current worst while they beat
it. The final top-K comes out by repeated maximum, then each key is decoded back to (parent,
token, score) and the child node is looked up again (dense table, or binary search of the CSR run).

Trie children: dense levels read ``dense[state, token]``; CSR levels binary-search the token in
the beam's run of ``child_tokens`` (bit_length(V) + 1 steps). The per-request mask is a binary
search of the child id in the user's node list when that list is sorted (checked once per user),
else a linear scan, so unsorted lists give the reference's answer too. Shapes and loop counts are
run-time arguments and the blocks are powers of two from a short list (``launch_config``), each
checked free of register spills on sm_90 (tests/ops/test_triton_spills.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._device import on_device

MAX_BEAM = 1024  # beam_size (the running top-K lives in registers)
# Elements of one (beams x tokens) chunk and the widest chunk: larger tiles spill registers on sm_90.
TILE_ELEMENTS = 2048
MAX_BLOCK_V = 2048
MIN_BLOCK_V = 64
MIN_K_PAD = 16
NUM_WARPS = 4
# An explicit register ceiling: without one, ptxas sizes registers for occupancy from the block size
# Triton declares (.reqntid) and spills a few values to local memory; with it, nothing spills.
MAX_REGISTERS = 255
_SORT_SCAN = 256  # mask entries compared per step of the sortedness check


class LaunchConfig(NamedTuple):
    """The compile-time block sizes of one launch (each distinct value is one JIT variant)."""

    block_b: int
    block_v: int
    k_pad: int
    one_chunk: bool  # a whole row fits one chunk (V <= block_v)
    num_warps: int
    maxnreg: int


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def launch_config(V: int, K: int, *, max_block_v: int = MAX_BLOCK_V) -> LaunchConfig:
    """Block sizes for vocabulary V and beam size K: powers of two, vocab blocks of at least 64 and
    at most ``max_block_v`` (a smaller one only in tests, to run the chunked path on small rows)."""
    block_v = min(max(MIN_BLOCK_V, _next_pow2(V)), max_block_v)
    block_b = max(1, TILE_ELEMENTS // block_v)
    return LaunchConfig(block_b, block_v, max(MIN_K_PAD, _next_pow2(K)), block_v >= V, NUM_WARPS, MAX_REGISTERS)


def dispatch_variants() -> list[LaunchConfig]:
    """Every LaunchConfig that ``launch_config`` returns for 1 <= K <= MAX_BEAM and any V."""
    seen = set()
    for k_exp in range(MAX_BEAM.bit_length()):
        K = 1 << k_exp
        v = 1
        while v <= 2 * MAX_BLOCK_V:
            seen.add(launch_config(v, K))
            v *= 2
    return sorted(seen)


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


@triton.jit
def _mask_sorted(mask_nodes_ptr, m_lo, m_hi, SCAN: tl.constexpr):
    """Whether mask_nodes[m_lo:m_hi] never decreases."""
    drops = 0
    offs = tl.arange(0, SCAN)
    for i0 in range(m_lo, m_hi - 1, SCAN):
        i = i0 + offs
        ok = i < m_hi - 1
        a = tl.load(mask_nodes_ptr + i, mask=ok, other=0)
        b = tl.load(mask_nodes_ptr + i + 1, mask=ok, other=0)
        drops += tl.sum((ok & (a > b)).to(tl.int32), axis=0)
    return drops == 0


@triton.jit
def _mask_listed(c, valid, mask_nodes_ptr, m_lo, m_hi, sorted_list, mask_iters):
    """Whether each child c is in mask_nodes[m_lo:m_hi]: a binary search, or a scan when unsorted."""
    if sorted_list:
        lo = tl.zeros(c.shape, tl.int32) + m_lo
        hi = tl.zeros(c.shape, tl.int32) + m_hi
        for _ in range(mask_iters):
            active = lo < hi
            mid = (lo + hi) // 2
            node = tl.load(mask_nodes_ptr + mid, mask=valid & active, other=0)
            right = node < c
            lo = tl.where(active & right, mid + 1, lo)
            hi = tl.where(active & (~right), mid, hi)
        node = tl.load(mask_nodes_ptr + lo, mask=valid & (lo < m_hi), other=-1)
        listed = (lo < m_hi) & (node == c)
    else:
        listed = tl.zeros(c.shape, tl.int1)
        for j in range(m_lo, m_hi):
            listed = listed | (tl.load(mask_nodes_ptr + j) == c)
    return listed


@triton.jit
def _merge_chunk(
    top, slots, c, x, lse, bs, b, v, ok,
    mask_nodes_ptr, V, mask_iters, m_lo, m_hi, allow, sorted_list,
    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, K_PAD: tl.constexpr, HAS_MASK: tl.constexpr,
):  # fmt: skip
    """The running top-K keys after offering it one (beams x tokens) chunk whose children are c."""
    NEG: tl.constexpr = -9223372036854775808
    score = bs[:, None] + (x - lse[:, None])
    valid = ok & (c >= 0) & (score > float("-inf"))
    if HAS_MASK:
        listed = _mask_listed(c, valid, mask_nodes_ptr, m_lo, m_hi, sorted_list, mask_iters)
        valid = valid & (listed == allow)
    flat = b[:, None].to(tl.int64) * V + v[None, :]
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
    return top


@triton.jit(do_not_specialize=["B", "V", "K", "nodes", "n_children", "n_mask", "csr_iters", "mask_iters"])
def _beam_step_kernel(
    logits_ptr, beam_scores_ptr, states_ptr,
    row_ptr_ptr, child_tokens_ptr, dense_ptr,
    mask_offsets_ptr, mask_nodes_ptr, mask_allow_ptr,
    tokens_ptr, parents_ptr, scores_ptr, next_states_ptr,
    B, V, K, nodes, n_children, n_mask, csr_iters, mask_iters,
    BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, K_PAD: tl.constexpr, ONE_CHUNK: tl.constexpr,
    DENSE: tl.constexpr, HAS_MASK: tl.constexpr,
):  # fmt: skip
    u = tl.program_id(0).to(tl.int64)
    NEG: tl.constexpr = -9223372036854775808
    slots = tl.arange(0, K_PAD)
    top = tl.full([K_PAD], NEG, tl.int64)
    top = tl.where(slots < K, top, 9223372036854775807)  # padding slots are never the worst
    m_lo = 0
    m_hi = 0
    allow = False
    sorted_list = True
    if HAS_MASK:
        m_lo = tl.load(mask_offsets_ptr + u)
        m_hi = tl.load(mask_offsets_ptr + u + 1)
        m_lo = tl.minimum(tl.maximum(m_lo, 0), n_mask).to(tl.int32)  # n_mask < 2^31 (the wrapper checks)
        m_hi = tl.minimum(tl.maximum(m_hi, m_lo), n_mask).to(tl.int32)
        allow = tl.load(mask_allow_ptr + u).to(tl.int1)
        sorted_list = _mask_sorted(mask_nodes_ptr, m_lo, m_hi, 256)
    rb = tl.arange(0, BLOCK_B)
    cv = tl.arange(0, BLOCK_V)
    for b0 in range(0, B, BLOCK_B):
        b = b0 + rb  # (BLOCK_B,)
        b_ok = b < B
        s = tl.load(states_ptr + u * B + b, mask=b_ok, other=-1)
        bs = tl.load(beam_scores_ptr + u * B + b, mask=b_ok, other=float("-inf"))
        alive = b_ok & (s >= 0) & (s < nodes) & (bs > float("-inf"))
        rows = (u * B + b).to(tl.int64)
        # Children are looked up before the logits are loaded: fewer values live across the searches.
        if ONE_CHUNK:
            v_ok = cv < V
            ok = alive[:, None] & v_ok[None, :]
            c = _find_child(s[:, None], cv[None, :], row_ptr_ptr, child_tokens_ptr, dense_ptr, n_children, V,
                            ok, csr_iters, DENSE)  # fmt: skip
            x = tl.load(logits_ptr + rows[:, None] * V + cv[None, :], mask=b_ok[:, None] & v_ok[None, :],
                        other=float("-inf")).to(tl.float32)  # fmt: skip
            m = tl.max(x, axis=1)
            m = tl.where(m > float("-inf"), m, 0.0)  # an all -inf row: lse = -inf, its scores NaN
            lse = m + tl.log(tl.sum(tl.exp(x - m[:, None]), axis=1))
            top = _merge_chunk(
                top, slots, c, x, lse, bs, b, cv, ok,
                mask_nodes_ptr, V, mask_iters, m_lo, m_hi, allow, sorted_list,
                BLOCK_B, BLOCK_V, K_PAD, HAS_MASK,
            )  # fmt: skip
        else:
            # Online logsumexp over the chunks: running maximum m and the sum rescaled to it.
            m = tl.full([BLOCK_B], float("-inf"), tl.float32)
            total = tl.zeros([BLOCK_B], tl.float32)
            for v0 in range(0, V, BLOCK_V):
                v_ok = v0 + cv < V
                x = tl.load(logits_ptr + rows[:, None] * V + (v0 + cv)[None, :],
                            mask=b_ok[:, None] & v_ok[None, :], other=float("-inf")).to(tl.float32)  # fmt: skip
                m_new = tl.maximum(m, tl.max(x, axis=1))
                m_safe = tl.where(m_new > float("-inf"), m_new, 0.0)
                total = total * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), axis=1)
                m = m_new
            lse = tl.where(m > float("-inf"), m, 0.0) + tl.log(total)
            for v0 in range(0, V, BLOCK_V):
                v = v0 + cv
                v_ok = v < V
                ok = alive[:, None] & v_ok[None, :]
                c = _find_child(s[:, None], v[None, :], row_ptr_ptr, child_tokens_ptr, dense_ptr, n_children, V,
                                ok, csr_iters, DENSE)  # fmt: skip
                x = tl.load(logits_ptr + rows[:, None] * V + v[None, :], mask=b_ok[:, None] & v_ok[None, :],
                            other=float("-inf")).to(tl.float32)  # fmt: skip
                top = _merge_chunk(
                    top, slots, c, x, lse, bs, b, v, ok,
                    mask_nodes_ptr, V, mask_iters, m_lo, m_hi, allow, sorted_list,
                    BLOCK_B, BLOCK_V, K_PAD, HAS_MASK,
                )  # fmt: skip

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
    max_block_v: int = MAX_BLOCK_V,
):
    """Triton constrained_beam_step; inputs are checked by ``genrec.ops.constrained_beam_step``."""
    U, B, V = logits.shape
    K = beam_size
    if K > MAX_BEAM:
        raise ValueError(
            f"the Triton beam step handles beam_size <= {MAX_BEAM} (got {K}); use the reference backend "
            "on a GPU, or the cpp backend on CPU tensors"
        )
    has_mask = mask_offsets is not None
    n_mask = mask_nodes.numel() if has_mask else 0
    if n_mask >= 2**31:
        raise ValueError(f"the Triton beam step takes mask lists of fewer than 2^31 nodes, got {n_mask}")
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
    config = launch_config(V, K, max_block_v=max_block_v)
    dummy = row_ptr  # never read: a valid pointer for the absent optional arrays
    with on_device(logits):
        _beam_step_kernel[(U,)](
            logits.contiguous(),
            beam_scores.contiguous(),
            states.contiguous(),
            row_ptr.contiguous(),
            child_tokens.contiguous() if child_tokens.numel() else dummy,
            dense.contiguous() if dense is not None else dummy,
            mask_offsets.contiguous() if has_mask else dummy,
            mask_nodes.contiguous() if n_mask else dummy,
            mask_allow.contiguous() if has_mask else dummy,
            *out,
            B,
            V,
            K,
            row_ptr.numel() - 1,
            child_tokens.numel(),
            n_mask,
            V.bit_length() + 1,
            n_mask.bit_length() + 1,
            BLOCK_B=config.block_b,
            BLOCK_V=config.block_v,
            K_PAD=config.k_pad,
            ONE_CHUNK=config.one_chunk,
            DENSE=dense is not None,
            HAS_MASK=has_mask,
            num_warps=config.num_warps,
            maxnreg=config.maxnreg,
        )
    return tuple(out)
