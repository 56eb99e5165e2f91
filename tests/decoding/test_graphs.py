"""GraphedBeamSearch: the same results as beam_search, captured once and replayed on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.decoding import GraphedBeamSearch, TrieIndex, beam_search
from tests.decoding.helpers import PrefixModel, random_codes

SIZES = [8, 8, 8, 3]


class BatchModel:
    """Logits looked up from (a per-user key in the batch, prefix), built from a batch dict the way
    ``model.step_fn(batch, beam_size)`` is. Indexing only (no matrix products whose summation order
    could change with the batch size), no host synchronisation: graphed and eager runs, padded or
    not, compute bit-identical logits."""

    def __init__(self, sizes, seed=0, device="cpu", rows=4093):
        g = torch.Generator().manual_seed(seed)
        self.tables = [(torch.randn(rows, v, generator=g) * 3).to(device) for v in sizes]
        self.rows = rows

    def step_fn(self, batch):
        key = batch["x"].long() * 1000003 + 17  # (U,): the "encoder", once per user

        def step(prefix, parents):
            U, B, t = prefix.shape
            h = key[:, None].expand(U, B)
            for i in range(t):
                h = (h * 31 + prefix[:, :, i] + 7) % 1_000_000_007
            return self.tables[t][h % self.rows]

        return step


def test_eager_mode_on_cpu_equals_beam_search_and_chunks_large_batches():
    codes = random_codes(400, SIZES, seed=0)
    index = TrieIndex.from_codes(codes, level_sizes=SIZES)
    model = BatchModel(SIZES)
    x = torch.randint(0, 10**6, (10,))
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
        search({"x": torch.randint(0, 9, (3,)), "y": torch.randint(0, 9, (2,))})


@pytest.mark.cuda
def test_graph_replays_equal_eager_for_new_batches_and_masks():
    sizes = [16, 16, 16, 3]  # room for 3,000 distinct IDs (SIZES holds 1,536)
    codes = random_codes(3000, sizes, seed=2)
    index = TrieIndex.from_codes(codes, level_sizes=sizes).to("cuda")
    model = BatchModel(sizes, device="cuda")
    search = GraphedBeamSearch(model.step_fn, index, num_users=256, beam_size=20, top_k=10)
    eager = GraphedBeamSearch(model.step_fn, index, num_users=256, beam_size=20, top_k=10, use_graph=False)
    g = torch.Generator().manual_seed(3)
    for users, masked in ((256, False), (256, False), (100, True), (700, True), (256, False)):
        x = torch.randint(0, 10**6, (users,), generator=g).cuda()
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
        if int(batch["x"].max()) < 0:  # reads a device value on the host
            raise AssertionError
        return model.step_fn(batch)

    search = GraphedBeamSearch(syncing, index, num_users=32, beam_size=8)
    x = torch.randint(0, 10**6, (32,), device="cuda")
    got = search({"x": x})
    assert not search.graphed and "synchronis" in search.fallback_reason
    expected = beam_search(model.step_fn({"x": x}), index, 32, 8)
    assert torch.equal(got.items, expected.items)
    # PrefixModel asserts on device values too: also falls back, same results.
    pm = PrefixModel(32, SIZES, 6)
    search = GraphedBeamSearch(lambda b: pm.step_fn(device="cuda"), index, num_users=32, beam_size=8)
    assert search({"x": x}).items.shape == (32, 8) and not search.graphed


def test_static_buffers_and_padding_give_the_unpadded_results():
    """What a replay computes, run eagerly on the CPU: inputs and masks copied into fixed-size
    buffers (users padded by repeating the first, mask lists in a larger buffer, allow flags of
    padding users cleared) decode each real user exactly as the unpadded search does."""
    from genrec.decoding.graphs import _copy_rows, _fill_masks
    from genrec.decoding.masks import RequestMasks

    codes = random_codes(700, SIZES, seed=7)
    index = TrieIndex.from_codes(codes, level_sizes=SIZES)
    model = BatchModel(SIZES, seed=8)
    search = GraphedBeamSearch(model.step_fn, index, num_users=16, beam_size=9, top_k=7)
    g = torch.Generator().manual_seed(9)
    static = {"x": torch.zeros(16, dtype=torch.long)}
    capacity = 256
    static_masks = RequestMasks(
        torch.zeros(4, 17, dtype=torch.long),
        [torch.full((capacity,), 999_999, dtype=torch.int32) for _ in range(4)],
        torch.ones(16, dtype=torch.bool),
    )
    for users, kind in ((11, "exclude"), (16, "allow"), (5, None), (3, "both")):
        x = torch.randint(0, 10**6, (users,), generator=g)
        exclude = [torch.randint(0, 700, (20,), generator=g).tolist() for _ in range(users)]
        allow = [torch.randint(0, 700, (30,), generator=g).tolist() if u % 2 else None for u in range(users)]
        kwargs = {"exclude": exclude if kind in ("exclude", "both") else None}
        kwargs["allow"] = allow if kind in ("allow", "both") else None
        masks = RequestMasks.build(index, users, **kwargs)
        _copy_rows(static["x"], x)
        _fill_masks(static_masks, masks, users)
        got = search._eager(static, static_masks, 16)
        expected = beam_search(model.step_fn({"x": x}), index, users, 9, 7, **kwargs)
        assert torch.equal(got.items[:users], expected.items)
        assert torch.equal(got.scores[:users], expected.scores)
        # Padding users decode like user 0 without its masks.
        plain = beam_search(model.step_fn({"x": x[:1]}), index, 1, 9, 7)
        assert all(torch.equal(got.items[u], plain.items[0]) for u in range(users, 16))


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_graph_on_a_gpu_that_is_not_current_replays_new_batches():
    """Index on cuda:1 while cuda:0 is current: the graph must record the kernels (on cuda:1's stream),
    so each replay decodes its own batch instead of returning the capture-time results."""
    codes = random_codes(2000, SIZES, seed=11)
    index = TrieIndex.from_codes(codes, level_sizes=SIZES).to("cuda:1")
    model = BatchModel(SIZES, device="cuda:1")
    g = torch.Generator().manual_seed(12)
    with torch.cuda.device(0):
        search = GraphedBeamSearch(model.step_fn, index, num_users=64, beam_size=10, top_k=5)
        eager = GraphedBeamSearch(model.step_fn, index, num_users=64, beam_size=10, top_k=5, use_graph=False)
        seen = []
        for _ in range(3):
            x = torch.randint(0, 10**6, (64,), generator=g)
            got = search({"x": x})
            assert search.graphed, search.fallback_reason
            expected = eager({"x": x})
            assert got.items.device == torch.device("cuda:1")
            assert torch.equal(got.items, expected.items) and torch.equal(got.scores, expected.scores)
            seen.append(got.items.cpu())
        assert not torch.equal(seen[0], seen[1]), "the replays returned the capture-time results"


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["item_decoder", "tiger"])
def test_graphed_recommender_equals_eager_on_every_batch(kind):
    # One captured graph serves every later batch: a model that kept anything from the capture batch
    # in Python (the item decoder's history states did) decodes the first batch right and the rest wrong.
    models = pytest.importorskip("genrec.models")
    from genrec.serve.beam import BeamSearchRecommender

    sizes = [16, 16, 16, 4]
    num_items = 2000
    codes = random_codes(num_items, sizes, seed=5).numpy()
    torch.manual_seed(0)
    if kind == "tiger":
        model = models.Tiger(sizes, max_history=8, dropout=0.0)
    else:
        model = models.ItemDecoder(sizes, max_history=8, d_model=32, num_layers=1, num_heads=2, head_dim=16,
                                   d_ff=64, num_items=num_items, item_loss=1.0, item_negatives=8)  # fmt: skip
    model = model.cuda().eval()
    rng = torch.Generator().manual_seed(1)
    histories = [torch.randint(0, num_items, (int(n),), generator=rng).numpy()
                 for n in torch.randint(1, 12, (300,), generator=rng)]  # fmt: skip
    lists = {}
    for graphs in (False, True):
        rec = BeamSearchRecommender(model, codes, beam_size=10, batch_users=64, device="cuda",
                                    cuda_graphs=graphs, exclude_history=True)  # fmt: skip
        lists[graphs] = rec.topk(histories, 10)
        if graphs:
            searches = list(rec._graphed.values())
            assert searches and searches[0].graphed, searches and searches[0].fallback_reason
    np.testing.assert_array_equal(lists[True][0], lists[False][0])
    np.testing.assert_allclose(lists[True][1], lists[False][1], atol=1e-4)


@pytest.mark.cuda
def test_own_token_attention_takes_more_queries_than_a_cuda_grid_dimension():
    # 8,192 users x 20 beams: one scaled_dot_product_attention call over users x beams fails there.
    from genrec.models.layers import attend_own

    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(8192, 20, 2, 8, device="cuda", generator=g)
    k, v = (torch.randn(8192, 20, 2, 3, 8, device="cuda", generator=g) for _ in range(2))
    got = attend_own(q, (k, v))
    ref = torch.softmax((q[:, :, :, None, :] * k).sum(-1) / 8**0.5, dim=-1)[..., None] * v
    torch.testing.assert_close(got, ref.sum(-2), rtol=1e-4, atol=1e-5)
