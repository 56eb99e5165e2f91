"""Launching on the inputs' GPU.

Triton launches on the current CUDA device and its current stream, whatever device the tensors are
on; every wrapper makes the inputs' device current for the launch.
"""

from __future__ import annotations

import contextlib

import torch


def on_device(t: torch.Tensor):
    """Context that makes ``t``'s GPU the current one (nothing for a CPU tensor: the interpreter)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()
