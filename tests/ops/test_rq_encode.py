"""rq_encode: every backend against the PyTorch reference.

Tolerance rule for near-ties: a backend may pick a different code than the reference only if
its distance is within RTOL * (||r||^2 + max_k ||c_k||^2) of the true minimum (computed in
float64 from the backend's own residual), where RTOL = 1e-5. On integer-valued inputs every
distance is exact in float32, so there every backend must equal the reference bit for bit,
which pins the tie-break rule (smallest k) under many exact ties.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import genrec.ops as ops
from genrec.ops import Backend, BackendUnavailableError
from tests.ops.helpers import POISON, backends_under_test, poisoned

RTOL = 1e-5
CPU_BACKENDS = backends_under_test("rq_encode", "cpu")
CUDA_BACKENDS = backends_under_test("rq_encode", "cuda") if torch.cuda.is_available() else []


def assert_near_optimal(x: torch.Tensor, cb: torch.Tensor, codes: torch.Tensor, rtol: float = RTOL) -> None:
    """Each level's code is the nearest codeword to the residual, up to the near-tie tolerance."""
    assert codes.shape == (x.shape[0], cb.shape[0])
    assert not (codes == POISON).any(), "unwritten output elements"
    codes = codes.cpu()
    r = x.detach().cpu().double()
    cbd = cb.detach().cpu().double()
    for level in range(cb.shape[0]):
        c = cbd[level]
        assert ((codes[:, level] >= 0) & (codes[:, level] < c.shape[0])).all()
        dist = (
            ((r[:, None, :] - c[None, :, :]) ** 2).sum(-1)
            if r.numel() * c.shape[0] < 4e6
            else (r.pow(2).sum(1, keepdim=True) - 2 * r @ c.T + c.pow(2).sum(1))
        )
        chosen = dist.gather(1, codes[:, level : level + 1]).squeeze(1)
        slack = chosen - dist.min(1).values
        scale = r.pow(2).sum(1) + c.pow(2).sum(1).max()
        worst = (slack / scale).max().item() if len(slack) else 0.0
        assert worst <= rtol, f"level {level}: a code is {worst:.2e} (relative) farther than the nearest"
        r = r - c[codes[:, level]]


def draw_inputs(data, *, max_n, max_d, max_k, max_levels, integer=False, device="cpu", dtype=torch.float32):
    n = data.draw(st.integers(1, max_n), label="N")
    d = data.draw(st.integers(1, max_d), label="D")
    k = data.draw(st.integers(1, max_k), label="K")
    levels = data.draw(st.integers(1, max_levels), label="L")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    g = torch.Generator().manual_seed(seed)
    if integer:
        x = torch.randint(-3, 4, (n, d), generator=g).float()
        cb = torch.randint(-2, 3, (levels, k, d), generator=g).float()
    else:
        x = torch.randn(n, d, generator=g)
        scale = torch.tensor([0.6**level for level in range(levels)]).view(-1, 1, 1)
        cb = torch.randn(levels, k, d, generator=g) * scale
    return x.to(device, dtype), cb.to(device, dtype)


# Sizes: N up to 300 (so never only whole blocks), D up to 768, K up to 1024, L up to 4.
# Triton's CPU interpreter is slow, so it draws from smaller shapes.
def _limits(backend: Backend) -> dict:
    if backend is Backend.TRITON and not torch.cuda.is_available():
        return {"max_n": 150, "max_d": 96, "max_k": 200, "max_levels": 3}
    return {"max_n": 300, "max_d": 768, "max_k": 1024, "max_levels": 4}


@pytest.mark.parametrize("backend", CPU_BACKENDS, ids=lambda b: b.value)
@given(data=st.data())
def test_cpu_backends_pick_nearest_codewords(backend, data):
    x, cb = draw_inputs(data, **_limits(backend))
    out = poisoned((x.shape[0], cb.shape[0]), "cpu")
    codes = ops.rq_encode(x, cb, backend=backend, out=out)
    assert codes.data_ptr() == out.data_ptr()
    assert_near_optimal(x, cb, codes)


@pytest.mark.parametrize("backend", CPU_BACKENDS, ids=lambda b: b.value)
@given(data=st.data())
def test_cpu_backends_equal_reference_on_exact_ties(backend, data):
    x, cb = draw_inputs(data, integer=True, **_limits(backend))
    expected = ops.rq_encode(x.double(), cb.double(), backend="reference")
    out = poisoned(expected.shape, "cpu")
    assert torch.equal(ops.rq_encode(x, cb, backend=backend, out=out), expected)


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *CPU_BACKENDS], ids=lambda b: b.value)
def test_tie_goes_to_smallest_index(backend):
    cb = torch.randn(2, 300, 8)
    cb[0, 137] = cb[0, 5] = cb[0, 299] = torch.full((8,), 3.0)  # three identical codewords
    cb[1, 200] = cb[1, 64] = 0.0
    x = torch.full((70, 8), 3.0)
    codes = ops.rq_encode(x, cb, backend=backend)
    assert (codes[:, 0] == 5).all()
    assert (codes[:, 1] == 64).all()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@given(data=st.data())
def test_cuda_backends_pick_nearest_codewords(dtype, data):
    x, cb = draw_inputs(data, device="cuda", dtype=dtype, **_limits(Backend.CUDA))
    for backend in CUDA_BACKENDS:
        out = poisoned((x.shape[0], cb.shape[0]), "cuda")
        codes = ops.rq_encode(x, cb, backend=backend, out=out)
        # Half-precision inputs are computed in float32 from the rounded values.
        assert_near_optimal(x.float(), cb.float(), codes)


@pytest.mark.cuda
@given(data=st.data())
def test_cuda_backends_equal_reference_on_exact_ties(data):
    x, cb = draw_inputs(data, integer=True, device="cuda", **_limits(Backend.CUDA))
    expected = ops.rq_encode(x.double(), cb.double(), backend="reference")
    for backend in CUDA_BACKENDS:
        out = poisoned(expected.shape, "cuda")
        assert torch.equal(ops.rq_encode(x, cb, backend=backend, out=out), expected), backend


@pytest.mark.cuda
def test_cuda_large_batch_matches_cpu():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-3, 4, (200_003, 32), generator=g).float()
    cb = torch.randint(-2, 3, (3, 256, 32), generator=g).float()
    expected = ops.rq_encode(x, cb, backend="cpp" if Backend.CPP in CPU_BACKENDS else "reference")
    for backend in CUDA_BACKENDS:
        assert torch.equal(ops.rq_encode(x.cuda(), cb.cuda(), backend=backend).cpu(), expected), backend


def test_reference_matches_definition_by_hand():
    cb = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.5, 0.0]]])
    x = torch.tensor([[1.4, 1.0], [0.1, -0.2]])
    # level 0: [1.4, 1] is nearest (1, 1) -> r = [0.4, 0], nearest (0.5, 0) at level 1.
    assert ops.rq_encode(x, cb, backend="reference").tolist() == [[1, 1], [0, 0]]


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *CPU_BACKENDS], ids=lambda b: b.value)
def test_empty_batch_gives_empty_codes(backend):
    codes = ops.rq_encode(torch.empty(0, 4), torch.randn(3, 5, 4), backend=backend)
    assert codes.shape == (0, 3) and codes.dtype == torch.long


BAD_INPUTS = {
    "x not 2-D": (lambda: (torch.randn(4), torch.randn(2, 3, 4)), ValueError, "x must be 2-D"),
    "codebooks not 3-D": (
        lambda: (torch.randn(5, 4), torch.randn(3, 4)),
        ValueError,
        "codebooks must be 3-D",
    ),
    "D mismatch": (
        lambda: (torch.randn(5, 4), torch.randn(2, 3, 6)),
        ValueError,
        "D=4 but codebooks have D=6",
    ),
    "NaN in x": (lambda: (torch.tensor([[float("nan"), 0.0]]), torch.randn(1, 2, 2)), ValueError, "NaN"),
    "Inf in codebooks": (
        lambda: (torch.randn(3, 2), torch.full((1, 2, 2), float("inf"))),
        ValueError,
        "infinite",
    ),
    "empty codebooks": (lambda: (torch.randn(3, 2), torch.empty(1, 0, 2)), ValueError, "non-empty"),
    "integer dtype": (
        lambda: (torch.ones(3, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.long)),
        TypeError,
        "dtype",
    ),
    "dtype mismatch": (lambda: (torch.randn(3, 2), torch.randn(1, 2, 2).half()), TypeError, "must match"),
    "not a tensor": (lambda: ([[1.0, 2.0]], torch.randn(1, 2, 2)), TypeError, "torch.Tensor"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
@pytest.mark.parametrize("backend", [Backend.AUTO, Backend.REFERENCE, *CPU_BACKENDS], ids=lambda b: b.value)
def test_bad_input_gets_clear_error(case, backend):
    make, error, message = BAD_INPUTS[case]
    x, cb = make()
    with pytest.raises(error, match=message):
        ops.rq_encode(x, cb, backend=backend)


@pytest.mark.skipif(Backend.CPP not in CPU_BACKENDS, reason="compiled extension not built")
@pytest.mark.parametrize(
    ("x", "cb", "message"),
    [
        (torch.randn(4), torch.randn(2, 3, 4), "x must be 2-D"),
        (torch.randn(5, 4), torch.randn(2, 3, 6), "D=4 but codebooks have D=6"),
        (torch.tensor([[float("nan"), 0.0]]), torch.randn(1, 2, 2), "NaN"),
        (torch.randn(3, 2), torch.randn(1, 2, 2).double(), "must match"),
        (torch.randn(3, 2).double(), torch.randn(1, 2, 2).double(), "float32, float16 or bfloat16"),
        (torch.randn(3, 2), torch.empty(1, 0, 2), "non-empty"),
    ],
)
def test_compiled_op_checks_its_arguments(x, cb, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.genrec.rq_encode(x, cb)


def test_bad_out_buffer_is_refused():
    x, cb = torch.randn(5, 4), torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="out must be a contiguous int64"):
        ops.rq_encode(x, cb, out=torch.empty(5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="out must be a contiguous int64"):
        ops.rq_encode(x, cb, out=torch.empty(5, 2))


def test_float64_runs_on_reference_only():
    x, cb = torch.randn(5, 4).double(), torch.randn(2, 3, 4).double()
    assert ops.rq_encode(x, cb).shape == (5, 2)  # auto falls back to the reference
    if Backend.CPP in CPU_BACKENDS:
        with pytest.raises(TypeError, match="reference backend only"):
            ops.rq_encode(x, cb, backend="cpp")


def test_auto_picks_compiled_cpu_kernel_when_built():
    expected = Backend.CPP if Backend.CPP in CPU_BACKENDS else Backend.REFERENCE
    assert ops.resolve_backend("rq_encode", "auto", torch.device("cpu")) is expected


def test_missing_backend_error_names_the_fix(monkeypatch):
    with pytest.raises(BackendUnavailableError, match="cuda backend runs on CUDA tensors"):
        ops.rq_encode(torch.randn(3, 2), torch.randn(1, 2, 2), backend="cuda")
    import genrec.ops._backends as backends

    monkeypatch.setattr(backends, "extension_loaded", lambda: False)
    monkeypatch.setattr(backends, "extension_error", lambda: "ImportError: simulated")
    with pytest.raises(BackendUnavailableError, match=r"pip install --no-build-isolation -e \."):
        ops.rq_encode(torch.randn(3, 2), torch.randn(1, 2, 2), backend="cpp")
    # auto still works, through the reference
    assert ops.rq_encode(torch.randn(3, 2), torch.randn(1, 2, 2)).shape == (3, 1)
    with pytest.raises(ValueError, match="unknown backend 'fastest'"):
        ops.rq_encode(torch.randn(3, 2), torch.randn(1, 2, 2), backend="fastest")


@pytest.mark.skipif(Backend.CPP not in CPU_BACKENDS, reason="compiled extension not built")
def test_registered_kernels_and_opcheck_cpu():
    for op in ("genrec::rq_encode", "genrec::rq_encode_out"):
        for key in ("CPU", "Meta"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key)
    for n in (1, 37, 200):
        x, cb = torch.randn(n, 16), torch.randn(3, 40, 16)
        torch.library.opcheck(torch.ops.genrec.rq_encode.default, (x, cb))
        out = torch.empty(n, 3, dtype=torch.long)
        torch.library.opcheck(torch.ops.genrec.rq_encode_out.default, (x, cb, out))


@pytest.mark.skipif(Backend.CPP not in CPU_BACKENDS, reason="compiled extension not built")
def test_compiles_with_dynamic_shapes():
    fn = torch.compile(lambda x, cb: torch.ops.genrec.rq_encode(x, cb) + 1, dynamic=True, fullgraph=True)
    for n in (10, 33):
        x, cb = torch.randn(n, 8), torch.randn(2, 16, 8)
        assert torch.equal(fn(x, cb), ops.rq_encode(x, cb, backend="reference") + 1)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_registered_kernels_and_opcheck_cuda(dtype):
    for op in ("genrec::rq_encode", "genrec::rq_encode_out"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
    for n in (1, 100):
        x = torch.randn(n, 16, device="cuda").to(dtype)
        cb = torch.randn(3, 40, 16, device="cuda").to(dtype)
        torch.library.opcheck(torch.ops.genrec.rq_encode.default, (x, cb))
        out = poisoned((n, 3), "cuda")
        torch.library.opcheck(torch.ops.genrec.rq_encode_out.default, (x, cb, out))
        assert not (out == POISON).any()


SMALL_SANITIZER_CASES = {"tiny": (1, 3, 1, 2), "tiles": (130, 20, 3, 70), "wide": (65, 100, 2, 300)}  # N, D, L, K


@pytest.mark.cuda
@pytest.mark.parametrize("name", SMALL_SANITIZER_CASES, ids=list(SMALL_SANITIZER_CASES))
def test_cuda_small_shapes_for_sanitizer(name):
    """Small, quick cases (partial row, code and D tiles); bench/gpu_check.sh runs these under
    compute-sanitizer."""
    n, d, levels, k = SMALL_SANITIZER_CASES[name]
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-3, 4, (n, d), generator=g).float()
    cb = torch.randint(-2, 3, (levels, k, d), generator=g).float()
    expected = ops.rq_encode(x.double(), cb.double(), backend="reference")
    for backend in CUDA_BACKENDS:
        out = poisoned(expected.shape, "cuda")
        assert torch.equal(ops.rq_encode(x.cuda(), cb.cuda(), backend=backend, out=out).cpu(), expected), backend


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_kernels_run_on_the_tensors_gpu_not_the_current_one():
    g = torch.Generator().manual_seed(4)
    x = torch.randint(-3, 4, (1000, 24), generator=g).float()
    cb = torch.randint(-2, 3, (3, 64, 24), generator=g).float()
    expected = ops.rq_encode(x.double(), cb.double(), backend="reference")
    with torch.cuda.device(0):
        for backend in CUDA_BACKENDS:
            codes = ops.rq_encode(x.to("cuda:1"), cb.to("cuda:1"), backend=backend)
            assert codes.device == torch.device("cuda:1")
            assert torch.equal(codes.cpu(), expected), backend
