"""Seeded synthetic catalogues for ``genrec bench scale``: raw tables the ``table`` format prepares.

The data has the shape of a retail log, so every stage does the work it does on real data:

- item popularity follows a Zipf law (``p ∝ 1 / rank^zipf``, ranks shuffled over the items);
- each item has a few fixed successors in its own category: with probability ``follow`` a
  user's next item is a successor of the previous one, else a fresh popularity draw, so
  sequences carry structure a model can learn;
- items have a brand (within their category), a category path and a short title;
- users have at least 3 interactions (leave-one-out) and lengths with a long tail; the counts
  of items, users and interactions are exactly the ones asked for (every item occurs at least
  once, as the ``table`` format requires of the items file).

Everything is vectorised numpy in memory linear in the counts (the sequence walk loops over
positions, not users): 1 M items, 1 M users and 20 M interactions take seconds and ~2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genrec.files import default_mode, replace_dir
from genrec.tokenize.semantic_ids import disambiguate

#: The sizes of the catalogue-scale issue: items -> (users, interactions).
STANDARD_SIZES = {
    12_000: (22_000, 200_000),
    100_000: (200_000, 2_000_000),
    1_000_000: (1_000_000, 20_000_000),
}
MIN_INTERACTIONS_PER_USER = 3  # leave-one-out: one training item, one validation, one test
_NOUNS = ("serum", "cream", "lotion", "mask", "oil", "gel", "balm", "tonic", "cleanser", "spray")
_ADJECTIVES = ("daily", "gentle", "rich", "light", "fresh", "pure", "soft", "deep", "clear", "bright")


@dataclass(frozen=True)
class SyntheticSpec:
    items: int
    users: int
    interactions: int
    seed: int = 0
    zipf: float = 0.9
    """Popularity exponent: the item of rank r is drawn with probability ∝ 1 / r^zipf."""
    follow: float = 0.6
    """Probability that the next item is one of the previous item's successors."""
    successors: int = 4
    """Fixed successors per item (same category)."""

    def __post_init__(self) -> None:
        if self.items < 2 or self.users < 1:
            raise ValueError(f"need at least 2 items and 1 user, got items={self.items}, users={self.users}")
        if self.interactions < MIN_INTERACTIONS_PER_USER * self.users:
            raise ValueError(
                f"interactions={self.interactions:,} is below {MIN_INTERACTIONS_PER_USER} per user "
                f"({MIN_INTERACTIONS_PER_USER * self.users:,} for {self.users:,} users)"
            )
        if self.interactions < self.items:
            raise ValueError(
                f"interactions={self.interactions:,} cannot cover {self.items:,} items (each occurs once at least)"
            )
        if not (0 <= self.follow <= 1) or self.zipf < 0 or self.successors < 1:
            raise ValueError("need 0 <= follow <= 1, zipf >= 0 and successors >= 1")

    @classmethod
    def standard(cls, items: int, seed: int = 0) -> SyntheticSpec:
        """The issue's size for ``items`` (users and interactions scaled from the nearest row:
        ~1.8 users per item up to 100 k items, 1 per item above; 10 then 20 interactions per user)."""
        if items in STANDARD_SIZES:
            users, interactions = STANDARD_SIZES[items]
        else:
            users = max(1, round(items * (2.0 if items <= 100_000 else 1.0)))
            interactions = max(users * (10 if items <= 100_000 else 20), items)
        return cls(items, users, interactions, seed)


@dataclass
class SyntheticData:
    """Interactions sorted by user then time, and the item attributes (index i = item id i)."""

    user: np.ndarray  # int64 [I]
    item: np.ndarray  # int64 [I]
    timestamp: np.ndarray  # int64 [I], increasing within a user
    category: np.ndarray  # int64 [N]
    brand: np.ndarray  # int64 [N]
    successors: np.ndarray  # int64 [N, S]


def _zipf_draws(n: int, exponent: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` popularity ranks (0 = most popular) with P(rank r) ~ 1 / (r + 1)^exponent: the
    inverse CDF of the continuous power law on [1, n + 1), floored. O(1) a draw, no n-sized CDF search."""
    u = rng.random(size)
    if abs(exponent - 1.0) < 1e-9:
        x = np.exp(u * np.log(n + 1.0))
    else:
        e = 1.0 - exponent
        x = (u * ((n + 1.0) ** e - 1.0) + 1.0) ** (1.0 / e)
    return np.minimum(x.astype(np.int64) - 1, n - 1)


def _user_lengths(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """3 + a long-tailed share of the remaining interactions; sums to ``spec.interactions``."""
    extra = spec.interactions - MIN_INTERACTIONS_PER_USER * spec.users
    weights = rng.lognormal(0.0, 1.0, spec.users)
    # Largest-remainder rounding: exact total without a multinomial over every user.
    share = weights / weights.sum() * extra
    lengths = np.floor(share).astype(np.int64)
    short = extra - int(lengths.sum())
    if short:
        lengths[np.argpartition(lengths - share, short - 1)[:short]] += 1
    return lengths + MIN_INTERACTIONS_PER_USER


def _catalogue(spec: SyntheticSpec, rng: np.random.Generator):
    n = spec.items
    num_categories = max(4, n // 500)
    brands_per_category = 8
    category = rng.integers(0, num_categories, n)
    brand = category * brands_per_category + rng.integers(0, brands_per_category, n)
    # Successors: uniform items of the same category (items grouped by category, then a random
    # position inside the item's own group).
    by_category = np.argsort(category, kind="stable")
    counts = np.bincount(category, minlength=num_categories)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offsets = (rng.random((n, spec.successors)) * counts[category][:, None]).astype(np.int64)
    successors = by_category[starts[category][:, None] + offsets]
    return category, brand, successors


def generate(spec: SyntheticSpec) -> SyntheticData:
    """The synthetic interaction log of ``spec`` (deterministic for its seed)."""
    rng = np.random.default_rng(spec.seed)
    category, brand, successors = _catalogue(spec, rng)
    lengths = _user_lengths(spec, rng)
    starts = np.zeros(spec.users, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    total = spec.interactions
    by_rank = rng.permutation(spec.items)  # popularity rank is not the item index
    fresh = by_rank[_zipf_draws(spec.items, spec.zipf, total, rng)]  # a popularity draw for every slot
    item = np.empty(total, dtype=np.int64)
    item[starts] = fresh[starts]
    # Walk all users one position at a time: users sorted by length, so the active ones are a prefix.
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    for t in range(1, int(lengths.max())):
        active = order[: np.searchsorted(-sorted_lengths, -t, side="left")]
        slots = starts[active] + t
        pick = successors[item[slots - 1], rng.integers(0, spec.successors, len(slots))]
        follow = rng.random(len(slots)) < spec.follow
        item[slots] = np.where(follow, pick, fresh[slots])
    _cover_every_item(item, spec.items, rng)
    user = np.repeat(np.arange(spec.users, dtype=np.int64), lengths)
    position = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    first_day = rng.integers(0, 365, spec.users)
    # One interaction a day from the user's first day, at a random second of that day: increasing.
    timestamp = 1_600_000_000 + (np.repeat(first_day, lengths) + position) * 86_400 + rng.integers(0, 86_400, total)
    return SyntheticData(user, item, timestamp, category, brand, successors)


def _cover_every_item(item: np.ndarray, num_items: int, rng: np.random.Generator) -> None:
    """Give each item no draw reached one slot, taken from items drawn more than once (each gives
    up at most count - 1 slots, so none is left without one). Slots are sampled a few times the
    number needed, not sorted all: cost ~ the number of missing items, plus one bincount."""
    counts = np.bincount(item, minlength=num_items)
    missing = np.flatnonzero(counts == 0)
    while len(missing):
        sample = np.unique(rng.integers(0, len(item), 2 * len(missing) + 16))
        owner = item[sample]
        by_owner = np.argsort(owner, kind="stable")
        sorted_owner = owner[by_owner]
        rank = np.empty(len(sample), dtype=np.int64)
        rank[by_owner] = np.arange(len(sample)) - np.searchsorted(sorted_owner, sorted_owner, side="left")
        spare = sample[rank < counts[owner] - 1]
        spare = spare[rng.permutation(len(spare))][: len(missing)]
        counts -= np.bincount(item[spare], minlength=num_items)  # an owner may give up several
        item[spare] = missing[: len(spare)]
        counts[missing[: len(spare)]] += 1
        missing = missing[len(spare) :]


def item_titles(data: SyntheticData) -> list[str]:
    """A short title per item: an adjective, a noun, the brand, and the item number (unique)."""
    n = len(data.category)
    adj = np.asarray(_ADJECTIVES)[np.arange(n) % len(_ADJECTIVES)]
    noun = np.asarray(_NOUNS)[data.category % len(_NOUNS)]
    return [f"{a} {b} by brand {c} no. {i}" for i, (a, b, c) in enumerate(zip(adj, noun, data.brand, strict=True))]


def write_raw(spec: SyntheticSpec, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``interactions.parquet`` (user_id, item_id, timestamp), ``items.parquet`` (item_id,
    title, brand, categories) and ``synthetic.json`` (the spec) into ``out_dir``, atomically:
    ``genrec data prepare --format table --source OUT/interactions.parquet --items OUT/items.parquet``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty; pass overwrite=True to replace it")
        if not (out_dir / "synthetic.json").is_file():
            raise FileExistsError(f"{out_dir} holds files that are not a synthetic dataset; refusing to replace it")
    data = generate(spec)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        interactions = pa.table({"user_id": data.user, "item_id": data.item, "timestamp": data.timestamp})
        pq.write_table(interactions, tmp / "interactions.parquet")
        del interactions
        n = spec.items
        category_names = pa.array([f"category {c}" for c in range(int(data.category.max()) + 1)])
        top = pa.array([f"department {c % 7}" for c in range(int(data.category.max()) + 1)])
        # Each item's path: [department, category], as a list column built from flat arrays.
        flat = pa.concat_arrays(
            [top.take(pa.array(data.category)), category_names.take(pa.array(data.category))]
        ).take(pa.array(np.stack([np.arange(n), np.arange(n) + n], 1).ravel()))
        categories = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), flat)
        items = pa.table(
            {
                "item_id": np.arange(n, dtype=np.int64),
                "title": pa.array(item_titles(data)),
                "brand": pa.array([f"brand {b}" for b in data.brand.tolist()]),
                "categories": categories,
            }
        )
        pq.write_table(items, tmp / "items.parquet")
        (tmp / "synthetic.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
        os.chmod(tmp, default_mode(0o777))
        for p in tmp.iterdir():
            os.chmod(p, default_mode())
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# ---------------------------------------------------------------- decoding at catalogue scale
#: Zipf exponent of the code cells' popularity in :func:`synthetic_semantic_ids`: calibrated on the
#: largest cell residual k-means gave on this module's catalogues (54 items at 100k, 491 at 1M,
#: bench/results/scale-cpu/NOTES.md); the exponent gives ~50 and ~420.
CELL_ZIPF = 0.6


def synthetic_codes(num_items: int, seed: int = 0, codebook: int = 256, levels: int = 3,
                    zipf: float = CELL_ZIPF) -> np.ndarray:  # fmt: skip
    """int64 [N, levels]: each item's code cell drawn with Zipf popularity over all codebook^levels
    cells (the popularity ranks spread over the cells by an affine bijection mod codebook^levels),
    so a few cells hold many items, as residual k-means leaves them on real embeddings. The cell
    count must be a power of two (codebook a power of two) for the bijection."""
    cells = codebook**levels
    if cells & (cells - 1) or cells > 2**62:
        raise ValueError(f"codebook^levels = {cells} must be a power of two below 2^62")
    rng = np.random.default_rng(seed)
    rank = _zipf_draws(cells, zipf, num_items, rng)
    a = np.uint64(int(rng.integers(0, cells // 2)) * 2 + 1)  # odd: a bijection modulo a power of two
    b = np.uint64(rng.integers(0, cells))
    # uint64 arithmetic wraps modulo 2^64, which cells divides: the result is (rank * a + b) mod cells.
    cell = ((rank.astype(np.uint64) * a + b) % np.uint64(cells)).astype(np.int64)
    return np.stack(np.unravel_index(cell, (codebook,) * levels), axis=1).astype(np.int64)


def synthetic_semantic_ids(num_items: int, seed: int = 0, codebook: int = 256, levels: int = 3,
                           zipf: float = CELL_ZIPF) -> tuple[np.ndarray, list[int]]:  # fmt: skip
    """(semantic IDs int64 [N, levels + 1], level sizes): :func:`synthetic_codes` plus genrec's
    disambiguation token (item-index order in a cell), its level as wide as the largest cell."""
    ids = disambiguate(synthetic_codes(num_items, seed, codebook, levels, zipf), max(num_items, 1))
    return ids, [codebook] * levels + [int(ids[:, -1].max()) + 1 if num_items else 1]


@dataclass(frozen=True)
class SyntheticEmbeddings:
    """Item embeddings float32 [items, dim] made block by block, so any row range is the same
    whatever the chunking and 10 M x 192 never needs to be in memory at once.

    A two-level Gaussian mixture (topics, subtopics around them, items around a subtopic drawn
    with Zipf popularity), so residual k-means meets dense and sparse regions as on real data.
    """

    items: int
    dim: int = 192
    seed: int = 0
    topics: int = 256
    subtopics: int = 64
    """Per topic."""
    zipf: float = 0.9
    noise: float = 0.8
    """Scale of an item's offset from its subtopic centre (topic centres have scale 1 per dimension,
    subtopics 0.5 around them). With 0.8, residual k-means on 100k rows (genrec.bench.scale_decode)
    gives 91k distinct codes and a largest cell of 54 items; on the 100k catalogue's real
    embeddings the pipeline's tokenizer gave 93.5k and 54."""
    block: int = 65_536

    def __post_init__(self) -> None:
        if self.items < 1 or self.dim < 1 or self.block < 1 or self.topics < 1 or self.subtopics < 1:
            raise ValueError(f"need positive items, dim, block, topics and subtopics: {self}")

    @cached_property
    def centres(self) -> np.ndarray:
        """float32 [topics * subtopics, dim]: the subtopic centres."""
        rng = np.random.default_rng([self.seed, 0])
        topic = rng.standard_normal((self.topics, 1, self.dim), dtype=np.float32)
        offset = 0.5 * rng.standard_normal((self.topics, self.subtopics, self.dim), dtype=np.float32)
        return (topic + offset).reshape(-1, self.dim)

    @cached_property
    def _by_rank(self) -> np.ndarray:
        """Subtopic of each popularity rank (rank is not the subtopic index)."""
        return np.random.default_rng([self.seed, 2]).permutation(self.topics * self.subtopics)

    def _block(self, b: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1, b])
        rows = min(self.block, self.items - b * self.block)
        which = self._by_rank[_zipf_draws(len(self._by_rank), self.zipf, rows, rng)]
        out = rng.standard_normal((rows, self.dim), dtype=np.float32)
        out *= self.noise
        out += self.centres[which]
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` .. ``stop - 1``, float32 [stop - start, dim]."""
        if not 0 <= start <= stop <= self.items:
            raise ValueError(f"rows {start}..{stop} outside 0..{self.items}")
        if start == stop:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for b in range(start // self.block, (stop - 1) // self.block + 1):
            first = b * self.block
            parts.append(self._block(b)[max(start - first, 0) : stop - first])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _main() -> None:
    parser = argparse.ArgumentParser(description="Write a seeded synthetic catalogue as raw tables.")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--items", required=True, type=int)
    parser.add_argument("--users", required=True, type=int)
    parser.add_argument("--interactions", required=True, type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    spec = SyntheticSpec(args.items, args.users, args.interactions, args.seed)
    write_raw(spec, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: {spec.items:,} items, {spec.users:,} users, {spec.interactions:,} interactions "
          f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    _main()
