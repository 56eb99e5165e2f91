"""beam_search: exact against exhaustive scoring when the beam covers the catalogue, only valid
items always, per-request masks, and the step contract (one beam first, parents, fixed shapes)."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.decoding import TrieIndex, beam_search
from genrec.ops import Backend
from tests.decoding.helpers import PrefixModel, random_codes
from tests.ops.helpers import backends_under_test

BACKENDS = [Backend.REFERENCE, *backends_under_test("constrained_beam_step", "cpu")]
HAS_CUDA = torch.cuda.is_available()
TOL = 1e-4  # float32 accumulation of a few log-probabilities against the float64 truth


def draw_catalogue(data, *, max_items=120, max_levels=4, max_vocab=8):
    levels = data.draw(st.integers(1, max_levels), label="levels")
    sizes = [data.draw(st.integers(1, max_vocab), label=f"V{t}") for t in range(levels)]
    space = math.prod(sizes)
    n = data.draw(st.integers(1, min(space, max_items)), label="N")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    return random_codes(n, sizes, seed), sizes, seed


def item_lists(data, users: int, n: int, label: str, *, none_ok: bool):
    lists = []
    for u in range(users):
        if none_ok and data.draw(st.booleans(), label=f"{label}{u} none"):
            lists.append(None)
        else:
            lists.append(data.draw(st.lists(st.integers(0, n - 1), max_size=min(n, 12)), label=f"{label}{u}"))
    return lists


def assert_ranking(items, scores, exhaustive, top_k, allowed=None):
    """``items``/``scores`` [U, top_k] are the exhaustive top-k of the allowed items, up to near-ties."""
    U, N = exhaustive.shape
    if allowed is None:
        allowed = torch.ones(U, N, dtype=torch.bool)
    for u in range(U):
        ex = torch.where(allowed[u], exhaustive[u], -math.inf)
        order = torch.argsort(ex, descending=True, stable=True)
        n = min(top_k, int(allowed[u].sum()))
        got = items[u, :n]
        assert items[u, n:].tolist() == [-1] * (top_k - n)
        assert bool((scores[u, n:] == -math.inf).all())
        assert len(set(got.tolist())) == n and bool((got >= 0).all())
        assert bool(allowed[u, got].all()), "an excluded or unlisted item was returned"
        # Each returned score is that item's true score, and position by position the true scores
        # equal the exhaustive ranking's (so the items are its top-k, in its order, up to near-ties).
        assert torch.allclose(scores[u, :n].double(), ex[got], atol=TOL)
        assert torch.allclose(ex[got], ex[order[:n]], atol=TOL)
        exact = [i for i in range(n) if int(got[i]) == int(order[i])]
        gaps = ex[order[: n + 1]].diff().abs() if n else torch.zeros(0)
        if n and bool((gaps > TOL).all()):
            assert len(exact) == n, "no near-ties, so the ranking must be exactly the exhaustive one"


def _limits(backend):
    if backend is Backend.TRITON and not HAS_CUDA:
        return {"max_items": 40, "max_levels": 3, "max_vocab": 5}
    return {}


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.value)
@given(data=st.data())
@settings(max_examples=40)
def test_full_beam_gives_the_exhaustive_ranking(backend, data):
    if backend is Backend.TRITON and not HAS_CUDA and data.draw(st.integers(0, 3)) > 0:
        return  # the interpreter is slow: a quarter of the draws
    codes, sizes, seed = draw_catalogue(data, **_limits(backend))
    n = codes.shape[0]
    users = data.draw(st.integers(1, 3), label="U")
    top_k = data.draw(st.integers(1, n + 3), label="top_k")
    beam = data.draw(st.integers(n, n + 5), label="beam")
    index = TrieIndex.from_codes(
        codes, level_sizes=sizes, dense_max_entries=data.draw(st.sampled_from([0, 1 << 20]))
    )
    model = PrefixModel(users, sizes, seed + 1)
    items, scores = beam_search(model.step_fn(), index, users, beam, top_k, backend=backend)
    assert items.shape == (users, top_k) and items.dtype == torch.long and scores.dtype == torch.float32
    assert model.calls == len(sizes)
    assert_ranking(items, scores, model.exhaustive(codes), top_k)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.value)
@given(data=st.data())
@settings(max_examples=30)
def test_masks_give_the_exhaustive_ranking_of_the_allowed_items(backend, data):
    if backend is Backend.TRITON and not HAS_CUDA and data.draw(st.integers(0, 3)) > 0:
        return
    codes, sizes, seed = draw_catalogue(data, **_limits(backend))
    n = codes.shape[0]
    users = data.draw(st.integers(1, 3), label="U")
    exclude = item_lists(data, users, n, "exclude", none_ok=True)
    allow = item_lists(data, users, n, "allow", none_ok=True) if data.draw(st.booleans()) else None
    top_k = data.draw(st.integers(1, n + 2), label="top_k")
    index = TrieIndex.from_codes(codes, level_sizes=sizes)
    model = PrefixModel(users, sizes, seed + 2)
    items, scores = beam_search(
        model.step_fn(), index, users, n, top_k, backend=backend, exclude=exclude, allow=allow
    )
    allowed = torch.ones(users, n, dtype=torch.bool)
    for u in range(users):
        if allow is not None and allow[u] is not None:
            allowed[u] = False
            allowed[u, allow[u]] = True
        if exclude[u]:
            allowed[u, exclude[u]] = False
    assert_ranking(items, scores, model.exhaustive(codes), top_k, allowed)


@given(data=st.data())
@settings(max_examples=150)
def test_small_beams_return_only_valid_items(data):
    codes, sizes, seed = draw_catalogue(data, max_items=400, max_levels=4, max_vocab=12)
    n = codes.shape[0]
    users = data.draw(st.integers(1, 4), label="U")
    beam = data.draw(st.integers(1, 6), label="beam")
    top_k = data.draw(st.integers(1, 8), label="top_k")
    exclude = item_lists(data, users, n, "exclude", none_ok=True) if data.draw(st.booleans()) else None
    index = TrieIndex.from_codes(codes, level_sizes=sizes)
    model = PrefixModel(users, sizes, seed + 3)
    items, scores = beam_search(model.step_fn(), index, users, beam, top_k, exclude=exclude)
    exhaustive = model.exhaustive(codes)
    for u in range(users):
        got = items[u][items[u] >= 0]
        k = got.numel()
        assert items[u, k:].tolist() == [-1] * (top_k - k), "-1 only after the found items"
        assert bool((got < n).all()) and len(set(got.tolist())) == k
        if exclude is not None and exclude[u]:
            assert not set(got.tolist()) & set(exclude[u])
        # The score is the item's own total log-probability: the search followed its real ID.
        assert torch.allclose(scores[u, :k].double(), exhaustive[u, got], atol=TOL)
        assert bool((scores[u, :k].diff() <= 0).all())
        if exclude is None or not exclude[u]:
            assert k >= 1, "without exclusions the best beam always reaches an item"


def test_top_k_beyond_beam_size_and_everything_excluded():
    codes = random_codes(60, [4, 4, 4], seed=11)
    index = TrieIndex.from_codes(codes)
    model = PrefixModel(2, [4, 4, 4], 12)
    items, scores = beam_search(model.step_fn(), index, 2, beam_size=3, top_k=10)
    assert items.shape == (2, 10) and bool((items[:, :3] >= 0).all())
    everything = [list(range(60)), None]
    items, scores = beam_search(PrefixModel(2, [4, 4, 4], 12).step_fn(), index, 2, 5, exclude=everything)
    assert (
        items[0].tolist() == [-1] * 5 and bool((scores[0] == -math.inf).all()) and bool((items[1] >= 0).all())
    )
    items, _ = beam_search(PrefixModel(2, [4, 4, 4], 12).step_fn(), index, 2, 5, allow=[[], [7]])
    assert items.tolist() == [[-1] * 5, [7, -1, -1, -1, -1]]


def test_exclude_formats_agree_and_bad_lists_are_refused():
    codes = random_codes(80, [5, 4, 4], seed=13)
    index = TrieIndex.from_codes(codes)
    lists = [[3, 9, 9, 40], [], [0]]
    padded = torch.tensor([[3, 9, 9, 40], [-1, -1, -1, -1], [0, -1, -1, -1]])
    a = beam_search(PrefixModel(3, [5, 4, 4], 1).step_fn(), index, 3, 80, 80, exclude=lists)
    b = beam_search(PrefixModel(3, [5, 4, 4], 1).step_fn(), index, 3, 80, 80, exclude=padded)
    assert torch.equal(a.items, b.items)
    assert not {3, 9, 40} & set(a.items[0].tolist()) and 0 not in a.items[2].tolist()
    with pytest.raises(ValueError, match="catalogue has 80 items"):
        beam_search(PrefixModel(3, [5, 4, 4], 1).step_fn(), index, 3, 4, exclude=[[80], [], []])
    with pytest.raises(ValueError, match="one list per user"):
        beam_search(PrefixModel(3, [5, 4, 4], 1).step_fn(), index, 3, 4, exclude=[[1]])
    with pytest.raises(ValueError, match=r"\[num_users = 3, max_items\]"):
        beam_search(
            PrefixModel(3, [5, 4, 4], 1).step_fn(), index, 3, 4, allow=torch.zeros(2, 2, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="negative item index"):
        beam_search(PrefixModel(3, [5, 4, 4], 1).step_fn(), index, 3, 4, allow=[[-2], None, None])


def test_step_fn_mistakes_get_clear_errors():
    index = TrieIndex.from_codes(random_codes(30, [4, 4, 4], seed=14))
    with pytest.raises(ValueError, match=r"expected \[users, beams, level_sizes\[0\]\] = \[2, 1, 4\]"):
        beam_search(lambda prefix, parents: torch.zeros(2, 1, 5), index, 2, 3)
    with pytest.raises(TypeError, match="tensor of logits"):
        beam_search(lambda prefix, parents: None, index, 2, 3)
    with pytest.raises(ValueError, match="beam_size must be a positive int"):
        beam_search(lambda prefix, parents: None, index, 2, 0)
    with pytest.raises(TypeError, match="TrieIndex"):
        beam_search(lambda prefix, parents: None, "index", 2, 3)


def test_timer_sees_every_model_call_and_select():
    index = TrieIndex.from_codes(random_codes(50, [4, 4, 4], seed=15))
    seen = []

    @contextlib.contextmanager
    def timer(name):
        seen.append(name)
        yield

    beam_search(PrefixModel(2, [4, 4, 4], 3).step_fn(), index, 2, 4, timer=timer)
    assert seen == ["model", "select"] * 3


def test_tiger_model_decodes_the_exhaustive_ranking():
    """The real TIGER model's cached step function through the loop equals scoring every item by a
    full teacher-forced forward pass: the cache is reordered through parents correctly."""
    models = pytest.importorskip("genrec.models")
    torch.manual_seed(0)
    sizes = [6, 5, 3]
    codes = random_codes(50, sizes, seed=16)
    index = TrieIndex.from_codes(codes, level_sizes=sizes)
    model = models.Tiger(
        sizes, max_history=5, d_model=32, encoder_layers=1, decoder_layers=2, num_heads=2, head_dim=16, d_ff=64,
        dropout=0.0,
    ).eval()  # fmt: skip
    U = 3
    history = codes[torch.randint(0, 50, (U, 5))]
    history_len = torch.tensor([5, 2, 1])
    batch = {"history": history, "history_len": history_len}
    items, scores = beam_search(model.step_fn(batch, 50), index, U, 50, 10)
    with torch.no_grad():
        N = codes.shape[0]
        full = {
            "history": history.repeat_interleave(N, 0),
            "history_len": history_len.repeat_interleave(N),
            "target": codes.repeat(U, 1),
        }
        logits = model(full)
        total = sum(
            torch.log_softmax(lg.double(), -1).gather(1, codes.repeat(U, 1)[:, t : t + 1]).squeeze(1)
            for t, lg in enumerate(logits)
        )
    assert_ranking(items, scores, total.view(U, N), 10)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["auto", "cuda", "triton", "reference"])
def test_cuda_search_equals_cpu(backend):
    codes = random_codes(3000, [16, 16, 16, 4], seed=17)
    sizes = [16, 16, 16, 4]
    cpu_index = TrieIndex.from_codes(codes, level_sizes=sizes)
    gpu_index = cpu_index.to("cuda")
    exclude = [list(range(u, 3000, 97)) for u in range(64)]
    # Bit-identical scores in every backend (see PrefixModel(exact=True)), so results must be equal.
    expected = beam_search(
        PrefixModel(64, sizes, 18, exact=True).step_fn(), cpu_index, 64, 20, 20, exclude=exclude
    )
    model = PrefixModel(64, sizes, 18, exact=True)
    got = beam_search(model.step_fn(device="cuda"), gpu_index, 64, 20, 20, backend=backend, exclude=exclude)
    assert torch.equal(got.items.cpu(), expected.items)
    assert torch.equal(got.scores.cpu(), expected.scores)
