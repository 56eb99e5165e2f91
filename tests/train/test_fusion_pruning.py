"""genrec.fusion: candidates that cannot reach the top k are not teacher-forced, and the top k
(items, scores, and every recorded component) stays what scoring all of them gives.

Scores agree to float rounding, not to the bit: the depth decoder teacher-forces a different set
of rows when some are skipped, and a matmul's rounding depends on its row count (one row goes
through a matrix-vector kernel). Items agree exactly wherever the full ranking has no near tie."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.fusion import Fusion, FusionWeights
from genrec.serve.beam import BeamSearchRecommender
from tests.train.test_fusion import world


def _recommender(model, codes, fusion, beam, exclude, collect):
    rec = BeamSearchRecommender(
        model,
        codes,
        beam_size=beam,
        batch_users=4,
        exclude_history=exclude,
        fusion=fusion,
        record_components=True,
    )
    rec.collect_candidates = [] if collect else None  # collecting (tuning) scores every candidate
    return rec


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.sampled_from([0.0, 0.5, 2.0, 8.0]),
    st.sampled_from([0.0, 1.0, 16.0]),
    st.sampled_from([1e-4, 1e-2]),
    st.integers(1, 10),
    st.integers(2, 8),
    st.integers(1, 8),
    st.booleans(),
)
def test_pruned_top_k_equals_the_fully_scored_one(seed, head_w, cooc_w, eps, k, beam, extra, exclude):
    model, codes, histories, cooc = world(seed=seed % 1000, users=9)
    fusion = Fusion(FusionWeights(head_w, cooc_w, eps), cooc, extra)
    k = min(k, beam + 2 * extra)
    full = _recommender(model, codes, fusion, beam, exclude, collect=True)
    pruned = _recommender(model, codes, fusion, beam, exclude, collect=False)
    want, got = full.topk(histories, k), pruned.topk(histories, k)
    np.testing.assert_allclose(got[1], want[1], rtol=ROUNDING, atol=ROUNDING)
    runner_up = np.concatenate([_next_score(c, fusion.weights, k) for c in full.collect_candidates])
    tied = _near_ties(np.concatenate([want[1], runner_up[:, None]], axis=1))[:, :k]
    assert np.array_equal(want[0][~tied], got[0][~tied])
    assert tied.mean() < 0.5  # the check above still compares most of the list
    for name in full.recorded:
        a, b = np.concatenate(full.recorded[name]), np.concatenate(pruned.recorded[name])
        if name in ("beam", "beam+head"):  # the beam's own scores: never teacher-forced
            assert np.array_equal(a, b)
        else:
            assert np.array_equal(a[~tied], b[~tied])


ROUNDING = 1e-5  # a few float32 ulps of scores around -10: rounding, never a different item


def _next_score(cand, weights, k: int) -> np.ndarray:
    """[U] the (k+1)-th best fused score of fully scored candidates (-inf where there is none)."""
    s = torch.sort(cand.scores(weights), dim=1, descending=True).values
    if s.shape[1] <= k:
        return np.full(s.shape[0], -np.inf, dtype=np.float32)
    return s[:, k].numpy()


def _near_ties(scores: np.ndarray) -> np.ndarray:
    """[U, k] True where a rank's score is within ROUNDING of a neighbour's (such items may swap
    with rounding; the last column is the runner-up outside the list). Rare on random models,
    so the item check keeps its teeth."""
    s = np.where(np.isinf(scores), -1e9, scores)
    close = np.abs(np.diff(s, axis=1)) <= ROUNDING * (1 + np.abs(s[:, 1:]))
    tied = np.zeros(scores.shape, dtype=bool)
    tied[:, 1:] |= close
    tied[:, :-1] |= close
    return tied


def test_candidates_below_the_top_k_are_left_out_of_teacher_forcing():
    model, codes, histories, cooc = world(seed=5, users=8)
    # A strong co-occurrence weight: items nobody voted for score far below the voted ones.
    fusion = Fusion(FusionWeights(0.0, 16.0, 1e-4), cooc, 8)
    rec = BeamSearchRecommender(model, codes, beam_size=4, fusion=fusion)
    flat = np.concatenate(histories)
    ends = np.cumsum([len(h) for h in histories])
    batch = rec._batch(torch.as_tensor(flat), ends - [len(h) for h in histories], ends, None)
    beam_items, beam_scores = rec.search(
        model.step_fn(batch, 4, check=False), rec.index, len(histories), 4, 4
    )
    codes_t = torch.as_tensor(codes)
    args = (model, batch, codes_t, beam_items, beam_scores, histories, False)
    everything, best = fusion.build(*args), fusion.build(*args, best=2)
    real = everything.items >= 0
    skipped = real & torch.isinf(best.seq)
    assert skipped.any()  # some candidates were never teacher-forced ...
    kept = real & ~skipped  # ... the rest were, to rounding (see the module's docstring)
    torch.testing.assert_close(best.seq[kept], everything.seq[kept], rtol=ROUNDING, atol=ROUNDING)
    w = fusion.weights
    assert torch.equal(best.top(w, 2)[0], everything.top(w, 2)[0])
    torch.testing.assert_close(best.top(w, 2)[1], everything.top(w, 2)[1], rtol=ROUNDING, atol=ROUNDING)
