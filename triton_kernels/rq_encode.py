"""rq_encode in Triton.

Each program owns BLOCK_N rows and walks the levels; per level it tiles the
codebook by BLOCK_K codewords and D by BLOCK_D, computing <r, c> with tl.dot in
IEEE float32 (not TF32, so near-ties resolve like the other backends). The
residual is rebuilt per D chunk from x and the codes already stored for earlier
levels, so no [N, D] workspace is needed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import on_device


@triton.jit
def _rq_encode_kernel(
    x_ptr,
    cb_ptr,
    norms_ptr,
    out_ptr,
    N,
    D,
    K,
    L,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    for level in range(0, L):
        best_d = tl.full([BLOCK_N], float("inf"), tl.float32)
        best_k = tl.zeros([BLOCK_N], tl.int32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < K
            acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + tl.arange(0, BLOCK_D)
                d_ok = ds < D
                rd_mask = row_ok[:, None] & d_ok[None, :]
                r = tl.load(x_ptr + rows64[:, None] * D + ds[None, :], mask=rd_mask, other=0.0).to(tl.float32)
                for prev in range(0, level):
                    code = tl.load(out_ptr + rows64 * L + prev, mask=row_ok, other=0)
                    c_prev = tl.load(
                        cb_ptr + (prev * K + code)[:, None] * D + ds[None, :], mask=rd_mask, other=0.0
                    )
                    r -= c_prev.to(tl.float32)
                c = tl.load(
                    cb_ptr + (level * K + ks.to(tl.int64))[None, :] * D + ds[:, None],
                    mask=k_ok[None, :] & d_ok[:, None],
                    other=0.0,
                ).to(tl.float32)  # (BLOCK_D, BLOCK_K)
                acc += tl.dot(r, c, input_precision="ieee")
            norm = tl.load(norms_ptr + level * K + ks, mask=k_ok, other=float("inf"))
            dist = tl.where(k_ok[None, :], norm[None, :] - 2.0 * acc, float("inf"))
            tile_best = tl.min(dist, axis=1)
            tile_arg = tl.argmin(dist, axis=1, tie_break_left=True).to(tl.int32) + k0
            improved = tile_best < best_d  # strict: an earlier tile (smaller k) wins ties
            best_d = tl.where(improved, tile_best, best_d)
            best_k = tl.where(improved, tile_arg, best_k)
        tl.store(out_ptr + rows64 * L + level, best_k.to(tl.int64), mask=row_ok)
        # Later levels read these codes back, possibly from other threads of this program.
        tl.debug_barrier()


def rq_encode_triton(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    block_n: int = 64,
    block_k: int = 64,
    block_d: int = 32,
) -> torch.Tensor:
    """Triton rq_encode; inputs are checked by ``genrec.ops.rq_encode``."""
    x = x.contiguous()
    codebooks = codebooks.contiguous()
    n, d = x.shape
    levels, k, _ = codebooks.shape
    if out is None:
        out = torch.empty(n, levels, dtype=torch.long, device=x.device)
    if n == 0:
        return out
    norms = codebooks.float().pow(2).sum(-1).contiguous()  # (L, K)
    grid = (triton.cdiv(n, block_n),)
    with on_device(x):
        _rq_encode_kernel[grid](
            x, codebooks, norms, out, n, d, k, levels, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=block_d
        )
    return out
