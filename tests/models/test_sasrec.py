"""SASRec: it learns (overfits a tiny dataset with either loss), it is causal, and every way of
asking it for top-K (scores, retrieval, the one-level decoding contract) agrees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.models.sasrec import SASRec, identity_codes
from genrec.serve.inner_product import InnerProductRecommender

NUM_ITEMS = 12


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine the OpenMP hand-offs cost
    20x: run these tests on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cycle_windows(num: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs of a fixed cycle (item i then i + 1 mod NUM_ITEMS) from random starts, random lengths."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, NUM_ITEMS, (num,), generator=g)
    lengths = torch.randint(2, length + 1, (num,), generator=g)
    window = (starts[:, None] + torch.arange(length)[None, :]) % NUM_ITEMS
    window = torch.where(torch.arange(length)[None, :] < lengths[:, None], window, torch.full_like(window, 5))
    return window[:, :, None], lengths  # the training loop's layout: one token per item


def tiny(loss: str = "ce", **kw) -> SASRec:
    torch.manual_seed(0)
    return SASRec(
        NUM_ITEMS, max_history=6, d_model=32, num_layers=2, num_heads=2, dropout=0.0, loss=loss, **kw
    )


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_overfits_a_tiny_dataset(loss):
    model = tiny(loss, negatives=4)
    window, lengths = cycle_windows(64, 7, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        total, count = model.loss_terms({"window": window, "window_len": lengths})
        loss_value = total / count
        first = loss_value.item() if first is None else first
        opt.zero_grad()
        loss_value.backward()
        opt.step()
    assert loss_value.item() < 0.2 * first
    model.eval()
    # Every history of the cycle, every length: the next item must be ranked first.
    starts = torch.arange(NUM_ITEMS).repeat_interleave(6)
    lens = torch.arange(1, 7).repeat(NUM_ITEMS)
    history = (starts[:, None] + torch.arange(6)[None, :]) % NUM_ITEMS
    with torch.no_grad():
        top = model.scores(history, lens).argmax(1)
    expected = (starts + lens) % NUM_ITEMS
    assert (top == expected).float().mean() == 1.0


def test_causal_and_blind_to_padding():
    model = tiny().eval()
    items = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        h = model.hidden(items)
        changed = model.hidden(torch.tensor([[3, 4, 5, 0, 11]]))  # later items changed
        padded = model.user_vectors(torch.tensor([[3, 4, 5, 9, 9, 9]]), torch.tensor([3]))
    torch.testing.assert_close(h[:, :3], changed[:, :3])
    assert not torch.allclose(h[:, 3:], changed[:, 3:])
    torch.testing.assert_close(padded, h[:, 2])


def test_loss_counts_each_target_once_and_matches_a_plain_cross_entropy():
    model = tiny().eval()
    window, lengths = cycle_windows(5, 7, seed=2)
    total, count = model.loss_terms({"window": window, "window_len": lengths})
    assert int(count) == int((lengths - 1).sum())
    expected = 0.0
    for w, n in zip(window[:, :, 0], lengths, strict=True):  # one example at a time, prefix by prefix
        for j in range(1, int(n)):
            logits = model.scores(w[None, :j], torch.tensor([j]))
            expected += torch.nn.functional.cross_entropy(logits, w[j : j + 1], reduction="sum")
    torch.testing.assert_close(total, expected, rtol=1e-4, atol=1e-4)


def test_bce_ignores_negatives_that_hit_the_target():
    model = tiny("bce", negatives=3).eval()
    h = torch.randn(4, 32)
    items = model.item_vectors()
    target = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(5)
    got = model._bce(h, target, items)
    torch.manual_seed(5)
    negatives = torch.randint(0, NUM_ITEMS, (4, 3))
    pos = (h * items[target]).sum(-1)
    neg = torch.einsum("nc,nkc->nk", h, items[negatives])
    keep = negatives != target[:, None]
    expected = torch.nn.functional.softplus(-pos).sum() + torch.nn.functional.softplus(neg)[keep].sum()
    torch.testing.assert_close(got, expected)


def test_retrieval_and_decoding_contract_agree_with_scores():
    model = tiny().eval()
    histories = [
        np.array([1, 2, 3]),
        np.array([7]),
        np.array([0, 11, 10, 9, 8, 7, 6, 5]),
    ]  # the last is cut to 6
    rec = InnerProductRecommender(model, backend="torch")
    items, scores = rec.topk(histories, 5)
    padded = torch.tensor([[1, 2, 3, 0, 0, 0], [7, 0, 0, 0, 0, 0], [10, 9, 8, 7, 6, 5]])
    lengths = torch.tensor([3, 1, 6])
    with torch.no_grad():
        full = model.scores(padded, lengths)
    top = full.topk(5, dim=1)
    np.testing.assert_array_equal(items, top.indices.numpy())
    np.testing.assert_allclose(scores, top.values.numpy(), rtol=1e-5, atol=1e-5)

    step = model.step_fn({"history": padded[:, :, None], "history_len": lengths}, beam_size=4)
    logits = step(torch.zeros(3, 4, 0, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long))
    assert logits.shape == (3, 4, NUM_ITEMS)
    torch.testing.assert_close(logits[:, 2], full)
    with pytest.raises(ValueError, match="one level"):
        step(torch.zeros(3, 4, 1, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long))
    assert identity_codes(4).tolist() == [[0], [1], [2], [3]]


def test_rejects_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="loss"):
        SASRec(10, loss="bpr")
    with pytest.raises(ValueError, match="divide"):
        SASRec(10, d_model=30, num_heads=4)
    model = tiny().eval()
    with pytest.raises(ValueError, match="at most 6"):
        model.user_vectors(torch.zeros(1, 7, dtype=torch.long), torch.tensor([7]))
    with pytest.raises(ValueError, match="at least one item"):
        model.user_vectors(torch.zeros(1, 2, dtype=torch.long), torch.tensor([0]))


def test_built_from_a_config():
    from genrec.config import load_config
    from genrec.models import build_model
    from genrec.settings import ConfigError

    overrides = [
        "model.kind=sasrec",
        "model.d_model=16",
        "model.num_heads=2",
        "model.head_dim=8",
        "model.d_ff=32",
    ]
    config = load_config(
        None, overrides=[*overrides, "model.loss=bce", "model.negatives=3", "model.exclude_seen=true"]
    )
    model = build_model(config.model, [NUM_ITEMS], 6)
    assert isinstance(model, SASRec)
    assert (model.num_items, model.loss_kind, model.negatives, model.exclude_seen) == (
        NUM_ITEMS,
        "bce",
        3,
        True,
    )
    assert InnerProductRecommender(model).exclude_seen
    with pytest.raises(ValueError, match="one-token ID"):
        build_model(config.model, [4, 4, 4], 6)  # semantic IDs are not what SASRec reads
    # exclude_seen holds for generative models too: their beam search masks the history.
    assert load_config(None, overrides=["model.kind=tiger", "model.exclude_seen=true"]).model.exclude_seen
    with pytest.raises(ConfigError, match=r"model\.loss"):
        load_config(None, overrides=["model.kind=tiger", "model.loss=bce"])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_chunked_cross_entropy_matches_the_plain_one(label_smoothing):
    from genrec.models.losses import softmax_cross_entropy

    g = torch.Generator().manual_seed(3)
    h = torch.randn(37, 8, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(23, 8, dtype=torch.float64, generator=g, requires_grad=True)
    target = torch.randint(0, 23, (37,), generator=g)
    plain = torch.nn.functional.cross_entropy(
        h @ w.T, target, reduction="sum", label_smoothing=label_smoothing
    )
    chunked = softmax_cross_entropy(h, w, target, label_smoothing, max_logits=100)  # 1-row chunks
    torch.testing.assert_close(chunked, plain)
    for a, b in zip(torch.autograd.grad(chunked, (h, w)), torch.autograd.grad(plain, (h, w)), strict=True):
        torch.testing.assert_close(a, b)
    # Through the model: a batch too big for one block of logits trains exactly as a small one.
    model = tiny()
    window, lengths = cycle_windows(6, 7, seed=4)
    small = model.loss_terms({"window": window, "window_len": lengths})[0]
    model.max_logits = 2 * NUM_ITEMS  # two rows of logits at a time
    torch.testing.assert_close(model.loss_terms({"window": window, "window_len": lengths})[0], small)
