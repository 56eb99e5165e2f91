"""The blocked behaviour probe gives the numbers of the dense [probe x warm] computation it replaced
(kept below as the reference), ties included, whatever the block size; beyond its item cap it scores
a seeded sample, the same one each time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genrec.embed import behaviour_probe as mm
from genrec.embed.behaviour_probe import BehaviourProbe, behaviour_probe, probe_sample


def dense_reference(estimates, probe, behaviour, warm, k=10):
    """genrec.embed.multimodal's behaviour_probe before blocking (now genrec.embed.behaviour_probe): one dense similarity matrix."""
    est = F.normalize(torch.from_numpy(estimates).float(), dim=-1)
    warm_idx = np.flatnonzero(warm)
    bank = torch.from_numpy(behaviour[warm_idx]).float()
    truth = torch.from_numpy(behaviour[probe]).float()
    pos = torch.from_numpy(np.searchsorted(warm_idx, probe))
    sims = est @ bank.t()
    own = sims.gather(1, pos[:, None])
    rank = (sims > own).sum(dim=1)
    kk = min(k, len(warm_idx) - 1)
    true_sims = truth @ bank.t()
    rows = torch.arange(len(probe))
    sims[rows, pos] = float("-inf")
    true_sims[rows, pos] = float("-inf")
    near_est = sims.topk(kk, dim=1).indices
    near_true = true_sims.topk(kk, dim=1).indices
    overlap = (near_est[:, :, None] == near_true[:, None, :]).any(dim=2).float().mean(dim=1)
    return {
        "items": len(probe),
        "cosine": float((est * truth).sum(dim=1).mean()),
        f"recall@{k}": float((rank < k).float().mean()),
        f"neighbours@{k}": float(overlap.mean()) if kk > 0 else 0.0,
    }


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_case(seed: int, n: int, dim: int):
    rng = np.random.default_rng(seed)
    behaviour = _unit(rng.normal(size=(n, dim)))
    warm = rng.random(n) < 0.8
    warm_idx = np.flatnonzero(warm)
    probe = np.sort(rng.choice(warm_idx, max(2, len(warm_idx) // 5), replace=False))
    noise = rng.normal(scale=rng.choice([0.1, 0.5, 2.0]), size=(len(probe), dim))
    estimates = (behaviour[probe] + noise).astype(np.float32)
    return estimates, probe, behaviour, warm


def tied_case(seed: int, n: int):
    """Vectors of four entries of +-0.5 in 8 dimensions: unit length and every dot product exact, so
    many warm items tie with each other and with the probe item itself."""
    rng = np.random.default_rng(seed)
    patterns = np.zeros((6, 8), dtype=np.float32)  # few distinct vectors: ties everywhere
    for row in patterns:
        row[rng.choice(8, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    behaviour = patterns[rng.integers(len(patterns), size=n)]
    warm = rng.random(n) < 0.9
    warm_idx = np.flatnonzero(warm)
    probe = np.sort(rng.choice(warm_idx, len(warm_idx) // 3, replace=False))
    estimates = patterns[rng.integers(len(patterns), size=len(probe))].copy()
    return estimates, probe, behaviour, warm


def _blocked(estimates, probe, behaviour, warm, block, k=10):
    scorer = BehaviourProbe(probe, behaviour, warm, k, block=block)
    assert np.array_equal(scorer.items, probe)
    return scorer(estimates)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("block", [1, 37, 500, 1 << 23])
def test_blocked_probe_equals_the_dense_one(seed, block):
    case = random_case(seed, n=[30, 120, 400, 1000][seed % 4], dim=[4, 16][seed % 2])
    assert _blocked(*case, block) == dense_reference(*case)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block", [1, 50, 1 << 23])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_blocked_probe_equals_the_dense_one_with_ties(seed, block, k):
    case = tied_case(seed, n=[40, 150, 300][seed % 3])
    assert _blocked(*case, block, k) == dense_reference(*case, k=k)


def test_a_bank_of_two_and_of_fewer_items_than_k():
    behaviour = _unit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    warm = np.array([True, True, False])
    probe = np.array([0, 1])
    estimates = behaviour[[1, 1]]
    assert _blocked(estimates, probe, behaviour, warm, 1) == dense_reference(
        estimates, probe, behaviour, warm
    )


def test_beyond_the_cap_a_seeded_sample_is_scored():
    estimates, probe, behaviour, warm = random_case(3, 600, 8)
    sample = probe_sample(probe, 25, seed=4)
    assert len(sample) == 25 and np.all(np.diff(sample) > 0) and np.isin(sample, probe).all()
    assert np.array_equal(sample, probe_sample(probe, 25, seed=4))
    assert not np.array_equal(sample, probe_sample(probe, 25, seed=5))
    assert probe_sample(probe, len(probe)) is probe
    got = behaviour_probe(estimates, probe, behaviour, warm, max_items=25, seed=4)
    rows = np.searchsorted(probe, sample)
    assert got == dense_reference(estimates[rows], sample, behaviour, warm)
    assert got["items"] == 25


def test_the_probe_refuses_estimates_of_the_wrong_length():
    estimates, probe, behaviour, warm = random_case(0, 100, 4)
    with pytest.raises(ValueError, match="estimates for"):
        BehaviourProbe(probe, behaviour, warm)(estimates[:-1])


def test_probe_size_keeps_the_probe_cost_bounded_at_catalogue_scale(monkeypatch):
    assert [mm.probe_size(n) for n in (50, 12_000, 100_000, 400_000, 1_000_000, 10_000_000)] == [
        2000, 2000, 2000, 500, 200, 200
    ]  # fmt: skip
    rng = np.random.default_rng(3)
    warm = rng.random(300) < 0.8
    behaviour = rng.standard_normal((300, 4)).astype(np.float32)
    probe = np.flatnonzero(warm)[:60]
    monkeypatch.setattr(mm, "PROBE_SIMILARITIES", 20 * int(warm.sum()))  # 20 probe items' worth
    monkeypatch.setattr(mm, "PROBE_MIN_ITEMS", 5)
    scorer = mm.BehaviourProbe(probe, behaviour, warm, seed=2)
    assert np.array_equal(scorer.items, mm.probe_sample(probe, 20, seed=2))
    assert len(mm.BehaviourProbe(probe, behaviour, warm, max_items=60).items) == 60  # an explicit cap wins
