"""Loads the compiled extension ``genrec._C`` once, remembering why it failed if it did."""

from __future__ import annotations

import importlib

import torch  # noqa: F401  (loads libtorch, which genrec._C links against)

_error: str | None = None

try:
    importlib.import_module("genrec._C")
except ImportError as exc:  # a pure-PyTorch install (GENREC_BUILD_EXT=0) or a broken build
    _error = f"{type(exc).__name__}: {exc}"


def extension_loaded() -> bool:
    """True when ``genrec._C`` imported and ``torch.ops.genrec`` holds the compiled operators."""
    return _error is None


def extension_error() -> str | None:
    """Why ``genrec._C`` failed to import, or None when it loaded."""
    return _error
