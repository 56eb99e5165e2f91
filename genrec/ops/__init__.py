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
from genrec.ops.beam_step import (
    BeamStep,
    StepMask,
    check_beam_step_inputs,
    constrained_beam_step,
    empty_beam_step,
)
from genrec.ops.dropout import dropout_multiplier
from genrec.ops.rq_encode import check_rq_encode_inputs, rq_encode
from genrec.ops.trie import build_trie

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "BeamStep",
    "StepMask",
    "available_backends",
    "build_trie",
    "check_beam_step_inputs",
    "check_rq_encode_inputs",
    "constrained_beam_step",
    "dropout_multiplier",
    "empty_beam_step",
    "resolve_backend",
    "rq_encode",
    "triton_interpreting",
]
