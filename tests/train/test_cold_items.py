"""Cold items in the generative recommender (issue 15): content vectors in the ItemDecoder, cold
candidates in the fusion (a beam search restricted to them, the item head's best of them), the
epsilon cap, and the tuning that keeps warm-target accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.fusion import Candidates, Fusion, FusionWeights
from genrec.fusion_tuning import COLD_EPSILONS, cold_share_cap, ranking_hits, tune_cold
from genrec.models import ItemDecoder
from genrec.serve.beam import BeamSearchRecommender
from tests.train.helpers import item_decoder, synthetic_world

N = 24
COLD = np.array([3, 7, 11, 19])


def content_decoder(level_sizes, num_items=N, content_dim=5, dropout=0.5, seed=0):
    model = item_decoder(
        level_sizes, num_items, seed=seed, item_negatives=8, content_dim=content_dim, content_dropout=dropout
    )
    rng = np.random.default_rng(seed)
    trained = np.ones(num_items, dtype=bool)
    trained[COLD[num_items > COLD]] = False
    model.set_item_content(rng.standard_normal((num_items, content_dim)).astype(np.float32), trained)
    with torch.no_grad():  # a visible content projection (item_decoder made the free vectors visible)
        model.content_proj.weight.normal_(0, 1.0)
    return model


def test_item_vectors_are_free_plus_content_and_cold_items_have_only_content():
    _, _, _codes, level_sizes = synthetic_world(num_items=N)
    model = content_decoder(level_sizes)
    content = model.content_proj(model.item_content)
    expected = model.item_emb.weight * model.item_trained[:, None] + content
    torch.testing.assert_close(model.item_vectors(), expected)
    torch.testing.assert_close(model.item_vectors()[COLD], content[COLD])
    idx = torch.tensor([[3, 4], [0, 19]])
    torch.testing.assert_close(model.item_vectors(idx), expected[idx])
    keep = torch.zeros(N, dtype=torch.bool)
    torch.testing.assert_close(model.item_vectors(None, keep), content)  # every free part dropped
    assert model.item_content.norm(dim=1).sub(1).abs().max() < 1e-5  # rows normalised


def test_training_never_moves_a_cold_items_free_embedding():
    _, _flat, codes, level_sizes = synthetic_world(num_items=N)
    model = content_decoder(level_sizes).train()
    codes_t = torch.as_tensor(codes)
    window_items = torch.randint(0, N, (8, 7))
    batch = {"window": codes_t[window_items], "window_len": torch.full((8,), 7), "window_items": window_items}
    loss, _ = model.loss_terms(batch)
    loss.backward()
    grad = model.item_emb.weight.grad
    assert grad[COLD].abs().max() == 0
    assert grad[np.setdiff1d(np.arange(N), COLD)].abs().sum() > 0
    assert model.content_proj.weight.grad.abs().sum() > 0


def test_content_dropout_draws_a_keep_mask_only_in_training():
    _, _, _, level_sizes = synthetic_world(num_items=N)
    model = content_decoder(level_sizes, dropout=0.5).train()
    torch.manual_seed(3)
    keep = model._free_vector_keep("cpu")
    assert keep.dtype == torch.bool and 0 < int(keep.sum()) < N
    assert model.eval()._free_vector_keep("cpu") is None


def test_added_items_score_by_content_and_leave_the_others_unchanged():
    _, _, _codes, level_sizes = synthetic_world(num_items=N)
    model = content_decoder(level_sizes)
    before = model.item_vectors().clone()
    new = torch.randn(3, 5)
    model.add_items(new)
    assert model.num_items == N + 3 and model.item_emb.weight.shape[0] == N + 3
    after = model.item_vectors()
    torch.testing.assert_close(after[:N], before)
    torch.testing.assert_close(after[N:], model.content_proj(new / new.norm(dim=1, keepdim=True)))
    assert not model.item_trained[N:].any() and model.cold_items()[N:].all()
    with pytest.raises(ValueError, match="content"):
        model.add_items(torch.randn(2, 4))


def test_set_item_content_checks_shapes_and_values():
    _, _, _, level_sizes = synthetic_world(num_items=N)
    model = content_decoder(level_sizes)
    with pytest.raises(ValueError, match=r"\[24, 5\]"):
        model.set_item_content(np.zeros((N, 4), np.float32), np.ones(N, bool))
    bad = np.zeros((N, 5), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.set_item_content(bad, np.ones(N, bool))


# ---- the cap and the cold terms of the fused score ----
def reference_top(items, seq, head, cold, w: FusionWeights, k: int, sim=None):
    """Brute force: score each candidate, sort (stable, best first), then leave out the cold items
    past the cap; -inf slots are empty. Sums in float32 in the fusion's order, so that ties are the
    fusion's ties."""
    f = np.float32
    out = []
    for r in range(items.shape[0]):
        rows = []
        for j in range(items.shape[1]):
            if items[r, j] < 0:
                continue
            rest = f(w.head_weight) * f(head[r, j])
            if sim is not None and w.sim_weight:
                rest = rest + f(w.sim_weight) * f(sim[r, j])
            if cold[r, j]:
                s = f(seq[r, j]) * f(w.cold_seq_weight) + rest + f(w.cold_bias)
                s = s + f(w.cold_sim_weight) * f(sim[r, j])
            else:
                s = f(seq[r, j]) + rest
            rows.append((s, j))
        rows.sort(key=lambda x: -x[0])  # Python's sort is stable: ties keep the column order
        cap = math.ceil(w.cold_epsilon * k - 1e-9)
        kept, seen = [], 0
        for _s, j in rows:
            if cold[r, j]:
                seen += 1
                if seen <= cap:
                    kept.append(j)
            else:
                kept.append(j)
        chosen = kept[:k]
        out.append([int(items[r, j]) for j in chosen] + [-1] * (k - len(chosen)))
    return np.array(out)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 8),
    eps=st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5, 1.0]),
    bias=st.sampled_from([-3.0, 0.0, 2.5]),
    cold_seq=st.sampled_from([0.0, 0.5, 1.0]),
    sim_weight=st.sampled_from([0.0, 2.0]),
    all_sim=st.sampled_from([0.0, 3.0]),
)
def test_top_with_cold_candidates_matches_a_brute_force_ranking(
    seed, k, eps, bias, cold_seq, sim_weight, all_sim
):
    rng = np.random.default_rng(seed)
    U, M = 4, 10
    items = np.stack([rng.permutation(30)[:M] for _ in range(U)])
    items[rng.random((U, M)) < 0.15] = -1
    seq = np.round(rng.normal(-5, 2, (U, M)), 0)  # rounded: ties happen
    head = np.round(rng.normal(-3, 1, (U, M)), 0)
    seq[items < 0] = -np.inf
    cold = (rng.random((U, M)) < 0.4) & (items >= 0)
    sim = np.round(rng.uniform(-1, 1, (U, M)), 1)
    w = FusionWeights(
        head_weight=1.0,
        cold_bias=bias,
        cold_seq_weight=cold_seq,
        cold_epsilon=eps,
        cold_sim_weight=sim_weight,
        sim_weight=all_sim,
    )
    cand = Candidates(
        torch.as_tensor(items),
        torch.as_tensor(seq, dtype=torch.float32),
        torch.as_tensor(head, dtype=torch.float32),
        torch.zeros(U, M),
        3,
        torch.as_tensor(cold),
        torch.as_tensor(sim, dtype=torch.float32),
    )
    got, _ = cand.top(w, k)
    np.testing.assert_array_equal(got.numpy(), reference_top(items, seq, head, cold, w, k, sim))
    # Never more than the cap of cold items.
    cap = math.ceil(eps * k - 1e-9)
    for r in range(U):
        cold_items = set(items[r][cold[r]].tolist())
        assert sum(int(i) in cold_items for i in got[r].numpy() if i >= 0) <= cap


def test_without_cold_drops_the_cold_candidates_only():
    items = torch.tensor([[5, 3, 8, -1]])
    cand = Candidates(
        items, torch.zeros(1, 4), torch.zeros(1, 4), torch.zeros(1, 4), 2, torch.tensor([[0, 1, 0, 0]]).bool()
    )
    warm = cand.without_cold()
    assert warm.items.tolist() == [[5, -1, 8, -1]] and warm.cold is None


def test_tune_cold_keeps_warm_recall_and_takes_the_best_ndcg():
    # Two rows: a warm target the beam ranks first, a cold target the cold candidate holds. A large
    # bias would push the warm target down (breaking the warm floor); a moderate one fixes both.
    items = torch.tensor([[1, 2, 9], [1, 2, 9]])
    seq = torch.tensor([[-1.0, -2.0, -9.0], [-1.0, -2.0, -9.0]])
    cold = torch.tensor([[False, False, True], [False, False, True]])
    cand = Candidates(items, seq, torch.zeros(2, 3), torch.zeros(2, 3), 2, cold)
    targets = np.array([1, 9])
    w, table = tune_cold([cand], targets, np.array([False, True]), FusionWeights(), k=1)
    hit, _ = ranking_hits([cand], targets, w, k=1)
    # k = 1: only one of the two can be first, and the warm floor keeps the warm target first.
    assert hit.tolist() == [True, False]
    w2, _ = tune_cold([cand], targets, np.array([False, True]), FusionWeights(), k=2)
    hit2, _ = ranking_hits([cand], targets, w2, k=2)
    assert hit2.tolist() == [True, True]  # room for both: the cold item moves up to second place
    assert all("meets_warm_floor" in r for r in table)


def test_tune_cold_floor_follows_the_reference_and_the_objective_decides_among_eligible():
    # k = 2. Rows 0 and 1 want warm items 1 and 2 (the beam's first two), row 2 the cold item 9.
    # A cold item in the top 2 costs row 1 its hit. The reference ranking (head weight 1, the head
    # dislikes item 2 for row 1) misses row 1 anyway, so measured against it the cold item is allowed.
    items = torch.tensor([[1, 2, 5, 9]] * 3)
    seq = torch.tensor([[-1.0, -2.0, -3.0, -9.0]] * 3)
    head = torch.zeros(3, 4)
    head[1, 1] = -10.0
    cold = torch.tensor([[False, False, False, True]] * 3)
    cand = Candidates(items, seq, head, torch.zeros(3, 4), 3, cold)
    targets, cold_target = np.array([1, 2, 9]), np.array([False, False, True])

    def chosen_hits(**kw):
        w, _ = tune_cold([cand], targets, cold_target, FusionWeights(), k=2, **kw)
        return ranking_hits([cand], targets, w, k=2)[0].tolist()

    assert chosen_hits(objective="cold_recall") == [True, True, False]  # the base's own floor: no room
    relaxed = {"reference": FusionWeights(head_weight=1.0)}
    assert chosen_hits(objective="cold_recall", **relaxed) == [True, False, True]
    # The same NDCG either way: the earlier combination (no cold item) stays.
    assert chosen_hits(objective="ndcg", **relaxed) == [True, True, False]
    with pytest.raises(ValueError, match="objective"):
        tune_cold([cand], targets, cold_target, FusionWeights(), objective="recall")


def test_the_share_cap_is_the_cold_targets_share_in_whole_places_of_a_top_10():
    assert cold_share_cap(np.array([True] + [False] * 9)) == 0.1
    assert cold_share_cap(np.array([True] * 2 + [False] * 17)) == 0.1  # 10.5%: one place of ten
    assert cold_share_cap(np.array([True] * 3 + [False] * 17)) == 0.2  # 15%: rounds up to two
    assert cold_share_cap(np.array([True] + [False] * 99)) == 0.1  # 1%: still one place
    assert cold_share_cap(np.zeros(5, dtype=bool)) == 0.0
    assert cold_share_cap(np.array([True, False, False, False]), k=5) == 0.2  # 25% of 5 places: 1.25


def test_tune_cold_never_chooses_an_epsilon_above_the_cap():
    # k = 10, two cold targets among three rows: with no cap the best choice lets both cold items in.
    items = torch.tensor([[*range(1, 11), 20, 21]] * 3)
    seq = -torch.arange(1.0, 13.0).repeat(3, 1)
    cold = torch.zeros(3, 12, dtype=torch.bool)
    cold[:, 10:] = True
    cand = Candidates(items, seq, torch.zeros(3, 12), torch.zeros(3, 12), 3, cold)
    targets, cold_target = np.array([1, 20, 21]), np.array([False, True, True])
    free, free_table = tune_cold([cand], targets, cold_target, FusionWeights(), objective="cold_recall")
    assert ranking_hits([cand], targets, free, k=10)[0].tolist() == [True, True, True]
    capped, table = tune_cold([cand], targets, cold_target, FusionWeights(), objective="cold_recall", max_epsilon=0.1)
    assert capped.cold_epsilon == 0.1
    assert max(r["cold_epsilon"] for r in table) == 0.1
    assert ranking_hits([cand], targets, capped, k=10)[0].tolist() == [True, True, False]
    # a cap between the grid's steps is tried itself; 0 leaves only the list without cold items
    _, between = tune_cold([cand], targets, cold_target, FusionWeights(), max_epsilon=0.25)
    assert sorted({r["cold_epsilon"] for r in between}) == [0.0, *[e for e in COLD_EPSILONS if 0 < e < 0.25], 0.25]
    none, only_off = tune_cold([cand], targets, cold_target, FusionWeights(), max_epsilon=0.0)
    assert none.cold_epsilon == 0.0 and len(only_off) == 1
    assert len(free_table) > len(table)


def test_recommender_adds_cold_candidates_from_a_restricted_beam_and_the_head():
    _, _, codes, level_sizes = synthetic_world(num_items=N)
    model = content_decoder(level_sizes)
    rng = np.random.default_rng(2)
    histories = [rng.integers(0, N, size=rng.integers(1, 6)) for _ in range(5)]
    fusion = Fusion(
        FusionWeights(head_weight=1.0, cold_bias=100.0, cold_epsilon=0.2), None, 2, cold_candidates=3
    )
    rec = BeamSearchRecommender(model, codes, beam_size=6, fusion=fusion, record_components=True)
    rec.collect_candidates = []
    items, _ = rec.topk(histories, 10)
    cand = rec.collect_candidates[0]
    assert cand.cold is not None
    found_cold = {int(i) for i in cand.items[cand.cold]}
    assert found_cold and found_cold <= set(COLD.tolist())
    # A huge bias puts cold items first, but only ceil(0.2 * 10) = 2 of them.
    for row in items:
        assert sum(int(i) in COLD for i in row) == 2
        assert row[0] in COLD and row[1] in COLD
    # Each candidate once per user, cold ones scored on the beam's scale (teacher-forced).
    for r in range(len(histories)):
        real = cand.items[r][cand.items[r] >= 0].tolist()
        assert len(real) == len(set(real))
    batch = rec._batch(torch.as_tensor(np.concatenate(histories)), *_bounds(histories), None)
    real = cand.items >= 0
    owner = torch.nonzero(real)[:, 0]
    direct = model.id_log_probs(batch, torch.as_tensor(codes)[cand.items[real]], owner)
    torch.testing.assert_close(cand.seq[real], direct, atol=1e-4, rtol=1e-4)
    # The list without cold candidates is recorded beside the final one.
    no_cold = rec.recorded["no-cold"][0]
    assert not np.isin(no_cold, COLD).any()


def test_the_restricted_beam_only_returns_cold_items():
    _, _, codes, level_sizes = synthetic_world(num_items=N)
    model = content_decoder(level_sizes)
    rec = BeamSearchRecommender(model, codes, beam_size=6, fusion=Fusion(FusionWeights(), None, 0, cold_candidates=4))
    histories = [np.array([0, 1, 2]), np.array([5])]
    batch = rec._batch(torch.as_tensor(np.concatenate(histories)), *_bounds(histories), None)
    got = rec._cold_search(batch, 4, {})
    items = got[0] if isinstance(got, tuple) else got.items
    assert set(items[items >= 0].tolist()) <= set(COLD.tolist())
    assert (items >= 0).sum(1).tolist() == [4, 4]


def _bounds(histories):
    lengths = np.array([len(h) for h in histories])
    ends = np.cumsum(lengths)
    return ends - lengths, ends


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 30), exclude=st.booleans())
def test_the_chunked_item_head_scan_equals_the_whole_catalogue(seed, chunk, exclude):
    """ItemDecoder.item_head_scan (bounded memory for large catalogues) against the [U, N] log-softmax."""
    _, _, codes, level_sizes = synthetic_world(num_items=N)
    model = content_decoder(level_sizes, seed=seed % 7)
    rng = np.random.default_rng(seed)
    histories = [rng.integers(0, N, size=rng.integers(1, 6)) for _ in range(5)]
    rec = BeamSearchRecommender(model, codes, beam_size=4)
    batch = rec._batch(torch.as_tensor(np.concatenate(histories)), *_bounds(histories), None)
    full = model.item_head_log_probs(batch)
    masked = full.clone()
    pairs = None
    if exclude:
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        cols = np.concatenate(histories)
        masked[rows, cols] = float("-inf")
        pairs = (torch.as_tensor(rows), torch.as_tensor(cols))
    cold = torch.zeros(N, dtype=torch.bool)
    cold[COLD] = True
    log_norm, tops, states = model.item_head_scan(
        batch, [(None, 7), (cold, 3), (cold, 9)], pairs, chunk=chunk
    )
    # With the scan's normalizer every item's score is the whole catalogue's log-softmax.
    everything = torch.arange(N).expand(len(histories), N)
    torch.testing.assert_close(
        model.item_head_log_probs_of(states, log_norm, everything), full, atol=1e-5, rtol=1e-5
    )
    # Each pick: the best items by the full scores (ties: the lower index), -1 past the allowed ones.
    for (allowed, m), got in zip([(None, 7), (cold, 3), (cold, 9)], tops, strict=True):
        scores = masked if allowed is None else masked.masked_fill(~allowed[None, :], float("-inf"))
        for r in range(len(histories)):
            order = sorted(range(N), key=lambda i: (-float(scores[r, i]), i))
            want = [i if math.isfinite(float(scores[r, i])) else -1 for i in order[:m]]
            assert got[r].tolist() == want
    empty = torch.full((len(histories), 2), -1)
    assert torch.isinf(model.item_head_log_probs_of(states, log_norm, empty)).all()
    # Without the normalizer: the same picks, a zero log-normalizer.
    raw_norm, raw_tops, _ = model.item_head_scan(
        batch, [(None, 7), (cold, 3), (cold, 9)], pairs, chunk=chunk, normalize=False
    )
    assert torch.equal(raw_norm, torch.zeros(len(histories)))
    assert all(torch.equal(a, b) for a, b in zip(raw_tops, tops, strict=True))


def test_a_catalogue_larger_than_the_head_chunk_gives_the_same_lists():
    """The fusion on a model whose head is scanned in chunks recommends what the whole-catalogue head does."""
    _, _, codes, level_sizes = synthetic_world(num_items=N)
    rng = np.random.default_rng(3)
    histories = [rng.integers(0, N, size=rng.integers(1, 6)) for _ in range(6)]
    lists = []
    for chunk in (N, 5):
        model = content_decoder(level_sizes)
        model.head_chunk = chunk
        fusion = Fusion(
            FusionWeights(head_weight=2.0, cold_bias=1.0, cold_epsilon=0.3), None, 4, cold_candidates=3
        )
        rec = BeamSearchRecommender(model, codes, beam_size=6, exclude_history=True, fusion=fusion)
        lists.append(rec.topk(histories, 8))
    np.testing.assert_array_equal(lists[0][0], lists[1][0])
    np.testing.assert_allclose(lists[0][1], lists[1][1], atol=1e-5)


def _warm_decoder(level_sizes, seed=0):
    torch.manual_seed(seed)
    model = ItemDecoder(level_sizes, max_history=6, d_model=16, num_layers=1, num_heads=2, head_dim=8,
                        d_ff=32, num_items=N, item_loss=1.0, item_negatives=8)  # fmt: skip
    with torch.no_grad():
        model.item_emb.weight.normal_(0, 1.0)
    return model.eval()


def test_without_a_head_weight_the_scan_skips_its_normalizer_and_the_lists_stay(monkeypatch):
    _, _, codes, level_sizes = synthetic_world(num_items=N)
    rng = np.random.default_rng(5)
    histories = [rng.integers(0, N, size=rng.integers(1, 6)) for _ in range(6)]
    normalized = []
    scan = ItemDecoder.item_head_scan

    def spy(self, *args, normalize=True, **kwargs):
        normalized.append(normalize)
        return scan(self, *args, normalize=normalize, **kwargs)

    monkeypatch.setattr(ItemDecoder, "item_head_scan", spy)
    lists = []
    for chunk, head_weight in ((N, 0.0), (5, 0.0), (5, 1e-30)):  # whole, chunked raw, chunked normalised
        model = _warm_decoder(level_sizes)
        model.head_chunk = chunk
        rec = BeamSearchRecommender(model, codes, beam_size=6, exclude_history=True,
                          fusion=Fusion(FusionWeights(head_weight=head_weight), None, 4))  # fmt: skip
        lists.append(rec.topk(histories, 8))
    assert normalized == [
        False,
        True,
    ]  # the whole catalogue is not scanned; a head weight needs the normalizer
    for items, scores in lists[1:]:
        np.testing.assert_array_equal(items, lists[0][0])
        np.testing.assert_allclose(scores, lists[0][1], atol=1e-5)


def _decoder_counting_its_transformer_runs():
    """A warm item decoder, a recommender's batch of two histories, and the list that gets one entry
    each time the decoder runs its item transformer."""
    _, _, codes, level_sizes = synthetic_world(num_items=N)
    model = _warm_decoder(level_sizes)
    histories = [np.array([0, 1, 2]), np.array([5])]
    batch = BeamSearchRecommender(model, codes, beam_size=4)._batch(
        torch.as_tensor(np.concatenate(histories)), *_bounds(histories), None
    )
    calls = []
    hidden = model.hidden
    model.hidden = lambda *a, **k: calls.append(1) or hidden(*a, **k)
    return model, batch, calls


def test_the_history_states_are_computed_once_per_batch_and_never_stale():
    model, batch, calls = _decoder_counting_its_transformer_runs()
    with torch.no_grad():
        first = model._last_states(batch)
        assert model._last_states(batch) is first and len(calls) == 1  # the same batch: kept
        copy = dict(batch, history=batch["history"].clone())
        torch.testing.assert_close(model._last_states(copy), first)  # other tensors: recomputed
        assert len(calls) == 2
        model.item_emb.weight.mul_(2)  # weights changed in place
        changed = model._last_states(copy)
        assert len(calls) == 3 and not torch.allclose(changed, first)
        copy["history_items"][0, 0] = 4  # the batch changed in place
        model._last_states(copy)
        assert len(calls) == 4
    model._last_states(copy)  # gradients on: never kept
    model._last_states(copy)
    assert len(calls) == 6


def test_the_history_states_are_never_kept_while_a_cuda_graph_is_captured(monkeypatch):
    # A replay runs no Python: states kept from the warm-up would leave the item transformer out of
    # the captured graph, and every replayed batch would decode the capture batch's histories.
    from genrec.models import item_decoder

    model, batch, calls = _decoder_counting_its_transformer_runs()
    with torch.no_grad():
        model._last_states(batch)  # the warm-up before a capture: kept
        monkeypatch.setattr(item_decoder, "_capturing_cuda_graph", lambda: True)
        model._last_states(batch)
        model._last_states(batch)
        assert len(calls) == 3  # recomputed each time, so the capture records it
        monkeypatch.setattr(item_decoder, "_capturing_cuda_graph", lambda: False)
        model._last_states(batch)
        model._last_states(batch)
        assert len(calls) == 4  # nothing from the capture was kept
