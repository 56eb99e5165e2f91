"""Cached incremental decoding (step_fn with beam reordering) equals full forward passes.

Beams are drawn at random at every step: each new beam picks a random parent among the previous
step's beams and a random next token, so the key/value caches must follow ``parents`` exactly
for the logits to match a from-scratch forward pass over that beam's prefix.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.models import DecoderOnly, ItemDecoder, Tiger

LEVELS = [7, 5, 6, 3]


NUM_ITEMS = 40


def tiny(kind: str, user_buckets: int, tie: bool = True, variant: str = "plain"):
    """variant: "plain", "items" (item embeddings) or, for tiger, "item_tokens" (one token per item)."""
    torch.manual_seed(0)
    common = dict(
        num_items=NUM_ITEMS if variant in ("items", "item_tokens") else 0,
        max_history=6,
        d_model=16,
        num_heads=3,
        head_dim=8,
        d_ff=32,
        dropout=0.1,
        user_buckets=user_buckets,
        tie_embeddings=tie,
    )
    if kind == "tiger":
        tokens = "items" if variant == "item_tokens" else "levels"
        model = Tiger(LEVELS, encoder_layers=2, decoder_layers=2, history_tokens=tokens, **common)
    elif kind == "item_decoder":
        model = ItemDecoder(LEVELS, num_layers=2, depth_layers=2, **common)
    else:
        model = DecoderOnly(LEVELS, num_layers=2, **common)
    return model.double().eval()


def random_histories(g: torch.Generator, users: int, max_items: int, min_len: int = 1):
    lengths = torch.randint(min_len, max_items + 1, (users,), generator=g)
    S = int(lengths.max())
    history = torch.stack([torch.randint(0, v, (users, S), generator=g) for v in LEVELS], dim=-1)
    # Padding holds garbage (even out-of-range codes): models must ignore it.
    pad = torch.arange(S)[None, :] >= lengths[:, None]
    history = torch.where(pad[:, :, None], torch.full_like(history, 999), history)
    user_ids = torch.randint(-1, 50, (users,), generator=g)
    items = torch.where(
        pad, torch.full((users, S), 777), torch.randint(0, NUM_ITEMS, (users, S), generator=g)
    )
    return history, lengths, user_ids, items


def full_logits(model, history, lengths, user_ids, items, prefix: torch.Tensor, t: int) -> torch.Tensor:
    """Level-t logits for each (user, beam) prefix (U, B, t) from an uncached forward pass."""
    U, B, _ = prefix.shape
    T = len(LEVELS)
    rep = lambda x: x.repeat_interleave(B, dim=0)  # noqa: E731
    hist, lens, ids = rep(history), rep(lengths), rep(user_ids)
    its = torch.where(rep(items) == 777, torch.zeros_like(rep(items)), rep(items))
    partial = torch.zeros(U * B, T, dtype=torch.long)
    partial[:, :t] = prefix.reshape(U * B, t)
    if isinstance(model, ItemDecoder):
        clean = torch.where(hist == 999, torch.zeros_like(hist), hist)
        h = model.hidden(clean, lens, ids, its)  # (U*B, u + S, C)
        h_last = h[torch.arange(U * B), (model.user_offset + lens - 1).clamp(min=0)]
        logits = model.depth_logits(h_last, partial)[t]
    elif isinstance(model, Tiger):
        clean = torch.where(hist == 999, torch.zeros_like(hist), hist)
        batch = {
            "history": clean,
            "history_len": lens,
            "target": partial,
            "user_ids": ids,
            "history_items": its,
        }
        logits = model(batch)[t]
    else:
        S = hist.shape[1]
        window = torch.zeros(U * B, S + 1, T, dtype=torch.long)
        window[:, :S] = torch.where(hist == 999, torch.zeros_like(hist), hist)
        window[torch.arange(U * B), lens] = partial  # the partial item right after the history
        window_items = torch.cat([its, torch.zeros(U * B, 1, dtype=torch.long)], dim=1)
        window_items[torch.arange(U * B), lens] = 5  # the partial item's own index stays unseen (causal)
        h = model.hidden(window, ids, window_items)  # (U*B, N, C)
        pos = model.user_offset + lens * T + t - 1  # the token whose output predicts level t
        logits = model.codes.logits(t, h[torch.arange(U * B), pos])
    return logits.view(U, B, -1)


@pytest.mark.parametrize(
    "kind, variant, user_buckets",
    [
        ("tiger", "plain", 0),
        ("tiger", "plain", 11),
        ("tiger", "items", 11),
        ("tiger", "item_tokens", 0),
        ("decoder_only", "plain", 0),
        ("decoder_only", "plain", 11),
        ("decoder_only", "items", 11),
        ("item_decoder", "plain", 0),
        ("item_decoder", "items", 11),
    ],
)
@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), users=st.integers(1, 4), beam=st.integers(1, 5))
def test_cached_steps_match_full_forward(kind, variant, user_buckets, seed, users, beam):
    model = tiny(kind, user_buckets, variant=variant)
    g = torch.Generator().manual_seed(seed)
    history, lengths, user_ids, items = random_histories(g, users, model.max_history)
    batch = {"history": history, "history_len": lengths, "user_ids": user_ids, "history_items": items}
    step = model.step_fn(batch, beam)
    prefix = torch.zeros(users, 1, 0, dtype=torch.long)
    parents = torch.zeros(users, 1, dtype=torch.long)
    for t in range(len(LEVELS)):
        got = step(prefix, parents)
        assert got.shape == (users, prefix.shape[1], LEVELS[t])
        torch.testing.assert_close(
            got, full_logits(model, history, lengths, user_ids, items, prefix, t).float()
        )
        if t + 1 == len(LEVELS):
            break
        # The next step's beams: random parents (with repeats), random tokens appended.
        parents = torch.randint(0, prefix.shape[1], (users, beam), generator=g)
        tokens = torch.randint(0, LEVELS[t], (users, beam, 1), generator=g)
        prefix = torch.cat([prefix[torch.arange(users)[:, None], parents], tokens], dim=2)


@pytest.mark.parametrize("kind", ["tiger", "decoder_only", "item_decoder"])
def test_untied_heads_match_too(kind):
    model = tiny(kind, 0, tie=False)
    g = torch.Generator().manual_seed(3)
    history, lengths, _, items = random_histories(g, 3, model.max_history)
    step = model.step_fn({"history": history, "history_len": lengths}, 2)
    prefix = torch.zeros(3, 2, 0, dtype=torch.long)
    parents = torch.zeros(3, 2, dtype=torch.long)
    for t in range(2):
        want = full_logits(model, history, lengths, torch.full((3,), -1), items, prefix, t).float()
        torch.testing.assert_close(step(prefix, parents), want)
        parents = torch.tensor([[1, 0]] * 3)
        prefix = torch.cat([prefix[torch.arange(3)[:, None], parents], torch.ones(3, 2, 1).long()], dim=2)


@pytest.mark.parametrize("kind", ["tiger", "decoder_only", "item_decoder"])
def test_step_fn_rejects_misuse(kind):
    model = tiny(kind, 0)
    history = torch.zeros(2, 3, len(LEVELS), dtype=torch.long)
    batch = {"history": history, "history_len": torch.tensor([3, 1])}
    model.train()
    with pytest.raises(RuntimeError, match=r"model\.eval\(\)"):
        model.step_fn(batch, 2)
    model.eval()
    step = model.step_fn(batch, 2)
    with pytest.raises(ValueError, match="steps in order"):
        step(torch.zeros(2, 2, 1, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one item"):
        model.step_fn({"history": history, "history_len": torch.tensor([0, 1])}, 2)
    too_long = torch.zeros(2, model.max_history + 1, len(LEVELS), dtype=torch.long)
    with pytest.raises(ValueError, match="at most 6"):
        model.step_fn({"history": too_long, "history_len": torch.tensor([7, 7])}, 2)
    with pytest.raises(ValueError, match=r"\[users, items, 4\]"):
        model.step_fn({"history": history[..., :3], "history_len": torch.tensor([3, 1])}, 2)


@pytest.mark.parametrize("kind", ["tiger", "decoder_only", "item_decoder"])
def test_empty_history_with_user_token(kind):
    """With a user token an empty history is allowed: the user token alone conditions the decode."""
    model = tiny(kind, 5)
    history = torch.zeros(2, 1, len(LEVELS), dtype=torch.long)
    step = model.step_fn({"history": history, "history_len": torch.tensor([0, 1])}, 1)
    logits = step(torch.zeros(2, 1, 0, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", ["tiger", "decoder_only"])
def test_item_embeddings_need_item_indices(kind):
    model = tiny(kind, 0, variant="items")
    batch = {"history": torch.zeros(2, 3, len(LEVELS), dtype=torch.long), "history_len": torch.tensor([3, 1])}
    with pytest.raises(ValueError, match="history_items"):
        model.step_fn(batch, 2)


def test_decoder_only_item_embedding_does_not_leak_the_target():
    """The outputs that predict an item's levels must not depend on that item's own index."""
    model = tiny("decoder_only", 0, variant="items")
    g = torch.Generator().manual_seed(0)
    window = torch.stack([torch.randint(0, v, (1, 4), generator=g) for v in LEVELS], dim=-1)
    a = model.hidden(window, None, torch.tensor([[1, 2, 3, 4]]))
    b = model.hidden(window, None, torch.tensor([[1, 2, 3, 9]]))
    T = len(LEVELS)
    torch.testing.assert_close(a[:, : 4 * T - 1], b[:, : 4 * T - 1])  # all but the last item's last token
    assert not torch.allclose(a[:, -1], b[:, -1])


def item_head_model(item_loss: float, item_negatives: int = 0) -> ItemDecoder:
    """A tiny ItemDecoder over 9 items with an item head, without dropout."""
    torch.manual_seed(0)
    return ItemDecoder(
        LEVELS,
        max_history=4,
        d_model=16,
        num_layers=1,
        num_heads=2,
        head_dim=8,
        d_ff=32,
        dropout=0.0,
        num_items=9,
        item_loss=item_loss,
        item_negatives=item_negatives,
    ).eval()


def test_item_loss_adds_the_catalogue_cross_entropy_of_each_target():
    g = torch.Generator().manual_seed(1)
    window = torch.stack([torch.randint(0, v, (2, 5), generator=g) for v in LEVELS], dim=-1)
    items = torch.randint(0, 9, (2, 5), generator=g)
    batch = {"window": window, "window_len": torch.tensor([5, 3]), "window_items": items}
    plain, n = item_head_model(0.0).loss_terms(batch)
    m = item_head_model(0.5)
    with_items, n2 = m.loss_terms(batch)
    assert n == n2
    # By hand: the history state before each real target against every item embedding.
    h = m.hidden(window[:, :-1], torch.tensor([4, 2]), None, items[:, :-1])
    valid = torch.arange(1, 5)[None, :] < torch.tensor([5, 3])[:, None]
    logits = h[valid] @ m.item_emb.weight.T
    expected = torch.nn.functional.cross_entropy(logits, items[:, 1:][valid], reduction="sum")
    torch.testing.assert_close(with_items - plain, 0.5 * expected)
    m.item_negatives = 4  # the sampled softmax goes through the same path
    torch.manual_seed(3)
    sampled, _ = m.loss_terms(batch)
    torch.manual_seed(3)
    expected = m._item_cross_entropy(h[valid], items[:, 1:][valid], 0.0)
    torch.testing.assert_close(sampled - plain, 0.5 * expected)
    assert not torch.allclose(sampled, with_items)
    with pytest.raises(ValueError, match="item_loss"):
        ItemDecoder(LEVELS, num_items=0, item_loss=1.0)


def test_sampled_item_loss_uses_shared_uniform_negatives_without_the_target():
    m = item_head_model(1.0, item_negatives=6)
    h = torch.randn(5, 16)
    items = torch.tensor([0, 3, 3, 8, 1])
    torch.manual_seed(7)
    got = m._item_cross_entropy(h, items, 0.0)
    torch.manual_seed(7)
    negatives = torch.randint(0, 9, (6,))
    E = m.item_emb.weight
    expected = 0.0
    for n in range(5):
        others = [int(j) for j in negatives if int(j) != int(items[n])]
        logits = torch.stack([h[n] @ E[items[n]], *[h[n] @ E[j] for j in others]])
        expected = expected - torch.log_softmax(logits, 0)[0]
    torch.testing.assert_close(got, expected)
    m.item_negatives = 0  # the whole catalogue
    full = torch.nn.functional.cross_entropy(h @ E.T, items, reduction="sum")
    torch.testing.assert_close(m._item_cross_entropy(h, items, 0.0), full)
