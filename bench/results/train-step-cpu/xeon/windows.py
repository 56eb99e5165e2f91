"""The synthetic training windows of genrec.bench.train_step, for the scripts beside this file
(they run from worktrees of old commits, so they cannot import today's genrec for it)."""

import numpy as np

USERS, LEVELS = 50_000, [256, 256, 256, 4]  # as genrec.bench.train_step


def synthetic_users(num_items: int, seed: int = 0):
    """50,000 users of 5-40 uniform items and random semantic IDs: (lengths, flat items, ends, codes)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 41, USERS)
    flat = rng.integers(0, num_items, int(lengths.sum()))
    ends = np.cumsum(lengths)
    codes = np.stack([rng.integers(0, v, num_items) for v in LEVELS], axis=1)
    return lengths, flat, ends, codes
