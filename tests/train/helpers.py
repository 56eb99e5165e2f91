"""Shared pieces of the training tests: a tiny synthetic world with learnable structure."""

from __future__ import annotations

import numpy as np
import torch

from genrec.config import load_config
from genrec.model_config import KIND_SETTINGS
from genrec.models import ItemDecoder


def exhaustive_search(step_fn, codes: torch.Tensor, num_users: int, beam_size: int, top_k: int):
    """A plain constrained beam search over ``codes`` [N, T], by the decoding contract (tests only).

    Valid continuations are found by comparing each beam's prefix with every item's codes.
    """
    T = codes.shape[1]
    users = torch.arange(num_users)[:, None]
    prefix = torch.zeros(num_users, 1, 0, dtype=torch.long)
    parents = torch.zeros(num_users, 1, dtype=torch.long)
    scores = torch.zeros(num_users, 1)
    for t in range(T):
        logp = step_fn(prefix, parents).float().log_softmax(-1)  # (U, B, V)
        V = logp.shape[-1]
        match = (prefix[:, :, None, :] == codes[None, None, :, :t]).all(-1)  # (U, B, N)
        allowed = torch.zeros(num_users, prefix.shape[1], V, dtype=torch.bool)
        u, b, n = match.nonzero(as_tuple=True)
        allowed[u, b, codes[n, t]] = True
        cand = torch.where(allowed, scores[:, :, None] + logp, torch.tensor(float("-inf")))
        keep = min(beam_size, cand.shape[1] * V)
        top = cand.reshape(num_users, -1).topk(keep, dim=1)
        parents, token = top.indices // V, top.indices % V
        prefix = torch.cat([prefix[users, parents], token[:, :, None]], dim=2)
        scores = top.values
    lookup = {tuple(row): i for i, row in enumerate(codes.tolist())}
    items = torch.full((num_users, top_k), -1, dtype=torch.long)
    out = torch.full((num_users, top_k), float("-inf"))
    for u in range(num_users):
        for b in range(min(top_k, prefix.shape[1])):
            if torch.isfinite(scores[u, b]):
                items[u, b] = lookup[tuple(prefix[u, b].tolist())]
                out[u, b] = scores[u, b]
    return items, out


def synthetic_world(
    num_users: int = 60, num_items: int = 24, seed: int = 0, length: tuple[int, int] = (5, 12)
):
    """Users walk a fixed item cycle (item i is followed by item i+1): a pattern a model can learn.

    Returns (offsets, flat items, semantic IDs [num_items, 4] (3 code levels + a disambiguation
    column), level_sizes).
    """
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(num_users):
        n = int(rng.integers(length[0], length[1] + 1))
        start = int(rng.integers(num_items))
        seqs.append((start + np.arange(n)) % num_items)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    flat = np.concatenate(seqs).astype(np.int64)
    codes = np.stack(
        [np.arange(num_items) // 8, (np.arange(num_items) // 2) % 4, np.arange(num_items) % 2], 1
    )
    codes = np.concatenate([codes, np.zeros((num_items, 1), dtype=np.int64)], axis=1)
    return offsets, flat, codes.astype(np.int64), [int(num_items // 8 + 1), 4, 2, 1]


def tiny_settings(kind: str = "tiger") -> list[str]:
    """The tiny model and its training, as --set overrides: what the training and pipeline tests
    share. Model settings the kind does not read are left out (they would warn)."""
    model = {
        "d_model": 32,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "num_heads": 2,
        "head_dim": 16,
        "d_ff": 64,
        "dropout": 0.0,
        "user_buckets": 0,
    }
    return [
        f"model.kind={kind}",
        *(f"model.{name}={value}" for name, value in model.items() if name in KIND_SETTINGS[kind]),
        "train.max_history=6",
        "train.batch_size=32",
        "train.warmup_steps=10",
        "train.patience=0",
        "train.val_beam=10",
        "eval.beam_size=10",
    ]


def tiny_config(*overrides: str, kind: str = "tiger"):
    base = [*tiny_settings(kind), "train.lr=0.003", "train.log_every=5", "eval.ks=[1, 5, 10]"]
    return load_config(None, overrides=[*base, *overrides])


def item_decoder(level_sizes, num_items, item_loss=1.0, seed=0, **settings):
    """A tiny ItemDecoder with a visible item head (seeded), in eval mode; ``settings`` go to ItemDecoder."""
    torch.manual_seed(seed)
    model = ItemDecoder(
        level_sizes,
        max_history=6,
        d_model=16,
        num_layers=1,
        num_heads=2,
        head_dim=8,
        d_ff=32,
        num_items=num_items,
        item_loss=item_loss,
        **settings,
    )
    with torch.no_grad():  # a visible item head: random item vectors of a useful scale
        model.item_emb.weight.normal_(0, 1.0)
    return model.eval()
