"""genrec.profile_similarity against brute force: profiles, candidate cosines, the most similar items
(exclusions, a restricted pool, the tie rule, blocks smaller than the catalogue) and the run file."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genrec.profile_similarity as ps
from genrec.profile_similarity import (
    PROFILE_DECAY,
    PROFILE_ITEMS,
    ProfileSimilarity,
    load_similarity,
    save_similarity,
)


def brute_profile(rows: np.ndarray, history: np.ndarray) -> np.ndarray:
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    recent = history[-PROFILE_ITEMS:]
    p = sum(PROFILE_DECAY ** (len(recent) - 1 - i) * unit[item] for i, item in enumerate(recent))
    if len(recent) == 0:
        return np.zeros(rows.shape[1])
    return p / max(np.linalg.norm(p), 1e-12)


def brute_scores(rows, history) -> np.ndarray:
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return unit.astype(np.float64) @ brute_profile(rows, history)


def check_best(got: list[int], rows, history, m, exclude: bool, among=None, tol=1e-5):
    """got is a best-first top m of the pool (the cosines as brute force computes them, up to
    rounding: items whose cosines differ by less than tol may come in either order)."""
    s = brute_scores(rows, history)
    pool = np.arange(len(rows)) if among is None else np.sort(among)
    width = min(m, len(pool))
    if exclude:
        pool = pool[~np.isin(pool, history)]
    assert len(got) == width
    chosen = [i for i in got if i >= 0]
    assert chosen == got[: len(chosen)] and len(chosen) == min(width, len(pool))
    assert set(chosen) <= set(pool.tolist()) and len(set(chosen)) == len(chosen)
    assert all(s[a] >= s[b] - tol for a, b in itertools.pairwise(chosen))
    left = [i for i in pool.tolist() if i not in chosen]
    if chosen and left:
        assert max(s[left]) <= s[chosen[-1]] + tol


@st.composite
def worlds(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    # Few distinct values: exact ties between items are common.
    rows = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    histories = [rng.integers(0, n, size=draw(st.integers(0, 14))) for _ in range(draw(st.integers(1, 5)))]
    return rows, histories, rng


@settings(max_examples=60, deadline=None)
@given(worlds())
def test_profiles_and_candidate_cosines_match_brute_force(world):
    rows, histories, rng = world
    sim = ProfileSimilarity(rows, "content")
    profiles = sim.profiles(histories, "cpu")
    for r, h in enumerate(histories):
        np.testing.assert_allclose(profiles[r].numpy(), brute_profile(rows, h), atol=1e-5)
    items = torch.as_tensor(rng.integers(-1, len(rows), size=(len(histories), 7)))
    got = sim.of(profiles, items).numpy()
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    for r, h in enumerate(histories):
        want = [0.0 if i < 0 else float(unit[i] @ brute_profile(rows, h)) for i in items[r].tolist()]
        np.testing.assert_allclose(got[r], want, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(worlds(), st.integers(1, 12), st.booleans(), st.booleans(), st.integers(1, 9))
def test_best_matches_brute_force_with_exclusions_pools_ties_and_small_blocks(world, m, exclude, restrict, block):
    rows, histories, rng = world
    among = np.sort(rng.choice(len(rows), size=max(1, len(rows) // 2), replace=False)) if restrict else None
    sim = ProfileSimilarity(rows, "content")
    old = ps.BLOCK
    ps.BLOCK = block  # blocks of a few items: the running top-m merge must keep the tie rule
    try:
        got = sim.best(
            sim.profiles(histories, "cpu"),
            m,
            histories if exclude else None,
            among=None if among is None else torch.as_tensor(among),
        )
    finally:
        ps.BLOCK = old
    for r, h in enumerate(histories):
        check_best(got[r].tolist(), rows, h, m, exclude, among)


@pytest.mark.parametrize("block", [1, 2, 3, 1 << 22])
def test_best_breaks_exact_ties_by_the_lower_index_across_blocks(block, monkeypatch):
    # Items 1, 3, 4 and 6 are the same vector (exactly tied); 0 is the history; 2 and 5 are far.
    v, far = [1.0, 1.0, 0.0], [0.0, -1.0, 1.0]
    rows = np.array([[1.0, 1.0, 0.1], v, far, v, v, far, v], np.float32)
    sim = ProfileSimilarity(rows, "text")
    monkeypatch.setattr(ps, "BLOCK", block)
    profiles = sim.profiles([np.array([0])], "cpu")
    assert sim.best(profiles, 3, [np.array([0])]).tolist() == [[1, 3, 4]]
    assert sim.best(profiles, 6, [np.array([0])]).tolist() == [[1, 3, 4, 6, 2, 5]]
    assert sim.best(profiles, 2, None, among=torch.tensor([6, 2, 4])).tolist() == [[4, 6]]


def test_an_item_without_content_is_similar_to_nothing():
    rows = np.array([[1.0, 0.0], [0.0, 0.0], [0.6, 0.8]], np.float32)
    sim = ProfileSimilarity(rows, "text")
    profiles = sim.profiles([np.array([0])], "cpu")
    np.testing.assert_allclose(sim.of(profiles, torch.tensor([[1, 2, -1]])).numpy(), [[0.0, 0.6, 0.0]], atol=1e-6)


def test_bad_embeddings_are_refused():
    with pytest.raises(ValueError, match="finite"):
        ProfileSimilarity(np.array([[np.nan, 1.0]]), "text")
    with pytest.raises(ValueError, match="items, dim"):
        ProfileSimilarity(np.zeros(3), "text")


def test_the_run_file_round_trips_and_a_wrong_file_is_named(tmp_path):
    rows = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    save_similarity(tmp_path / "similarity.safetensors", ProfileSimilarity(rows, "text"))
    back = load_similarity(tmp_path / "similarity.safetensors", 5)
    assert back.source == "text"
    np.testing.assert_allclose(back.rows.numpy(), ProfileSimilarity(rows, "text").rows.numpy())
    with pytest.raises(ValueError, match="5 items, the run has 6"):
        load_similarity(tmp_path / "similarity.safetensors", 6)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"bad\.safetensors"):
        load_similarity(tmp_path / "bad.safetensors", 5)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        load_similarity(tmp_path / "missing.safetensors", 5)


def test_extended_appends_new_items():
    sim = ProfileSimilarity(np.eye(3, dtype=np.float32), "content")
    more = sim.extended(np.array([[0.0, 2.0, 0.0]], np.float32))
    assert more.num_items == 4
    np.testing.assert_allclose(more.rows[3].numpy(), [0.0, 1.0, 0.0])
