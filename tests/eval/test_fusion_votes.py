"""genrec.fusion_votes: a batch's co-occurrence votes equal CoOccurrence.voted's, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.eval.baselines import CoOccurrence, CoOccurrenceConfig
from genrec.fusion_votes import BatchVotes


def _world(seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    # Few distinct items per sequence make many equal vote sums: the tie rule is exercised.
    top = 3 if ties else n
    sequences = [
        rng.integers(0, min(top, n), size=rng.integers(1, 8)) for _ in range(int(rng.integers(1, 25)))
    ]
    sequences += [rng.integers(0, n, size=rng.integers(1, 8)) for _ in range(int(rng.integers(0, 10)))]
    counts = np.bincount(np.concatenate(sequences), minlength=n)
    config = CoOccurrenceConfig(
        window=int(rng.integers(1, 4)), directed=bool(rng.integers(0, 2)), history=int(rng.integers(1, 4))
    )
    cooc = CoOccurrence(sequences, n, counts, config)
    histories = [rng.integers(0, n, size=rng.integers(0, 6)) for _ in range(int(rng.integers(1, 9)))]
    return rng, n, cooc, histories


def _reference(cooc, histories, exclude):
    """CoOccurrence.voted's (row, item, score), history pairs dropped as the fusion did before."""
    row, item, score = cooc.voted(histories)
    if exclude:
        own = {(r, int(i)) for r, h in enumerate(histories) for i in h}
        keep = np.array([(int(r), int(i)) not in own for r, i in zip(row, item, strict=True)], dtype=bool)
        row, item, score = row[keep], item[keep], score[keep]
    return row, item, score


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 7), st.booleans(), st.booleans())
def test_best_items_and_lookups_equal_the_sorted_votes(seed, m, exclude, ties):
    rng, n, cooc, histories = _world(seed, ties)
    votes = BatchVotes(cooc, histories, exclude)
    row, item, score = _reference(cooc, histories, exclude)
    # Best m per row: the first m of each row of voted's order (votes desc, priority, index).
    top = votes.top(m).numpy()
    assert top.shape == (len(histories), m)
    for r in range(len(histories)):
        want = item[row == r][:m].tolist()
        assert top[r, : len(want)].tolist() == want and (top[r, len(want) :] == -1).all()
    # Lookups: the same float64 sums, as float32; 0 for unvoted items, excluded ones and -1 slots.
    cand = rng.integers(-1, n, size=(len(histories), 9))
    want = np.zeros(cand.shape)
    for r, i, s in zip(row, item, score, strict=True):
        want[r][cand[r] == i] = s
    want[cand < 0] = 0.0
    assert np.array_equal(votes.of(cand).numpy(), want.astype(np.float32))


def test_sums_are_bit_identical_with_voted_on_many_overlapping_votes():
    rng = np.random.default_rng(3)
    n = 40
    sequences = [rng.integers(0, n, size=12) for _ in range(300)]
    cooc = CoOccurrence(sequences, n, np.bincount(np.concatenate(sequences), minlength=n))
    histories = [rng.integers(0, n, size=5) for _ in range(50)]
    row, item, score = cooc.voted(histories)
    votes = BatchVotes(cooc, histories, exclude_history=False)
    assert np.array_equal(votes.keys, np.sort(row * n + item))
    assert np.array_equal(votes.score, score[np.argsort(row * n + item)])  # exact, not close


def test_no_votes_give_empty_lists_and_zeros():
    cooc = CoOccurrence([np.array([0, 1])], 3, np.array([1, 1, 0]))
    votes = BatchVotes(cooc, [np.array([2]), np.zeros(0, np.int64)], exclude_history=True)
    assert votes.top(2).tolist() == [[-1, -1], [-1, -1]]
    assert votes.of(np.array([[0, -1], [1, 2]])).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    # The only vote (1 after 0) is the history's own item: excluded.
    votes = BatchVotes(cooc, [np.array([0, 1])], exclude_history=True)
    assert votes.top(3).tolist() == [[-1, -1, -1]]
    assert BatchVotes(cooc, [np.array([1, 0])], exclude_history=False).top(2).tolist() == [[1, -1]]
