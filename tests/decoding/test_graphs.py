"""GraphedBeamSearch: the same results as beam_search, captured once and replayed on CUDA."""

from __future__ import annotations

import pytest
import torch

from genrec.decoding import GraphedBeamSearch, TrieIndex, beam_search
from tests.decoding.helpers import PrefixModel, random_codes

SIZES = [8, 8, 8, 3]


class BatchModel:
    """A model whose logits depend on a per-user input vector and the prefix, built from a batch dict
    the way ``model.step_fn(batch, beam_size)`` is (and with no host synchronisation)."""

    def __init__(self, sizes, seed=0, device="cpu"):
        g = torch.Generator().manual_seed(seed)
        self.emb = [torch.randn(v, 16, generator=g).to(device) for v in sizes]
        self.out = [torch.randn(16, v, generator=g).to(device) for v in sizes]
        self.proj = torch.randn(4, 16, generator=g).to(device)

    def step_fn(self, batch):
        h0 = torch.tanh(batch["x"] @ self.proj)  # (U, 16): the "encoder", once per user

        def step(prefix, parents):
            U, B, t = prefix.shape
            h = h0[:, None, :].expand(U, B, 16)
            for i in range(t):
                h = torch.tanh(h + self.emb[i][prefix[:, :, i]])
            return (h @ self.out[t]) * 3

        return step


def test_eager_mode_on_cpu_equals_beam_search_and_chunks_large_batches():
    codes = random_codes(400, SIZES, seed=0)
    index = TrieIndex.from_codes(codes, level_sizes=SIZES)
    model = BatchModel(SIZES)
    x = torch.randn(10, 4)
    search = GraphedBeamSearch(model.step_fn, index, num_users=4, beam_size=6, top_k=5)
    assert not search.use_graph
    exclude = [list(range(u, 400, 7)) for u in range(10)]
    got = search({"x": x}, exclude=exclude)
    assert not search.graphed and search.fallback_reason == "graphs disabled"
    expected = beam_search(model.step_fn({"x": x}), index, 10, 6, 5, exclude=exclude)
    assert torch.equal(got.items, expected.items) and torch.equal(got.scores, expected.scores)


def test_graphs_need_a_cuda_index_and_consistent_inputs():
    index = TrieIndex.from_codes(random_codes(50, SIZES, seed=1), level_sizes=SIZES)
    with pytest.raises(ValueError, match="need the index on a CUDA device"):
        GraphedBeamSearch(BatchModel(SIZES).step_fn, index, num_users=4, beam_size=3, use_graph=True)
    search = GraphedBeamSearch(BatchModel(SIZES).step_fn, index, num_users=4, beam_size=3)
    with pytest.raises(ValueError, match="disagree on the number of users"):
        search({"x": torch.randn(3, 4), "y": torch.randn(2, 4)})


@pytest.mark.cuda
def test_graph_replays_equal_eager_for_new_batches_and_masks():
    codes = random_codes(3000, SIZES, seed=2)
    index = TrieIndex.from_codes(codes, level_sizes=SIZES).to("cuda")
    model = BatchModel(SIZES, device="cuda")
    search = GraphedBeamSearch(model.step_fn, index, num_users=256, beam_size=20, top_k=10)
    eager = GraphedBeamSearch(model.step_fn, index, num_users=256, beam_size=20, top_k=10, use_graph=False)
    g = torch.Generator().manual_seed(3)
    for users, masked in ((256, False), (256, False), (100, True), (700, True), (256, False)):
        x = torch.randn(users, 4, generator=g).cuda()
        exclude = (
            [torch.randint(0, 3000, (30,), generator=g).tolist() for _ in range(users)] if masked else None
        )
        got = search({"x": x}, exclude=exclude)
        assert search.graphed, search.fallback_reason
        expected = eager({"x": x}, exclude=exclude)
        assert torch.equal(got.items, expected.items) and torch.equal(got.scores, expected.scores)
        assert got.items.shape == (users, 10)


@pytest.mark.cuda
def test_graphed_tiger_model_equals_eager():
    models = pytest.importorskip("genrec.models")
    sizes = [16, 16, 16, 4]
    codes = random_codes(2000, sizes, seed=4)
    index = TrieIndex.from_codes(codes, level_sizes=sizes).to("cuda")
    torch.manual_seed(0)
    model = models.Tiger(sizes, max_history=8, user_buckets=100, dropout=0.0).cuda().eval()
    U = 128
    history = codes[torch.randint(0, 2000, (U, 8))].cuda()
    batch = {
        "history": history,
        "history_len": torch.randint(1, 9, (U,)).cuda(),
        "user_ids": torch.arange(U).cuda(),
    }
    search = GraphedBeamSearch(lambda b: model.step_fn(b, 20), index, num_users=U, beam_size=20)
    got = search(batch)
    expected = beam_search(model.step_fn(batch, 20), index, U, 20)
    assert torch.equal(got.items, expected.items)
    assert torch.allclose(got.scores, expected.scores, atol=1e-5)
    if not search.graphed:
        pytest.fail(f"the TIGER step function could not be captured: {search.fallback_reason}")


@pytest.mark.cuda
def test_a_step_function_that_syncs_falls_back_to_eager():
    codes = random_codes(500, SIZES, seed=5)
    index = TrieIndex.from_codes(codes, level_sizes=SIZES).to("cuda")
    model = BatchModel(SIZES, device="cuda")

    def syncing(batch):
        if float(batch["x"].abs().max()) > 100:  # reads a device value on the host
            raise AssertionError
        return model.step_fn(batch)

    search = GraphedBeamSearch(syncing, index, num_users=32, beam_size=8)
    x = torch.randn(32, 4, device="cuda")
    got = search({"x": x})
    assert not search.graphed and "synchronis" in search.fallback_reason
    expected = beam_search(model.step_fn({"x": x}), index, 32, 8)
    assert torch.equal(got.items, expected.items)
    # PrefixModel asserts on device values too: also falls back, same results.
    pm = PrefixModel(32, SIZES, 6)
    search = GraphedBeamSearch(lambda b: pm.step_fn(device="cuda"), index, num_users=32, beam_size=8)
    assert search({"x": x}).items.shape == (32, 8) and not search.graphed
