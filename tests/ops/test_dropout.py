"""dropout_multiplier: the C++ kernel against the PyTorch reference (bit for bit), its mask's
statistics, and its argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genrec.ops as ops
from genrec.ops import Backend, BackendUnavailableError
from genrec.ops.reference import dropout_multiplier_reference
from tests.ops.helpers import backends_under_test

KERNELS = [b for b in backends_under_test("dropout_multiplier", "cpu") if b is Backend.CPP]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
INT64 = st.integers(-(2**63), 2**63 - 1)


def _scale(p: float, dtype) -> torch.Tensor:
    return torch.tensor(1.0 / (1.0 - p), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("backend", KERNELS)
@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 70), min_size=0, max_size=3),
    long_row=st.sampled_from([0, 4095, 4097, 70_001]),  # across the kernel's 4,096-draw blocks
    dtype=st.sampled_from(DTYPES),
    seed=INT64,
    p=st.one_of(st.sampled_from([0.0, 0.1, 0.2, 0.5]), st.floats(0.0, 0.999)),
    transpose=st.booleans(),
)
def test_kernel_equals_the_reference(backend, shape, long_row, dtype, seed, p, transpose):
    if long_row:
        shape = [long_row]
    like = torch.randn(shape).to(dtype)
    if transpose and like.dim() >= 2:
        like = like.transpose(0, 1)  # a non-contiguous input: the output is contiguous, like's shape
    # Poison: a freed buffer of NaNs the allocator may hand to the kernel; an unwritten element
    # would keep one and differ from the reference.
    del_me = torch.full((max(like.numel(), 1),), float("nan"), dtype=dtype)
    del del_me
    got = ops.dropout_multiplier(like, seed, p, backend=backend)
    want = dropout_multiplier_reference(like, seed, p)
    assert got.shape == like.shape and got.dtype == like.dtype and got.is_contiguous()
    assert torch.equal(got, want)
    values = set(torch.unique(got).double().tolist())
    assert values <= {0.0, _scale(p, dtype).item()}


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *KERNELS])
@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_each_element_is_dropped_with_probability_p_independently(backend, p):
    n = 1 << 20
    like = torch.empty(n)
    a = ops.dropout_multiplier(like, 12345, p, backend=backend) == 0
    b = ops.dropout_multiplier(like, 12346, p, backend=backend) == 0
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(a.float().mean().item() - p) < 5 * sigma
    # Independent of the next element and of a mask drawn with the next seed: P(both) = p^2.
    sigma2 = math.sqrt(p * p * (1 - p * p) / n)
    assert abs((a[1:] & a[:-1]).float().mean().item() - p * p) < 5 * sigma2
    assert abs((a & b).float().mean().item() - p * p) < 5 * sigma2


def test_p_zero_keeps_everything_and_the_reference_matches_known_splitmix64_outputs():
    assert torch.equal(ops.dropout_multiplier(torch.empty(1000), 7, 0.0), torch.ones(1000))
    from genrec.ops.reference.dropout import splitmix64_draws

    # The first outputs of splitmix64 seeded with 1234567 (Vigna's reference C code).
    first = [6457827717110365317, 3203168211198807973, 9817491932198370423]
    got = [v % (1 << 64) for v in splitmix64_draws(1234567, 3).tolist()]
    assert got == first


@pytest.mark.parametrize("backend", KERNELS)
def test_the_mask_does_not_depend_on_the_thread_count(backend):
    like = torch.empty(3, 100_003)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.dropout_multiplier(like, -42, 0.3, backend=backend)
        torch.set_num_threads(2)
        two = ops.dropout_multiplier(like, -42, 0.3, backend=backend)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.parametrize("backend", KERNELS)
def test_the_registered_op_passes_opcheck(backend):
    for like in (torch.randn(4, 5), torch.randn(3, 2, requires_grad=True)):
        torch.library.opcheck(torch.ops.genrec.dropout_multiplier.default, (like, 3, 0.25))
        assert not torch.ops.genrec.dropout_multiplier(like, 3, 0.25).requires_grad


@pytest.mark.parametrize(
    ("like", "seed", "p", "error", "match"),
    [
        (torch.zeros(3, dtype=torch.long), 1, 0.1, TypeError, "floating-point"),
        (torch.zeros(3), 1, 1.0, ValueError, r"p must be in \[0, 1\)"),
        (torch.zeros(3), 1, -0.1, ValueError, r"p must be in \[0, 1\)"),
        (torch.zeros(3), 2**63, 0.1, ValueError, "int64"),
    ],
)
def test_bad_arguments_are_refused(like, seed, p, error, match):
    with pytest.raises(error, match=match):
        ops.dropout_multiplier(like, seed, p)


def test_gpu_backends_are_refused_with_the_reason():
    with pytest.raises(BackendUnavailableError, match="CPU kernel"):
        ops.dropout_multiplier(torch.zeros(3), 1, 0.1, backend="triton")
