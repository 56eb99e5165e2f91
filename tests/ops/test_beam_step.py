"""constrained_beam_step: every backend against the PyTorch reference.

Inputs are drawn so that exact ties are common: logits are multiples of 1/2 (equal logits in a
row tie exactly) and some beams copy another beam's row and score (their candidates tie
exactly). Two correct float32 implementations may still order candidates whose true scores
differ by a few ulps differently (their logsumexps round differently), so each draw is checked
against a float64 oracle: when no two candidates near the cut are that close without being an
exact tie, the backend must equal the reference exactly (tokens, parents, states; scores to
1e-5); otherwise it must return a valid, optimal, correctly ordered selection. Outputs are
poisoned before every run.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genrec.ops as ops
from genrec.ops import Backend, BackendUnavailableError, BeamStep, StepMask
from tests.ops.helpers import POISON, backends_under_test

CPU_BACKENDS = backends_under_test("constrained_beam_step", "cpu")
HAS_CUDA = torch.cuda.is_available()
CUDA_BACKENDS = backends_under_test("constrained_beam_step", "cuda") if HAS_CUDA else []
NEAR = 1e-4  # float64 gap below which two candidates from different rows count as a near-tie


# ---------------------------------------------------------------- drawing inputs
def random_level(g: torch.Generator, nodes: int, V: int, *, empty_rate: float = 0.15):
    """CSR arrays of one trie level with random sorted children per node, and its dense table."""
    tokens, row_ptr = [], [0]
    for _ in range(nodes):
        if torch.rand(1, generator=g).item() < empty_rate:
            k = 0
        else:
            k = int(torch.randint(1, V + 1, (1,), generator=g))
        tokens += torch.randperm(V, generator=g)[:k].sort().values.tolist()
        row_ptr.append(len(tokens))
    row_ptr_t = torch.tensor(row_ptr, dtype=torch.int32)
    tokens_t = torch.tensor(tokens, dtype=torch.int32)
    dense = torch.full((nodes, V), -1, dtype=torch.int32)
    for s in range(nodes):
        for c in range(row_ptr[s], row_ptr[s + 1]):
            dense[s, tokens[c]] = c
    return row_ptr_t, tokens_t, dense


def draw_case(data, *, max_users=5, max_beams=8, max_vocab=40, max_k=16, masks=True):
    U = data.draw(st.integers(1, max_users), label="U")
    B = data.draw(st.integers(1, max_beams), label="B")
    V = data.draw(st.integers(1, max_vocab), label="V")
    K = data.draw(st.integers(1, max_k), label="K")
    nodes = data.draw(st.integers(1, 6), label="nodes")
    use_dense = data.draw(st.booleans(), label="dense")
    use_mask = masks and data.draw(st.booleans(), label="mask")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    g = torch.Generator().manual_seed(seed)
    row_ptr, child_tokens, dense = random_level(g, nodes, V)
    states = torch.randint(0, nodes, (U, B), generator=g, dtype=torch.int32)
    states[torch.rand(U, B, generator=g) < 0.15] = -1
    beam_scores = -torch.randint(0, 12, (U, B), generator=g).float() / 4
    beam_scores[torch.rand(U, B, generator=g) < 0.1] = float("-inf")
    logits = torch.randint(-6, 7, (U, B, V), generator=g).float() / 2
    logits[torch.rand(U, B, V, generator=g) < 0.05] = float("-inf")
    # Copies of another beam's row and score: exact ties across parents.
    for u in range(U):
        for b in range(1, B):
            if torch.rand(1, generator=g).item() < 0.3:
                src = int(torch.randint(0, b, (1,), generator=g))
                logits[u, b] = logits[u, src]
                beam_scores[u, b] = beam_scores[u, src]
                states[u, b] = states[u, src]
    mask = None
    if use_mask:
        children = max(1, child_tokens.numel())
        lists = [
            torch.unique(
                torch.randint(0, children, (int(torch.randint(0, 6, (1,), generator=g)),), generator=g)
            )
            for _ in range(U)
        ]
        offsets = torch.zeros(U + 1, dtype=torch.long)
        offsets[1:] = torch.tensor([len(x) for x in lists]).cumsum(0)
        nodes_t = torch.cat([*lists, torch.full((3,), 123456)]).int()  # a longer buffer: the tail is ignored
        mask = StepMask(offsets, nodes_t, torch.rand(U, generator=g) < 0.5)
    return dict(
        logits=logits,
        beam_scores=beam_scores,
        states=states,
        row_ptr=row_ptr,
        child_tokens=child_tokens,
        dense=dense if use_dense else None,
        mask=mask,
        beam_size=K,
    )


def to_device(case: dict, device) -> dict:
    out = {}
    for k, v in case.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device)
        elif isinstance(v, StepMask):
            out[k] = StepMask(v.offsets.to(device), v.nodes.to(device), v.allow.to(device))
        else:
            out[k] = v
    return out


def run(case: dict, backend, *, poison=True) -> BeamStep:
    U, K = case["logits"].shape[0], case["beam_size"]
    device = case["logits"].device
    args = {
        k: v
        for k, v in case.items()
        if k not in ("logits", "beam_scores", "states", "row_ptr", "child_tokens")
    }
    positional = (case["logits"], case["beam_scores"], case["states"], case["row_ptr"], case["child_tokens"])
    if not poison:
        return ops.constrained_beam_step(*positional, **args, backend=backend)
    out = BeamStep(
        torch.full((U, K), POISON, dtype=torch.long, device=device),
        torch.full((U, K), POISON, dtype=torch.long, device=device),
        torch.full((U, K), float(POISON), dtype=torch.float32, device=device),
        torch.full((U, K), POISON, dtype=torch.int32, device=device),
    )
    result = ops.constrained_beam_step(*positional, **args, backend=backend, out=out)
    assert all(r.data_ptr() == o.data_ptr() for r, o in zip(result, out, strict=True)), "out buffers not used"
    for name, t in zip(BeamStep._fields, result, strict=True):
        assert not (t == POISON).any(), f"unwritten {name}"
    return result


# ---------------------------------------------------------------- the oracle and the comparison
def oracle(case: dict):
    """float64 scores of every candidate [U, B*V] (-inf where invalid), child ids, and row identity."""
    logits = case["logits"].double().cpu()
    U, B, V = logits.shape
    states = case["states"].cpu()
    bs = case["beam_scores"].double().cpu()
    row_ptr, toks = case["row_ptr"].cpu().long(), case["child_tokens"].cpu().long()
    nodes = row_ptr.numel() - 1
    child = torch.full((U, B, V), -1, dtype=torch.long)
    for u in range(U):
        for b in range(B):
            s = int(states[u, b])
            if 0 <= s < nodes and bs[u, b] > -math.inf:
                for c in range(int(row_ptr[s]), int(row_ptr[s + 1])):
                    child[u, b, int(toks[c])] = c
    scores = bs[..., None] + torch.log_softmax(logits, dim=-1)
    valid = (child >= 0) & (scores > -math.inf) & ~torch.isnan(scores)
    mask = case["mask"]
    if mask is not None:
        off, nodes_l, allow = mask.offsets.cpu(), mask.nodes.cpu().long(), mask.allow.cpu()
        for u in range(U):
            listed = set(nodes_l[int(off[u]) : int(off[u + 1])].tolist())
            for b in range(B):
                for v in range(V):
                    if valid[u, b, v] and ((int(child[u, b, v]) in listed) != bool(allow[u])):
                        valid[u, b, v] = False
    scores = torch.where(valid, scores, -math.inf)
    # Two beams whose (row, score, state) are identical tie exactly in every backend.
    row_id = torch.zeros(U, B, dtype=torch.long)
    for u in range(U):
        seen: dict = {}
        for b in range(B):
            key = (
                tuple(case["logits"][u, b].cpu().tolist()),
                float(case["beam_scores"][u, b]),
                int(states[u, b]),
            )
            row_id[u, b] = seen.setdefault(key, b)
    return scores.reshape(U, B * V), child.reshape(U, B * V), row_id


def ambiguous(case: dict) -> bool:
    """Whether two valid candidates near a user's cut are closer than NEAR without being an exact tie."""
    scores, _, row_id = oracle(case)
    U, _BV = scores.shape
    V = case["logits"].shape[2]
    K = case["beam_size"]
    for u in range(U):
        order = torch.argsort(scores[u], descending=True, stable=True)
        n_valid = int((scores[u] > -math.inf).sum())
        top = order[: min(n_valid, K + 1)].tolist()
        for i in range(len(top)):
            for j in range(i + 1, len(top)):
                a, b = top[i], top[j]
                gap = abs(float(scores[u, a] - scores[u, b]))
                same_row = int(row_id[u, a // V]) == int(row_id[u, b // V])
                exact = same_row and float(case["logits"][u, a // V, a % V]) == float(
                    case["logits"][u, b // V, b % V]
                )
                if gap < NEAR and not exact:
                    return True
    return False


def assert_valid_selection(case: dict, got: BeamStep) -> None:
    """Weaker check for ambiguous draws: valid, distinct, well ordered and optimal up to NEAR."""
    scores, child, _ = oracle(case)
    U, _BV = scores.shape
    V = case["logits"].shape[2]
    K = case["beam_size"]
    tokens, parents, sc, states = (t.cpu() for t in got)
    for u in range(U):
        n = min(K, int((scores[u] > -math.inf).sum()))
        assert bool(
            (tokens[u, n:] == -1).all() and (parents[u, n:] == -1).all() and (states[u, n:] == -1).all()
        )
        assert bool((sc[u, n:] == -math.inf).all())
        flat = parents[u, :n] * V + tokens[u, :n]
        assert len(set(flat.tolist())) == n, "a candidate was chosen twice"
        assert bool((scores[u, flat] > -math.inf).all()), "an invalid candidate was chosen"
        assert torch.equal(states[u, :n].long(), child[u, flat]), "wrong next state"
        assert torch.allclose(sc[u, :n].double(), scores[u, flat], atol=1e-5, rtol=1e-6)
        for i in range(n - 1):  # own order: score descending, ties by (parent, token)
            assert sc[u, i] > sc[u, i + 1] or (sc[u, i] == sc[u, i + 1] and flat[i] < flat[i + 1])
        if n:
            rest = scores[u].clone()
            rest[flat] = -math.inf
            assert float(rest.max()) <= float(scores[u, flat].min()) + NEAR, "a better candidate was left out"


def assert_matches_reference(case: dict, got: BeamStep, expected: BeamStep) -> None:
    if ambiguous(case):
        assert_valid_selection(case, got)
        return
    for name in ("tokens", "parents", "states"):
        assert torch.equal(getattr(got, name).cpu(), getattr(expected, name).cpu()), name
    assert torch.allclose(got.scores.cpu(), expected.scores.cpu(), atol=1e-5, rtol=1e-6, equal_nan=False)


def _limits(backend: Backend) -> dict:
    if backend is Backend.TRITON and not HAS_CUDA:  # the interpreter is slow: small draws, fewer of them
        return {"max_users": 3, "max_beams": 5, "max_vocab": 24, "max_k": 10}
    return {}


# ---------------------------------------------------------------- CPU backends
@given(data=st.data())
@settings(max_examples=150)
def test_reference_equals_float64_oracle(data):
    """The ground truth itself: a valid, optimal selection, and the oracle's exact order when unambiguous."""
    case = draw_case(data)
    got = run(case, Backend.REFERENCE)
    assert_valid_selection(case, got)
    if not ambiguous(case):
        scores, _child, _ = oracle(case)
        V, K = case["logits"].shape[2], case["beam_size"]
        for u in range(scores.shape[0]):
            order = torch.argsort(scores[u], descending=True, stable=True)[:K]
            order = order[scores[u, order] > -math.inf]
            n = len(order)
            assert got.parents[u, :n].tolist() == (order // V).tolist()
            assert got.tokens[u, :n].tolist() == (order % V).tolist()


def _check_backend(backend: Backend, data) -> None:
    case = draw_case(data, **_limits(backend))
    expected = run(case, Backend.REFERENCE, poison=False)
    assert_matches_reference(case, run(case, backend), expected)


@pytest.mark.skipif(Backend.CPP not in CPU_BACKENDS, reason="compiled extension not built")
@given(data=st.data())
@settings(max_examples=200)
def test_cpp_matches_reference(data):
    _check_backend(Backend.CPP, data)


@pytest.mark.skipif(Backend.TRITON not in CPU_BACKENDS, reason="Triton cannot run on the CPU here")
@given(data=st.data())
@settings(max_examples=30)
def test_triton_matches_reference(data):
    _check_backend(Backend.TRITON, data)


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *CPU_BACKENDS], ids=lambda b: b.value)
@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_tie_order_is_score_then_parent_then_token(backend, dense):
    # Every candidate ties: beams 0 and 2 have identical rows and scores, beam 1 is dead.
    V = 4
    row_ptr = torch.tensor([0, V], dtype=torch.int32)
    child_tokens = torch.arange(V, dtype=torch.int32)
    dense_table = torch.arange(V, dtype=torch.int32)[None]
    logits = torch.zeros(1, 3, V)
    logits[0, :, 2] = 1.0  # token 2 is the best of every row
    states = torch.tensor([[0, -1, 0]], dtype=torch.int32)
    step = ops.constrained_beam_step(
        logits,
        torch.zeros(1, 3),
        states,
        row_ptr,
        child_tokens,
        beam_size=7,
        dense=dense_table if dense else None,
        backend=backend,
    )
    assert step.parents.tolist() == [[0, 2, 0, 0, 0, 2, 2]]
    assert step.tokens.tolist() == [[2, 2, 0, 1, 3, 0, 1]]
    assert step.states.tolist() == [[2, 2, 0, 1, 3, 0, 1]]
    assert step.scores[0, 0] == step.scores[0, 1] and step.scores[0, 2] == step.scores[0, 6]


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *CPU_BACKENDS], ids=lambda b: b.value)
def test_fewer_candidates_than_beams_leave_empty_slots(backend):
    row_ptr = torch.tensor([0, 2, 2], dtype=torch.int32)  # node 1 has no children
    child_tokens = torch.tensor([1, 3], dtype=torch.int32)
    logits = torch.randn(2, 2, 5)
    states = torch.tensor([[0, 1], [1, -1]], dtype=torch.int32)
    step = ops.constrained_beam_step(
        logits, torch.zeros(2, 2), states, row_ptr, child_tokens, beam_size=4, backend=backend
    )
    assert step.tokens[0, :2].sort().values.tolist() == [1, 3]
    assert step.tokens[0, 2:].tolist() == [-1, -1] and step.tokens[1].tolist() == [-1] * 4
    assert step.parents[1].tolist() == [-1] * 4 and step.states[1].tolist() == [-1] * 4
    assert torch.isinf(step.scores[1]).all() and (step.scores[1] < 0).all()
    expected = torch.log_softmax(logits[0, 0], -1)[[1, 3]].sort(descending=True).values
    assert torch.allclose(step.scores[0, :2], expected, atol=1e-6)


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *CPU_BACKENDS], ids=lambda b: b.value)
def test_nan_inf_rows_have_no_candidates(backend):
    row_ptr = torch.tensor([0, 3], dtype=torch.int32)
    child_tokens = torch.tensor([0, 1, 2], dtype=torch.int32)
    logits = torch.zeros(1, 5, 3)
    logits[0, 0, 1] = float("nan")
    logits[0, 1, 0] = float("inf")
    logits[0, 2] = float("-inf")
    logits[0, 3, 2] = float("-inf")  # a -inf logit: that one token is impossible
    beam_scores = torch.tensor([[0.0, 0.0, 0.0, 0.0, float("nan")]])
    states = torch.zeros(1, 5, dtype=torch.int32)
    step = ops.constrained_beam_step(
        logits, beam_scores, states, row_ptr, child_tokens, beam_size=4, backend=backend
    )
    assert step.parents.tolist() == [[3, 3, -1, -1]] and step.tokens.tolist() == [[0, 1, -1, -1]]


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *CPU_BACKENDS], ids=lambda b: b.value)
def test_mask_allow_and_deny(backend):
    row_ptr = torch.tensor([0, 4], dtype=torch.int32)
    child_tokens = torch.tensor([0, 1, 2, 3], dtype=torch.int32)
    logits = torch.tensor([[[4.0, 3.0, 2.0, 1.0]]]).expand(3, 1, 4).contiguous()
    states = torch.zeros(3, 1, dtype=torch.int32)
    # user 0 may only enter nodes 1 and 3; user 1 may not enter node 0; user 2: empty deny-list.
    mask = StepMask(
        torch.tensor([0, 2, 3, 3]),
        torch.tensor([1, 3, 0], dtype=torch.int32),
        torch.tensor([True, False, False]),
    )
    step = ops.constrained_beam_step(
        logits, torch.zeros(3, 1), states, row_ptr, child_tokens, beam_size=3, mask=mask, backend=backend
    )
    assert step.tokens.tolist() == [[1, 3, -1], [1, 2, 3], [0, 1, 2]]


@pytest.mark.parametrize("backend", CPU_BACKENDS, ids=lambda b: b.value)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_logits_compute_in_float32(backend, dtype):
    g = torch.Generator().manual_seed(1)
    row_ptr, child_tokens, _ = random_level(g, 3, 20, empty_rate=0.0)
    logits = (torch.randn(4, 3, 20, generator=g) * 3).to(dtype)
    case = dict(
        logits=logits,
        beam_scores=-torch.rand(4, 3, generator=g),
        states=torch.randint(0, 3, (4, 3), generator=g, dtype=torch.int32),
        row_ptr=row_ptr,
        child_tokens=child_tokens,
        dense=None,
        mask=None,
        beam_size=6,
    )
    expected = run({**case, "logits": logits.float()}, Backend.REFERENCE)
    assert_matches_reference({**case, "logits": logits.float()}, run(case, backend), expected)


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *CPU_BACKENDS], ids=lambda b: b.value)
def test_beam_size_above_every_candidate_and_empty_trie(backend):
    logits = torch.randn(2, 1, 3)
    step = ops.constrained_beam_step(
        logits,
        torch.zeros(2, 1),
        torch.zeros(2, 1, dtype=torch.int32),
        torch.tensor([0, 0], dtype=torch.int32),
        torch.zeros(0, dtype=torch.int32),
        beam_size=5,
        backend=backend,
    )
    assert step.tokens.tolist() == [[-1] * 5] * 2
    step = ops.constrained_beam_step(
        torch.randn(0, 3, 4),
        torch.zeros(0, 3),
        torch.zeros(0, 3, dtype=torch.int32),
        torch.tensor([0, 0], dtype=torch.int32),
        torch.zeros(0, dtype=torch.int32),
        beam_size=2,
        backend=backend,
    )
    assert step.tokens.shape == (0, 2)


# ---------------------------------------------------------------- argument errors
def _good():
    return dict(
        logits=torch.randn(2, 3, 4),
        beam_scores=torch.zeros(2, 3),
        states=torch.zeros(2, 3, dtype=torch.int32),
        row_ptr=torch.tensor([0, 2], dtype=torch.int32),
        child_tokens=torch.tensor([0, 3], dtype=torch.int32),
    )


BAD = {
    "logits not 3-D": (dict(logits=torch.randn(2, 3)), ValueError, "logits must be 3-D"),
    "integer logits": (
        dict(logits=torch.zeros(2, 3, 4, dtype=torch.long)),
        TypeError,
        "logits must have dtype",
    ),
    "scores shape": (
        dict(beam_scores=torch.zeros(2, 2)),
        ValueError,
        r"beam_scores must be float32 \[users, beams\]",
    ),
    "states dtype": (dict(states=torch.zeros(2, 3, dtype=torch.long)), ValueError, "states must be int32"),
    "row_ptr dtype": (dict(row_ptr=torch.tensor([0, 2])), TypeError, "row_ptr must have dtype int32"),
    "state out of range": (
        dict(states=torch.full((2, 3), 5, dtype=torch.int32)),
        ValueError,
        "states must be -1",
    ),
    "token beyond vocab": (
        dict(child_tokens=torch.tensor([0, 4], dtype=torch.int32)),
        ValueError,
        "child_tokens must lie in",
    ),
    "row_ptr end": (
        dict(row_ptr=torch.tensor([0, 1], dtype=torch.int32)),
        ValueError,
        "row_ptr must start at 0",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_gets_clear_error(case):
    override, error, message = BAD[case]
    args = {**_good(), **override}
    with pytest.raises(error, match=message):
        ops.constrained_beam_step(**args, beam_size=2)


def test_bad_dense_mask_out_and_beam_size_are_refused():
    with pytest.raises(ValueError, match=r"dense must be int32 \[nodes, vocab\]"):
        ops.constrained_beam_step(**_good(), beam_size=2, dense=torch.zeros(1, 3, dtype=torch.int32))
    bad_mask = StepMask(
        torch.zeros(2, dtype=torch.long), torch.zeros(0, dtype=torch.int32), torch.zeros(2, dtype=torch.bool)
    )
    with pytest.raises(ValueError, match=r"mask.offsets must be int64 \[users \+ 1\]"):
        ops.constrained_beam_step(**_good(), beam_size=2, mask=bad_mask)
    unsorted = StepMask(
        torch.tensor([0, 2, 2]), torch.tensor([1, 0], dtype=torch.int32), torch.zeros(2, dtype=torch.bool)
    )
    with pytest.raises(ValueError, match="must be sorted"):
        ops.constrained_beam_step(**_good(), beam_size=2, mask=unsorted)
    with pytest.raises(ValueError, match="beam_size must be a positive int"):
        ops.constrained_beam_step(**_good(), beam_size=0)
    out = ops.empty_beam_step(2, 3, "cpu")
    with pytest.raises(ValueError, match=r"out.tokens must be a contiguous"):
        ops.constrained_beam_step(**_good(), beam_size=2, out=out)


@pytest.mark.skipif(Backend.CPP not in CPU_BACKENDS, reason="compiled extension not built")
def test_compiled_op_checks_its_arguments():
    g = _good()
    args = (
        g["logits"],
        g["beam_scores"],
        g["states"],
        g["row_ptr"],
        g["child_tokens"],
        None,
        None,
        None,
        None,
    )
    with pytest.raises(RuntimeError, match="beam_size must be >= 1"):
        torch.ops.genrec.constrained_beam_step(*args, 0)
    with pytest.raises(RuntimeError, match="states must be int32"):
        torch.ops.genrec.constrained_beam_step(*args[:2], g["states"].long(), *args[3:], 2)
    with pytest.raises(RuntimeError, match="give mask_offsets, mask_nodes and mask_allow together"):
        torch.ops.genrec.constrained_beam_step(*args[:6], torch.zeros(3, dtype=torch.long), None, None, 2)
    unsorted = (
        torch.tensor([0, 2, 2]),
        torch.tensor([1, 0], dtype=torch.int32),
        torch.zeros(2, dtype=torch.bool),
    )
    with pytest.raises(RuntimeError, match="must be sorted ascending"):
        torch.ops.genrec.constrained_beam_step(*args[:6], *unsorted, 2)


def test_missing_backend_error_names_the_fix():
    with pytest.raises(BackendUnavailableError, match="cuda backend runs on CUDA tensors"):
        ops.constrained_beam_step(**_good(), beam_size=2, backend="cuda")


@pytest.mark.skipif(Backend.CPP not in CPU_BACKENDS, reason="compiled extension not built")
def test_registered_kernels_opcheck_and_compile():
    for op in ("genrec::constrained_beam_step", "genrec::constrained_beam_step_out"):
        for key in ("CPU", "Meta"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key)
    g = torch.Generator().manual_seed(3)
    row_ptr, child_tokens, dense = random_level(g, 4, 9)
    mask = (
        torch.tensor([0, 1, 1, 2]),
        torch.tensor([0, 2], dtype=torch.int32),
        torch.tensor([False, True, False]),
    )
    for d, m in ((None, (None, None, None)), (dense, mask)):
        args = (
            torch.randn(3, 2, 9),
            torch.zeros(3, 2),
            torch.randint(0, 4, (3, 2), dtype=torch.int32),
            row_ptr,
            child_tokens,
            d,
            *m,
            5,
        )
        torch.library.opcheck(torch.ops.genrec.constrained_beam_step.default, args)
        outs = tuple(ops.empty_beam_step(3, 5, "cpu"))
        torch.library.opcheck(torch.ops.genrec.constrained_beam_step_out.default, (*args, *outs))

    def step(logits, scores, states):
        t, _p, s, _n = torch.ops.genrec.constrained_beam_step(
            logits, scores, states, row_ptr, child_tokens, None, None, None, None, 3
        )
        return t + 1, s * 2

    fn = torch.compile(step, dynamic=True, fullgraph=True)
    for U in (2, 5):
        logits, scores = torch.randn(U, 2, 9), torch.zeros(U, 2)
        states = torch.randint(0, 4, (U, 2), dtype=torch.int32)
        expected = ops.constrained_beam_step(
            logits, scores, states, row_ptr, child_tokens, beam_size=3, backend="reference"
        )
        t, s = fn(logits, scores, states)
        assert torch.equal(t, expected.tokens + 1) and torch.allclose(s, expected.scores * 2)


def test_auto_picks_compiled_cpu_kernel_when_built():
    expected = Backend.CPP if Backend.CPP in CPU_BACKENDS else Backend.REFERENCE
    assert ops.resolve_backend("constrained_beam_step", "auto", torch.device("cpu")) is expected


# ---------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@given(data=st.data())
@settings(max_examples=40)
def test_cuda_backends_match_reference(dtype, data):
    case = draw_case(data)
    case["logits"] = case["logits"].to(dtype)  # multiples of 1/2 up to 3: exact in every dtype
    expected = run({**case, "logits": case["logits"].float()}, Backend.REFERENCE, poison=False)
    gpu = to_device(case, "cuda")
    for backend in CUDA_BACKENDS:
        if backend is Backend.TRITON and dtype != torch.float32:
            continue  # every Triton variant is a JIT compile: half logits are covered below
        assert_matches_reference({**case, "logits": case["logits"].float()}, run(gpu, backend), expected)


def _large_case(
    seed: int, U: int, B: int, V: int, K: int, nodes: int, *, dense: bool, fill: float, mask: bool
):
    """A big step on which every correct float32 backend computes bit-identical scores.

    Each row has one logit 0 and the rest in [-60, -30], so its exp-sum rounds to exactly 1 in
    any summation order and logsumexp equals the row maximum exactly; scores are then
    beam_score + (logit - max), two correctly rounded operations. Beams 0 and 1 tie exactly.
    """
    g = torch.Generator().manual_seed(seed)
    counts = (torch.rand(nodes, generator=g) * fill * V).ceil().long().clamp(0, V)
    tokens = [torch.randperm(V, generator=g)[: int(c)].sort().values for c in counts]
    row_ptr = torch.zeros(nodes + 1, dtype=torch.int32)
    row_ptr[1:] = counts.cumsum(0).int()
    child_tokens = torch.cat(tokens).int()
    dense_t = None
    if dense:
        dense_t = torch.full((nodes, V), -1, dtype=torch.int32)
        parent = torch.repeat_interleave(torch.arange(nodes), counts)
        dense_t[parent, child_tokens.long()] = torch.arange(child_tokens.numel(), dtype=torch.int32)
    logits = -30 - 30 * torch.rand(U, B, V, generator=g)
    logits.scatter_(2, torch.randint(0, V, (U, B, 1), generator=g), 0.0)
    beam_scores = -torch.rand(U, B, generator=g) * 40
    states = torch.randint(0, nodes, (U, B), generator=g, dtype=torch.int32)
    states[torch.rand(U, B, generator=g) < 0.05] = -1
    if B > 1:
        logits[:, 1] = logits[:, 0]
        beam_scores[:, 1] = beam_scores[:, 0]
        states[:, 1] = states[:, 0]
    step_mask = None
    if mask:
        children = max(1, child_tokens.numel())
        lists = [
            torch.unique(
                torch.randint(0, children, (int(torch.randint(0, 40, (1,), generator=g)),), generator=g)
            )
            for _ in range(U)
        ]
        offsets = torch.zeros(U + 1, dtype=torch.long)
        offsets[1:] = torch.tensor([len(x) for x in lists]).cumsum(0)
        step_mask = StepMask(offsets, torch.cat(lists).int(), torch.rand(U, generator=g) < 0.3)
    return dict(
        logits=logits, beam_scores=beam_scores, states=states, row_ptr=row_ptr, child_tokens=child_tokens,
        dense=dense_t, mask=step_mask, beam_size=K,
    )  # fmt: skip


LARGE = {
    # name: (U, B, V, K, nodes, dense, fill, mask)
    "tiger-step-csr": (2048, 20, 256, 20, 5000, False, 0.3, False),
    "tiger-step-dense": (2048, 20, 256, 20, 256, True, 1.0, False),
    "first-step": (4096, 1, 256, 20, 1, True, 1.0, False),
    "beam-100": (512, 100, 256, 100, 3000, False, 1.0, True),
    "global-workspace": (64, 64, 4096, 50, 300, False, 0.7, False),  # 1 MiB of keys per user: global memory
    "max-beams": (8, 1024, 64, 1024, 100, False, 1.0, True),
    "small-vocab-big-k": (300, 37, 3, 500, 40, True, 1.0, True),
}


@pytest.mark.cuda
@pytest.mark.parametrize("name", LARGE, ids=list(LARGE))
def test_cuda_large_shapes_equal_cpu(name):
    case = _large_case(7, *LARGE[name][:5], dense=LARGE[name][5], fill=LARGE[name][6], mask=LARGE[name][7])
    cpu_backend = Backend.CPP if Backend.CPP in CPU_BACKENDS else Backend.REFERENCE
    expected = run(case, cpu_backend, poison=False)
    gpu = to_device(case, "cuda")
    for backend in CUDA_BACKENDS:
        if backend is Backend.TRITON and (case["beam_size"] > 1024 or case["logits"].shape[2] > 16384):
            continue
        got = run(gpu, backend)
        for field in ("tokens", "parents", "states"):
            assert torch.equal(getattr(got, field).cpu(), getattr(expected, field)), (backend, field)
        assert torch.equal(got.scores.cpu(), expected.scores), backend


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["tiger-step-dense", "beam-100"])
def test_cuda_half_precision_logits_equal_cpu(name, dtype):
    case = _large_case(11, *LARGE[name][:5], dense=LARGE[name][5], fill=LARGE[name][6], mask=LARGE[name][7])
    case["logits"] = case["logits"].to(dtype)  # the row maximum 0 stays exact, so does logsumexp
    cpu_backend = Backend.CPP if Backend.CPP in CPU_BACKENDS else Backend.REFERENCE
    expected = run({**case, "logits": case["logits"].float()}, cpu_backend, poison=False)
    gpu = to_device(case, "cuda")
    for backend in CUDA_BACKENDS:
        got = run(gpu, backend)
        for field in ("tokens", "parents", "states", "scores"):
            assert torch.equal(getattr(got, field).cpu(), getattr(expected, field)), (backend, field)


def _positional_and_options(case: dict):
    positional = (case["logits"], case["beam_scores"], case["states"], case["row_ptr"], case["child_tokens"])
    options = {k: v for k, v in case.items() if k not in ("logits", "beam_scores", "states", "row_ptr", "child_tokens")}
    return positional, options


GRAPH_SHAPES = {
    "small-masked": (3, 256, 20, 256, 20, 500, False, 0.5, True),
    "beam-100": (7, *LARGE["beam-100"]),  # 102 KB of shared memory: above the 48 KB default
    "global-workspace": (7, *LARGE["global-workspace"]),  # the key workspace is allocated inside the capture
}


@pytest.mark.cuda
@pytest.mark.parametrize("name", GRAPH_SHAPES, ids=list(GRAPH_SHAPES))
def test_cuda_reference_and_kernels_capture_in_a_graph(name):
    seed, U, B, V, K, nodes, dense, fill, mask = GRAPH_SHAPES[name]
    case = to_device(_large_case(seed, U, B, V, K, nodes, dense=dense, fill=fill, mask=mask), "cuda")
    positional, options = _positional_and_options(case)
    for backend in [Backend.REFERENCE, *CUDA_BACKENDS]:
        eager = run(case, backend, poison=False)
        out = ops.empty_beam_step(U, K, "cuda")
        ops.constrained_beam_step(*positional, **options, backend=backend, out=out, validate=False)  # warm-up
        torch.cuda.synchronize()
        for t in out:
            t.fill_(POISON)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            ops.constrained_beam_step(*positional, **options, backend=backend, out=out, validate=False)
        graph.replay()
        torch.cuda.synchronize()
        for a, b in zip(eager, out, strict=True):
            assert torch.equal(a, b), (backend, name)
        # A replay reads the inputs anew: new logits, new results.
        case["logits"].copy_(case["logits"].flip(2))
        expected = run(case, backend, poison=False)
        graph.replay()
        torch.cuda.synchronize()
        for a, b in zip(expected, out, strict=True):
            assert torch.equal(a, b), (backend, name, "replay")
        case["logits"].copy_(case["logits"].flip(2))


OPCHECK_PATHS = {
    # name: (U, B, V, K, nodes, dense, mask)
    "dense-mask": (5, 4, 32, 3, 20, True, True),
    "csr": (5, 4, 32, 3, 20, False, False),
    "csr-mask": (5, 6, 40, 7, 30, False, True),
    "workspace": (3, 8, 8192, 5, 10, False, True),  # 256 KB of keys per user: global workspace
}


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("path", OPCHECK_PATHS, ids=list(OPCHECK_PATHS))
def test_registered_kernels_and_opcheck_cuda(path, dtype):
    for op in ("genrec::constrained_beam_step", "genrec::constrained_beam_step_out"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
    U, B, V, K, nodes, dense, mask = OPCHECK_PATHS[path]
    case = to_device(_large_case(5, U, B, V, K, nodes, dense=dense, fill=0.8, mask=mask), "cuda")
    m = case["mask"]
    args = (
        case["logits"].to(dtype), case["beam_scores"], case["states"], case["row_ptr"], case["child_tokens"],
        case["dense"], *((m.offsets, m.nodes, m.allow) if m is not None else (None, None, None)), K,
    )  # fmt: skip
    torch.library.opcheck(torch.ops.genrec.constrained_beam_step.default, args)
    outs = tuple(ops.empty_beam_step(U, K, "cuda"))
    torch.library.opcheck(torch.ops.genrec.constrained_beam_step_out.default, (*args, *outs))
    expected = run({**case, "logits": case["logits"].to(dtype).float()}, Backend.REFERENCE, poison=False)
    for got, want in zip(outs, expected, strict=True):
        assert torch.equal(got, want), path


SMALL_SANITIZER_CASES = {
    # name: (U, B, V, K, nodes, dense, fill, mask): every kernel path at sizes a sanitizer runs quickly
    "csr-mask": (4, 5, 40, 6, 30, False, 0.7, True),
    "dense": (4, 3, 64, 8, 10, True, 1.0, False),
    "opt-in-shared": (2, 46, 256, 46, 40, False, 1.0, True),  # 48,448 B dynamic shared memory
    "workspace": (2, 8, 8192, 5, 10, False, 0.5, True),
    "empty-slots": (3, 2, 3, 20, 4, False, 0.5, False),
}


@pytest.mark.cuda
@pytest.mark.parametrize("name", SMALL_SANITIZER_CASES, ids=list(SMALL_SANITIZER_CASES))
def test_cuda_small_shapes_for_sanitizer(name):
    """Small, quick cases of every CUDA path; bench/gpu_check.sh runs these under compute-sanitizer."""
    U, B, V, K, nodes, dense, fill, mask = SMALL_SANITIZER_CASES[name]
    case = _large_case(13, U, B, V, K, nodes, dense=dense, fill=fill, mask=mask)
    expected = run(case, Backend.REFERENCE, poison=False)
    gpu = to_device(case, "cuda")
    for backend in CUDA_BACKENDS:
        got = run(gpu, backend)
        for field in BeamStep._fields:
            assert torch.equal(getattr(got, field).cpu(), getattr(expected, field)), (backend, field)


def _shuffled_mask_case(data, **limits):
    """A drawn case whose per-user mask lists are shuffled (and may repeat a node)."""
    case = draw_case(data, **limits)
    mask = case["mask"]
    if mask is None:
        return case
    seed = data.draw(st.integers(0, 2**31 - 1), label="shuffle seed")
    g = torch.Generator().manual_seed(seed)
    nodes = mask.nodes.clone()
    off = mask.offsets.tolist()
    for u in range(len(off) - 1):
        lo, hi = off[u], off[u + 1]
        if hi - lo > 1:
            nodes[lo:hi] = nodes[lo:hi][torch.randperm(hi - lo, generator=g)]
            if torch.rand(1, generator=g).item() < 0.3:
                nodes[hi - 1] = nodes[lo]
    case["mask"] = StepMask(mask.offsets, nodes, mask.allow)
    return case


def _unvalidated(case: dict, backend) -> BeamStep:
    positional, options = _positional_and_options(case)
    return ops.constrained_beam_step(*positional, **options, backend=backend, validate=False)


@pytest.mark.skipif(Backend.TRITON not in CPU_BACKENDS, reason="Triton cannot run on the CPU here")
@given(data=st.data())
@settings(max_examples=25)
def test_triton_unsorted_mask_lists_give_the_reference_result(data):
    """The op does not require sorted node lists without validation (the reference takes any order)."""
    case = _shuffled_mask_case(data, **_limits(Backend.TRITON))
    expected = _unvalidated(case, Backend.REFERENCE)
    assert_matches_reference(case, _unvalidated(case, Backend.TRITON), expected)


@pytest.mark.cuda
@given(data=st.data())
@settings(max_examples=40)
def test_cuda_unsorted_mask_lists_give_the_reference_result(data):
    case = _shuffled_mask_case(data)
    expected = _unvalidated(case, Backend.REFERENCE)
    for backend in CUDA_BACKENDS:
        assert_matches_reference(case, _unvalidated(to_device(case, "cuda"), backend), expected)


@pytest.mark.skipif(Backend.TRITON not in CPU_BACKENDS, reason="Triton cannot run on the CPU here")
@given(data=st.data())
@settings(max_examples=25)
def test_triton_rows_longer_than_a_chunk_match_reference(data):
    """Rows split into several vocabulary chunks (an online logsumexp, then the candidates), forced on
    small rows with 64-token chunks."""
    from genrec.triton_kernels.beam_step import constrained_beam_step_triton

    case = draw_case(data, max_users=3, max_beams=4, max_vocab=200, max_k=12)
    expected = run(case, Backend.REFERENCE, poison=False)
    m = case["mask"]
    args = (
        case["logits"], case["beam_scores"], case["states"], case["row_ptr"], case["child_tokens"], case["dense"],
        *((m.offsets, m.nodes, m.allow) if m is not None else (None, None, None)), case["beam_size"],
    )  # fmt: skip
    U, K = case["logits"].shape[0], case["beam_size"]
    out = tuple(
        torch.full((U, K), POISON, dtype=d) for d in (torch.long, torch.long, torch.float32, torch.int32)
    )
    got = BeamStep(*constrained_beam_step_triton(*args, out=out, max_block_v=64))
    assert not any((t == POISON).any() for t in got)
    assert_matches_reference(case, got, expected)


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as ``t`` in a non-contiguous view (every other element of a larger tensor)."""
    return torch.stack([t, torch.full_like(t, -7)], 1)[:, 0]


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *CPU_BACKENDS], ids=lambda b: b.value)
def test_non_contiguous_trie_and_mask_arrays(backend):
    g = torch.Generator().manual_seed(21)
    row_ptr, child_tokens, _ = random_level(g, 6, 12, empty_rate=0.0)
    U, B, K = 3, 4, 9
    case = dict(
        logits=torch.randn(U, B, 12, generator=g),
        beam_scores=-torch.rand(U, B, generator=g),
        states=torch.randint(0, 6, (U, B), generator=g, dtype=torch.int32),
        row_ptr=row_ptr,
        child_tokens=child_tokens,
        dense=None,
        mask=StepMask(torch.tensor([0, 3, 3, 8]), torch.tensor([1, 5, 9, 0, 2, 4, 6, 8], dtype=torch.int32),
                      torch.tensor([False, True, True])),
        beam_size=K,
    )  # fmt: skip
    expected = run(case, Backend.REFERENCE, poison=False)
    m = case["mask"]
    strided = {
        **case,
        "row_ptr": _strided(row_ptr),
        "child_tokens": _strided(child_tokens),
        "mask": StepMask(_strided(m.offsets), _strided(m.nodes), _strided(m.allow)),
    }
    assert not strided["child_tokens"].is_contiguous() and not strided["mask"].nodes.is_contiguous()
    assert_matches_reference(case, run(strided, backend), expected)


def test_auto_on_a_gpu_falls_back_to_a_gpu_backend_that_takes_the_shape():
    from genrec.ops.beam_step import pick_for_shape, shape_limit

    gpu = (Backend.CUDA, Backend.TRITON, Backend.REFERENCE)
    assert pick_for_shape(gpu, 20, 256, 20) is Backend.CUDA
    assert pick_for_shape(gpu, 1025, 256, 20) is Backend.TRITON  # more beams than the CUDA kernel takes
    assert pick_for_shape(gpu, 20, 256, 1025) is Backend.REFERENCE  # above both kernels' beam_size
    assert pick_for_shape(gpu, 1024, 2**18 + 1, 20) is Backend.TRITON  # beams * vocab > 2^28
    assert pick_for_shape((Backend.CUDA, Backend.REFERENCE), 2000, 4, 2) is Backend.REFERENCE
    assert "cpp" not in (shape_limit(Backend.CUDA, 2000, 4, 2) or "")
    assert shape_limit(Backend.CPP, 5000, 5000, 5000) is None


@pytest.mark.cuda
def test_auto_on_cuda_takes_more_than_1024_beams_and_explicit_cuda_says_what_can():
    case = to_device(_large_case(17, 2, 1100, 8, 30, 50, dense=False, fill=1.0, mask=False), "cuda")
    expected = run(case, Backend.REFERENCE, poison=False)
    got = run(case, Backend.AUTO)
    for field in ("tokens", "parents", "states", "scores"):
        assert torch.equal(getattr(got, field), getattr(expected, field)), field
    with pytest.raises(BackendUnavailableError, match="use backend 'triton' or 'reference'"):
        run(case, Backend.CUDA)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_kernels_run_on_the_tensors_gpu_not_the_current_one():
    case = _large_case(19, 64, 20, 256, 20, 300, dense=False, fill=0.5, mask=True)
    expected = run(case, Backend.REFERENCE, poison=False)
    on_second = to_device(case, "cuda:1")
    with torch.cuda.device(0):
        for backend in CUDA_BACKENDS:
            got = run(on_second, backend)
            torch.cuda.synchronize(1)
            for field in BeamStep._fields:
                assert getattr(got, field).device == torch.device("cuda:1")
                assert torch.equal(getattr(got, field).cpu(), getattr(expected, field)), (backend, field)


@pytest.mark.cuda
def test_cuda_refuses_beams_beyond_its_limits():
    U, B, V = 1, 1025, 4
    with pytest.raises(RuntimeError, match=r"at most 1024 input beams.*use backend 'triton'"):
        torch.ops.genrec.constrained_beam_step(
            torch.zeros(U, B, V, device="cuda"), torch.zeros(U, B, device="cuda"),
            torch.zeros(U, B, dtype=torch.int32, device="cuda"), torch.tensor([0, 0], dtype=torch.int32, device="cuda"),
            torch.zeros(0, dtype=torch.int32, device="cuda"), None, None, None, None, 2,
        )  # fmt: skip
