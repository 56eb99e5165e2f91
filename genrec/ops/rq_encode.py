"""``rq_encode``: residual-quantization encoding, dispatched among the backends."""

from __future__ import annotations

import torch

from genrec.ops._backends import Backend, resolve_backend
from genrec.ops._checks import (
    FLOAT_DTYPES,
    require_dtype,
    require_finite,
    require_rank,
    require_same_device,
    require_tensor,
)
from genrec.ops.reference import rq_encode_reference


def check_rq_encode_inputs(x: torch.Tensor, codebooks: torch.Tensor, *, finite: bool = True) -> None:
    """Raise a clear TypeError/ValueError for inputs that rq_encode cannot take."""
    require_tensor("x", x)
    require_tensor("codebooks", codebooks)
    require_rank("x", x, 2, "[N, D]")
    require_rank("codebooks", codebooks, 3, "[L, K, D]")
    allowed = (*FLOAT_DTYPES, torch.float64)
    require_dtype("x", x, allowed)
    if codebooks.dtype != x.dtype:
        raise TypeError(f"codebooks dtype {codebooks.dtype} must match x dtype {x.dtype}")
    if x.shape[1] != codebooks.shape[2]:
        raise ValueError(
            f"x has D={x.shape[1]} but codebooks have D={codebooks.shape[2]} (codebooks are [L, K, D])"
        )
    if 0 in codebooks.shape:
        raise ValueError(f"codebooks must be non-empty, got shape {tuple(codebooks.shape)}")
    require_same_device(x=x, codebooks=codebooks)
    if finite:
        require_finite("x", x)
        require_finite("codebooks", codebooks)


def rq_encode(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    *,
    backend: str | Backend = "auto",
    validate: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Residual-quantization codes of ``x`` [N, D] against ``codebooks`` [L, K, D].

    For each level l: ``codes[:, l] = argmin_k ||r - codebooks[l, k]||^2`` (ties go to the
    smallest k), then ``r -= codebooks[l, codes[:, l]]``, starting from ``r = x``. Returns int64
    codes [N, L]. Half-precision inputs are computed in float32.

    ``backend``: "auto" (the fastest available for the tensor's device), "reference",
    "cpp", "cuda" or "triton". ``validate=False`` skips the NaN/Inf scan (which synchronizes a
    CUDA device); shapes and dtypes are always checked. ``out``: an int64 [N, L] tensor to write
    the codes into (every element is written).

    >>> import torch, genrec.ops
    >>> cb = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.5, 0.0]]])
    >>> genrec.ops.rq_encode(torch.tensor([[1.4, 1.0]]), cb).tolist()
    [[1, 1]]
    """
    check_rq_encode_inputs(x, codebooks, finite=validate)
    if out is not None:
        _check_out(out, x, codebooks)
    if x.dtype == torch.float64 and Backend(backend) is Backend.AUTO:
        backend = Backend.REFERENCE  # the only backend that computes in float64
    chosen = resolve_backend("rq_encode", backend, x.device)
    if x.dtype == torch.float64 and chosen is not Backend.REFERENCE:
        raise TypeError(
            f"float64 inputs run on the reference backend only; convert with x.float() to use {chosen.value!r}"
        )
    if chosen is Backend.REFERENCE:
        codes = rq_encode_reference(x, codebooks)
        return codes if out is None else out.copy_(codes)
    if chosen is Backend.TRITON:
        # lazy: Triton compiles its kernels' module on first use; only this backend needs it
        from genrec.triton_kernels.rq_encode import rq_encode_triton

        return rq_encode_triton(x, codebooks, out=out)
    if out is None:
        return torch.ops.genrec.rq_encode(x, codebooks)
    torch.ops.genrec.rq_encode_out(x, codebooks, out)
    return out


def _check_out(out: torch.Tensor, x: torch.Tensor, codebooks: torch.Tensor) -> None:
    require_tensor("out", out)
    expected = (x.shape[0], codebooks.shape[0])
    if out.dtype != torch.long or tuple(out.shape) != expected or not out.is_contiguous():
        raise ValueError(
            f"out must be a contiguous int64 tensor of shape {expected}, got {out.dtype} {tuple(out.shape)}"
        )
    require_same_device(x=x, out=out)
