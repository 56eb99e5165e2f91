"""BeamSearchRecommender: the model's beam search over the real trie, batched, with the history excluded on request."""

from __future__ import annotations

import numpy as np
import torch

from genrec.models import Tiger
from genrec.serve.beam import BeamSearchRecommender
from tests.train.helpers import item_decoder, synthetic_world


def tiny_model(level_sizes):
    torch.manual_seed(0)
    model = Tiger(
        level_sizes,
        max_history=6,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        num_heads=2,
        head_dim=8,
        d_ff=32,
    )
    return model.eval()


def test_excluded_history_never_comes_back_and_the_rest_all_do():
    _, _, codes, level_sizes = synthetic_world(num_items=24)
    model = tiny_model(level_sizes)
    histories = [np.array([3, 4, 5]), np.array([0]), np.array([7, 7, 9, 23, 1])]
    rec = BeamSearchRecommender(model, codes, beam_size=24, batch_users=2, exclude_history=True)
    items, scores = rec.topk(histories, k=24)
    for row, history in zip(items, histories, strict=True):
        allowed = set(range(24)) - set(history.tolist())
        got = [int(i) for i in row if i >= 0]
        assert set(got) == allowed and len(got) == len(allowed)  # a beam as large as the catalogue finds all
        assert (row[len(allowed) :] == -1).all()
    plain = BeamSearchRecommender(model, codes, beam_size=24, exclude_history=False).topk(histories, k=24)[0]
    assert all(
        set(history.tolist()) <= set(row.tolist()) for row, history in zip(plain, histories, strict=True)
    )
    # Scores of the items both return agree: exclusion removes items, it does not rescore the rest.
    full = {
        int(i): s
        for i, s in zip(
            plain[0], BeamSearchRecommender(model, codes, beam_size=24).topk(histories, 24)[1][0], strict=True
        )
    }
    for i, s in zip(items[0], scores[0], strict=True):
        if i >= 0:
            assert np.isclose(s, full[int(i)], atol=1e-5)


def test_batches_give_the_same_lists_as_one_call():
    _, _, codes, level_sizes = synthetic_world(num_items=24)
    model = tiny_model(level_sizes)
    rng = np.random.default_rng(0)
    histories = [rng.integers(0, 24, size=rng.integers(1, 12)) for _ in range(9)]
    one = BeamSearchRecommender(model, codes, beam_size=10, batch_users=64).topk(histories, k=5)
    many = BeamSearchRecommender(model, codes, beam_size=10, batch_users=4).topk(histories, k=5)
    assert np.array_equal(one[0], many[0]) and np.allclose(one[1], many[1], atol=1e-5)
    assert BeamSearchRecommender(model, codes, beam_size=10).invalid_rate == 0.0


def test_rerank_orders_the_beam_items_by_the_combined_score():
    _, _, codes, level_sizes = synthetic_world(num_items=24)
    model = item_decoder(level_sizes, 24)
    rng = np.random.default_rng(1)
    histories = [rng.integers(0, 24, size=rng.integers(1, 6)) for _ in range(5)]
    weight = 0.7
    beam_items, beam_scores = BeamSearchRecommender(model, codes, beam_size=24).topk(histories, k=24)
    items, scores = BeamSearchRecommender(model, codes, beam_size=24, rerank_weight=weight).topk(histories, k=10)
    # By hand: the item head's log-softmax over the catalogue after each history's last state.
    for u, history in enumerate(histories):
        batch = BeamSearchRecommender(model, codes, beam_size=24)._batch(
            torch.as_tensor(history), np.array([0]), np.array([len(history)]), None
        )
        with torch.no_grad():
            h = model.hidden(batch["history"], batch["history_len"], None, batch["history_items"])
            logits = h[0, len(history) - 1] @ model.item_emb.weight.T
            item_lp = torch.log_softmax(logits.float(), dim=0).numpy()
        expected = beam_scores[u] + weight * item_lp[beam_items[u]]
        order = np.argsort(-expected, kind="stable")[:10]
        assert items[u].tolist() == beam_items[u][order].tolist()
        assert np.allclose(scores[u], expected[order], atol=1e-4)
    assert not np.array_equal(items, beam_items[:, :10])  # the head changed some order


def test_rerank_needs_an_item_head():
    import pytest

    _, _, codes, level_sizes = synthetic_world(num_items=24)
    with pytest.raises(ValueError, match="item head"):
        BeamSearchRecommender(tiny_model(level_sizes), codes, beam_size=8, rerank_weight=1.0)
    model = item_decoder(level_sizes, 24, item_loss=0.0)
    rec = BeamSearchRecommender(model, codes, beam_size=8, rerank_weight=1.0)
    with pytest.raises(ValueError, match="item_loss"):
        rec.topk([np.array([1, 2])], k=5)
