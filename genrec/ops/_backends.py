"""Which implementations of each genrec operator exist here, and choosing one.

This is the only module that knows the backends: everything else calls
``genrec.ops.<op>(..., backend=...)`` or ``torch.ops.genrec.<op>``.
"""

from __future__ import annotations

import enum
import importlib.util
import os

import torch

from genrec._extension import extension_error, extension_loaded

_REBUILD_HINT = (
    "rebuild genrec with its extension: `pip install --no-build-isolation -e .` from the source "
    "folder (GENREC_BUILD_EXT=1, the default)"
)


class Backend(enum.StrEnum):
    """An implementation of a genrec operator."""

    AUTO = "auto"
    REFERENCE = "reference"  # plain PyTorch, the ground truth
    CPP = "cpp"  # C++ CPU kernel in genrec._C
    CUDA = "cuda"  # CUDA kernel in genrec._C
    TRITON = "triton"  # Triton kernel in genrec.triton_kernels


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says what is missing and how to get it."""


def _has_kernel(op: str, dispatch_key: str) -> bool:
    if not extension_loaded():
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"genrec::{op}", dispatch_key)


def triton_interpreting() -> bool:
    """True when Triton kernels run on the CPU through Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def why_unavailable(op: str, backend: Backend, device: torch.device) -> str | None:
    """None when ``backend`` can run ``op`` on ``device``, else the reason and the remedy."""
    if backend is Backend.REFERENCE:
        return None
    if backend is Backend.CPP:
        if device.type != "cpu":
            return f"the cpp backend runs on CPU tensors, got a tensor on {device}"
        if not extension_loaded():
            return f"genrec._C is not available ({extension_error()}); {_REBUILD_HINT}"
        if not _has_kernel(op, "CPU"):
            return f"genrec._C has no CPU kernel for {op}; {_REBUILD_HINT}"
        return None
    if backend is Backend.CUDA:
        if device.type != "cuda":
            return f"the cuda backend runs on CUDA tensors, got a tensor on {device}"
        if not extension_loaded():
            return f"genrec._C is not available ({extension_error()}); {_REBUILD_HINT}"
        if not _has_kernel(op, "CUDA"):
            return (
                f"genrec._C was built without CUDA kernels for {op}; rebuild with nvcc available "
                "(CUDA_HOME=/path/to/cuda GENREC_BUILD_CUDA=1 pip install --no-build-isolation -e .)"
            )
        return None
    if backend is Backend.TRITON:
        if op in _NO_TRITON_KERNEL:
            return f"there is no Triton kernel for {op}"
        if importlib.util.find_spec("triton") is None:
            return "Triton is not installed (`pip install triton`)"
        if device.type == "cuda":
            return None
        if device.type == "cpu" and triton_interpreting():
            return None
        return (
            f"Triton kernels need a CUDA tensor, or TRITON_INTERPRET=1 set before triton is imported "
            f"to run them on the CPU; got a tensor on {device}"
        )
    raise ValueError(f"unknown backend {backend!r}")


# Operators without a Triton implementation (every other op has one in genrec.triton_kernels).
_NO_TRITON_KERNEL = frozenset({"build_trie", "dropout_multiplier"})

_AUTO_ORDER = {
    "cuda": (Backend.CUDA, Backend.TRITON, Backend.REFERENCE),
    # Triton's CPU interpreter is for testing only, never picked automatically.
    "cpu": (Backend.CPP, Backend.REFERENCE),
}


def resolve_backend(op: str, backend: str | Backend, device: torch.device) -> Backend:
    """The backend to run ``op`` with on ``device``; "auto" picks the fastest available one."""
    try:
        backend = Backend(backend)
    except ValueError:
        names = ", ".join(b.value for b in Backend)
        raise ValueError(f"unknown backend {backend!r}; choose one of {names}") from None
    if backend is Backend.AUTO:
        for candidate in _AUTO_ORDER.get(device.type, (Backend.REFERENCE,)):
            if why_unavailable(op, candidate, device) is None:
                return candidate
        return Backend.REFERENCE
    reason = why_unavailable(op, backend, device)
    if reason is not None:
        raise BackendUnavailableError(f"genrec.ops.{op}: backend {backend.value!r} is unavailable: {reason}")
    return backend


def available_backends(op: str, device: str | torch.device) -> list[Backend]:
    """The backends that can run ``op`` on ``device`` here, fastest first for "auto"."""
    device = torch.device(device)
    order = (Backend.CUDA, Backend.CPP, Backend.TRITON, Backend.REFERENCE)
    return [b for b in order if why_unavailable(op, b, device) is None]
