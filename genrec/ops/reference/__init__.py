"""Plain PyTorch implementations of every genrec operator: the ground truth for the kernels."""

from genrec.ops.reference.beam_step import constrained_beam_step_reference
from genrec.ops.reference.dropout import dropout_multiplier_reference
from genrec.ops.reference.rq_encode import rq_encode_reference
from genrec.ops.reference.trie import build_trie_reference

__all__ = [
    "build_trie_reference",
    "constrained_beam_step_reference",
    "dropout_multiplier_reference",
    "rq_encode_reference",
]
