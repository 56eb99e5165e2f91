"""genrec's operators, each with a plain PyTorch reference and compiled/Triton backends.

The compiled ones are also registered as ``torch.ops.genrec.<name>`` once ``genrec`` is
imported, so other projects can call them directly.
"""

from genrec.ops._backends import (
    Backend,
    BackendUnavailableError,
    available_backends,
    resolve_backend,
    triton_interpreting,
)
from genrec.ops.rq_encode import check_rq_encode_inputs, rq_encode

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "check_rq_encode_inputs",
    "resolve_backend",
    "rq_encode",
    "triton_interpreting",
]
