"""Shared helpers for the operator tests."""

from __future__ import annotations

import torch

from genrec.ops import Backend, available_backends

POISON = -987654321


def backends_under_test(op: str, device: str) -> list[Backend]:
    """Every non-reference backend that can run ``op`` on ``device`` here (Triton interpreted on CPU)."""
    return [b for b in available_backends(op, device) if b is not Backend.REFERENCE]


def poisoned(shape, device, dtype=torch.long) -> torch.Tensor:
    """An output buffer full of a value no kernel writes, to catch unwritten elements."""
    return torch.full(shape, POISON, dtype=dtype, device=device)
