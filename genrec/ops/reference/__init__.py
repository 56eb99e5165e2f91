"""Plain PyTorch implementations of every genrec operator: the ground truth for the kernels."""

from genrec.ops.reference.rq_encode import rq_encode_reference

__all__ = ["rq_encode_reference"]
