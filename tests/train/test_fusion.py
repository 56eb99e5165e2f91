"""genrec.fusion: candidates from the beam, the item head and co-occurrence, ranked on one scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.eval.baselines import CoOccurrence, CoOccurrenceConfig
from genrec.fusion import Candidates, Fusion, FusionWeights, load_cooccurrence, save_cooccurrence
from genrec.fusion_tuning import tune_fusion
from genrec.fusion_votes import BatchVotes
from genrec.serve.beam import BeamSearchRecommender, RecordedRanking
from tests.train.helpers import item_decoder, synthetic_world

N = 24


def world(seed=1, users=6):
    _, _, codes, level_sizes = synthetic_world(num_items=N)
    model = item_decoder(level_sizes, N)
    rng = np.random.default_rng(seed)
    histories = [rng.integers(0, N, size=rng.integers(1, 6)) for _ in range(users)]
    sequences = [rng.integers(0, N, size=rng.integers(2, 9)) for _ in range(40)]
    counts = np.bincount(np.concatenate(sequences), minlength=N)
    cooc = CoOccurrence(sequences, N, counts, CoOccurrenceConfig())
    return model, codes, histories, cooc


def test_id_log_probs_are_the_beam_scores():
    model, codes, histories, _ = world()
    items, scores = BeamSearchRecommender(model, codes, beam_size=N).topk(histories, k=N)
    rec = BeamSearchRecommender(model, codes, beam_size=N)
    flat = np.concatenate(histories)
    ends = np.cumsum([len(h) for h in histories])
    batch = rec._batch(torch.as_tensor(flat), ends - [len(h) for h in histories], ends, None)
    got = model.id_log_probs(batch, torch.as_tensor(codes)[torch.as_tensor(items)], chunk_rows=7)
    assert np.allclose(got.numpy(), scores, atol=1e-4)


def test_fused_list_is_the_best_k_of_all_candidates_by_the_combined_score():
    model, codes, histories, cooc = world()
    w = FusionWeights(head_weight=1.5, cooc_weight=0.8, eps=1e-2)
    beam = 6
    rec = BeamSearchRecommender(
        model, codes, beam_size=beam, exclude_history=True, fusion=Fusion(w, cooc, candidates=5)
    )
    items, scores = rec.topk(histories, k=8)
    # By hand: the beam's items, the head's 5 best and co-occurrence's 5 best outside the history,
    # each scored seq + w_h * head + w_c * log(eps + votes) over the whole catalogue.
    beam_items, _ = BeamSearchRecommender(model, codes, beam_size=beam, exclude_history=True).topk(histories, k=beam)
    full_scores = BeamSearchRecommender(model, codes, beam_size=N).topk(histories, k=N)
    dense = cooc.scores(histories)
    for u, h in enumerate(histories):
        seq = dict(zip(full_scores[0][u].tolist(), full_scores[1][u].tolist(), strict=True))
        batch = rec._batch(torch.as_tensor(h), np.array([0]), np.array([len(h)]), None)
        head = model.item_head_log_probs(batch)[0].numpy()
        outside = [i for i in range(N) if i not in set(h.tolist())]
        head_top = sorted(outside, key=lambda i: -head[i])[:5]
        voted = [i for i in outside if dense[u, i] > 0]
        cooc_top = sorted(voted, key=lambda i: (-dense[u, i], cooc.priority[i]))[:5]
        cands = list(dict.fromkeys([*beam_items[u].tolist(), *head_top, *cooc_top]))
        cands = [i for i in cands if i >= 0]
        combined = {i: seq[i] + 1.5 * head[i] + 0.8 * np.log(1e-2 + dense[u, i]) for i in cands}
        expected = sorted(cands, key=lambda i: -combined[i])[:8]
        assert items[u].tolist() == expected
        assert np.allclose(scores[u], [combined[i] for i in expected], atol=1e-3)
        assert not set(items[u].tolist()) & set(h.tolist())


def test_components_are_recorded_and_replayed():
    model, codes, histories, cooc = world(users=7)
    rec = BeamSearchRecommender(
        model,
        codes,
        beam_size=8,
        batch_users=3,
        fusion=Fusion(FusionWeights(2.0, 1.0), cooc, 4),
        record_components=True,
    )
    final = rec.topk(histories, k=5)[0]
    beam_only = BeamSearchRecommender(model, codes, beam_size=8).topk(histories, k=5)[0]
    head_only = BeamSearchRecommender(model, codes, beam_size=8, rerank_weight=2.0).topk(histories, k=5)[0]
    assert np.array_equal(np.concatenate(rec.recorded["beam"]), beam_only)
    assert np.array_equal(np.concatenate(rec.recorded["beam+head"]), head_only)
    assert np.array_equal(np.concatenate(rec.recorded["fused"]), final)
    replay = RecordedRanking("beam", rec.recorded["beam"])
    assert np.array_equal(replay.recommend(histories[:3], 5), beam_only[:3])
    with pytest.raises(ValueError, match="recorded"):
        replay.recommend(histories[:2], 5)  # the next batch holds 3 rows


def test_ties_keep_the_candidate_order_and_empty_slots_stay_last():
    cand = Candidates(
        items=torch.tensor([[5, 3, -1, 7]]),
        seq=torch.tensor([[-1.0, -1.0, -0.5, -1.0]]),
        head=torch.zeros(1, 4),
        cooc_votes=torch.zeros(1, 4),
        num_beam=2,
    )
    items, scores = cand.top(FusionWeights(), 4)
    assert items.tolist() == [[5, 3, 7, -1]] and torch.isinf(scores[0, 3])
    assert cand.top(FusionWeights(), 4, beam_only=True)[0].tolist() == [[5, 3, -1, -1]]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_sparse_votes_match_the_dense_scores(seed, m):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 15))
    sequences = [rng.integers(0, n, size=rng.integers(1, 7)) for _ in range(int(rng.integers(1, 12)))]
    counts = np.bincount(np.concatenate(sequences), minlength=n)
    cooc = CoOccurrence(sequences, n, counts, CoOccurrenceConfig(window=3, history=2))
    histories = [rng.integers(0, n, size=rng.integers(1, 5)) for _ in range(4)]
    dense = cooc.scores(histories)
    votes = BatchVotes(cooc, histories, exclude_history=False)
    cand = rng.integers(-1, n, size=(4, 6))
    got = votes.of(cand).numpy()
    want = np.where(cand >= 0, dense[np.arange(4)[:, None], np.maximum(cand, 0)], 0.0)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-7)
    top = votes.top(m).numpy()
    for u in range(4):
        voted = [i for i in range(n) if dense[u, i] > 0]
        expect = sorted(voted, key=lambda i: (-dense[u, i], cooc.priority[i], i))[:m]
        assert top[u, : len(expect)].tolist() == expect and (top[u, len(expect) :] == -1).all()


def test_tuning_finds_the_weights_that_put_each_target_first():
    # Two candidates per row: the target is second by seq, first once the head weight passes 2.5.
    rows = 5
    items = torch.tensor([[1, 2]] * rows)
    cand = Candidates(
        items,
        seq=torch.tensor([[0.0, -2.5]] * rows),
        head=torch.tensor([[-1.0, 0.0]] * rows),
        cooc_votes=torch.zeros(rows, 2),
        num_beam=2,
    )
    best, table = tune_fusion([cand], np.full(rows, 2), metric="ndcg@1", cooc=False)
    assert best.head_weight == 4.0 and best.cooc_weight == 0.0  # 4 is the smallest grid weight > 2.5
    assert table[0]["ndcg@1"] == 0.0 and max(t["ndcg@1"] for t in table) == 1.0
    with pytest.raises(ValueError, match="rows"):
        tune_fusion([cand], np.full(rows + 1, 2), metric="ndcg@1")


def test_cooccurrence_statistics_round_trip_and_damage_is_named(tmp_path):
    _, _, histories, cooc = world()
    path = tmp_path / "cooccurrence.safetensors"
    save_cooccurrence(path, cooc)
    back = load_cooccurrence(path)
    assert back.config() == cooc.config()
    assert np.array_equal(back.scores(histories), cooc.scores(histories))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"cooccurrence\.safetensors"):
        load_cooccurrence(path)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_cooccurrence(tmp_path / "nope.safetensors")


def test_inconsistent_statistics_are_refused():
    _, _, _, cooc = world()
    arrays = dict(cooc.arrays())
    arrays["indices"] = arrays["indices"].copy()
    arrays["indices"][0] = N + 3
    with pytest.raises(ValueError, match="inconsistent"):
        CoOccurrence.from_arrays(arrays, CoOccurrenceConfig())


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_tuning_ranks_equal_the_stable_sort(seed):
    # Integer-valued scores make ties common; -1 slots and absent targets included.
    rng = np.random.default_rng(seed)
    rows, m = 6, 7
    items = torch.as_tensor(np.stack([rng.permutation(12)[:m] for _ in range(rows)]))
    items[0, 2] = -1
    cand = Candidates(
        items,
        seq=torch.as_tensor(rng.integers(-3, 0, (rows, m)), dtype=torch.float32),
        head=torch.as_tensor(rng.integers(-2, 0, (rows, m)), dtype=torch.float32),
        cooc_votes=torch.as_tensor(rng.integers(0, 2, (rows, m)), dtype=torch.float32),
        num_beam=4,
    )
    targets = rng.integers(0, 12, rows)
    _, table = tune_fusion([cand], targets, metric="ndcg@3")
    for row in table:
        w = FusionWeights(row["head_weight"], row["cooc_weight"], row["eps"])
        top = cand.top(w, 3)[0].numpy()
        hit = top == targets[:, None]
        ndcg = (hit / np.log2(np.arange(3) + 2)).sum() / rows
        assert np.isclose(row["ndcg@3"], ndcg) and np.isclose(row["recall@3"], hit.sum() / rows)
