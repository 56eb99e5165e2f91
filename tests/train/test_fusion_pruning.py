"""genrec.fusion: candidates that cannot reach the top k are not teacher-forced, and the top k
(items, scores, and every recorded component) stays exactly what scoring all of them gives."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.fusion import Fusion, FusionWeights
from genrec.recommend import Recommender
from tests.train.test_fusion import world


def _recommender(model, codes, fusion, beam, exclude, collect):
    rec = Recommender(
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
    assert np.array_equal(want[0], got[0])
    assert np.array_equal(want[1], got[1])  # the same floats, not close ones
    for name in full.recorded:
        assert np.array_equal(np.concatenate(full.recorded[name]), np.concatenate(pruned.recorded[name]))


def test_candidates_below_the_top_k_are_left_out_of_teacher_forcing():
    model, codes, histories, cooc = world(seed=5, users=8)
    # A strong co-occurrence weight: items nobody voted for score far below the voted ones.
    fusion = Fusion(FusionWeights(0.0, 16.0, 1e-4), cooc, 8)
    rec = Recommender(model, codes, beam_size=4, fusion=fusion)
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
    assert torch.equal(best.seq[real & ~skipped], everything.seq[real & ~skipped])  # ... the rest exactly
    w = fusion.weights
    assert torch.equal(best.top(w, 2)[0], everything.top(w, 2)[0])
    assert torch.equal(best.top(w, 2)[1], everything.top(w, 2)[1])
