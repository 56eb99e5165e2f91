"""``dropout_multiplier``: a dropout mask as 0 / (1 - p)^-1 factors, from a counter-based generator.

Element i's draw is output i of splitmix64 started at ``seed``, so the mask is a pure function of
(seed, p, numel): the compiled kernel (csrc/cpu/dropout.cpp) fills it in parallel, and the PyTorch
reference (genrec/ops/reference/dropout.py) gives the same bits on any device.
genrec.models.layers.Dropout draws the seed from torch's generator, which is what makes a
training step's masks follow ``torch.manual_seed`` and a resumed run's RNG state.
"""

from __future__ import annotations

import torch

from genrec.ops._backends import Backend, BackendUnavailableError, resolve_backend
from genrec.ops._checks import require_tensor
from genrec.ops.reference import dropout_multiplier_reference

_INT64 = (-(1 << 63), (1 << 63) - 1)


def dropout_multiplier(like: torch.Tensor, seed: int, p: float, *, backend: str | Backend = "auto") -> torch.Tensor:
    """A contiguous tensor shaped and typed like ``like``: 0 where element i (row-major) is
    dropped, 1 / (1 - p) where it is kept. Each element is dropped with probability p (to
    2^-24); ``seed`` is any int64."""
    require_tensor("like", like)
    if not like.is_floating_point():
        raise TypeError(f"like must be a floating-point tensor, got {like.dtype}")
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    seed = int(seed)
    if not _INT64[0] <= seed <= _INT64[1]:
        raise ValueError(f"seed must be an int64, got {seed}")
    if Backend(backend) in (Backend.CUDA, Backend.TRITON):
        raise BackendUnavailableError(
            "genrec.ops.dropout_multiplier has a CPU kernel (backend 'cpp') and the reference, "
            f"not {Backend(backend).value!r}; CUDA tensors take the reference"
        )
    like = like.detach()  # only its shape and type are read: no gradient flows through the mask
    chosen = resolve_backend("dropout_multiplier", backend, like.device)
    if chosen is Backend.REFERENCE:
        return dropout_multiplier_reference(like, seed, p)
    return torch.ops.genrec.dropout_multiplier(like, seed, p)
