"""Triton kernels of genrec, installed as ``genrec.triton_kernels``.

Import the modules here only after deciding on ``TRITON_INTERPRET``: Triton reads it when a
kernel is defined. ``genrec.ops`` imports them lazily, on first use.
"""
