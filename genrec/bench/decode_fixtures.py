"""What the decode benchmarks search over: synthetic TIGER-style catalogues, their decoding index,
the models that feed the search (random precomputed logits, or ``genrec.models.Tiger`` at TIGER's
size with random weights), and batches of user histories."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from genrec.decoding import TrieIndex
from genrec.devices import synchronize
from genrec.models import Tiger
from genrec.ops import build_trie

TIGER_SIZE = dict(d_model=128, encoder_layers=4, decoder_layers=4, num_heads=6, head_dim=64, d_ff=1024)
HISTORY_ITEMS = 20
BEAUTY_ITEMS = 12_101


@dataclass(frozen=True)
class Catalogue:
    codes: torch.Tensor  # int64 [N, 4]
    level_sizes: list[int]

    @property
    def num_items(self) -> int:
        return self.codes.shape[0]


def synthetic_catalogue(num_items: int, seed: int = 0, codebook: int = 256, levels: int = 3) -> Catalogue:
    """TIGER-style IDs: ``levels`` uniform random codes of ``codebook``, then a disambiguation token
    (0, 1, ... among items sharing the same codes), so every ID is unique."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, codebook, (num_items, levels), generator=g)
    key = torch.zeros(num_items, dtype=torch.long)
    for t in range(levels):
        key = key * codebook + codes[:, t]
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    first = torch.ones(num_items, dtype=torch.bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    run_start = torch.cummax(torch.where(first, torch.arange(num_items), 0), 0).values
    dup = torch.empty(num_items, dtype=torch.long)
    dup[order] = torch.arange(num_items) - run_start
    codes = torch.cat([codes, dup[:, None]], dim=1)
    return Catalogue(codes, [codebook] * levels + [int(dup.max()) + 1 if num_items else 1])


def build_index(cat: Catalogue, device: torch.device) -> tuple[TrieIndex, dict]:
    """The catalogue's index on ``device`` and how long building it took."""
    t0 = time.perf_counter()
    build_trie(cat.codes, cat.level_sizes)
    t_cpp = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = TrieIndex.from_codes(cat.codes, level_sizes=cat.level_sizes)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = index.to(device)
    synchronize(device)
    t_move = time.perf_counter() - t0
    info = {
        "num_items": cat.num_items,
        "level_sizes": cat.level_sizes,
        "nodes_per_level": list(index.nodes_per_level),
        "dense_levels": list(index.dense_levels),
        "index_MiB": index.nbytes() / 2**20,
        "build_trie_s": t_cpp,
        "from_codes_s": t_index,
        "to_device_s": t_move,
    }
    return index, info


class PrecomputedLogits:
    """A cost-free model: fixed random logits per step shape, so only the search is timed."""

    def __init__(self, users: int, beam: int, level_sizes: list[int], device: torch.device, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.logits = [
            (torch.randn(users, 1 if t == 0 else beam, v, generator=g) * 3).to(device)
            for t, v in enumerate(level_sizes)
        ]

    def step_fn(self, batch=None):
        def step(prefix: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
            return self.logits[prefix.shape[2]]

        return step


def tiger_model(level_sizes: list[int], device: torch.device, dtype: torch.dtype):
    """``genrec.models.Tiger`` at TIGER's size with random weights (hashed user tokens, as TIGER has)."""
    torch.manual_seed(0)
    model = Tiger(level_sizes, max_history=HISTORY_ITEMS, dropout=0.0, user_buckets=2000, **TIGER_SIZE)
    return model.to(device=device, dtype=dtype).eval()


def history_batch(cat: Catalogue, users: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(0, cat.num_items, (users, HISTORY_ITEMS), generator=g)
    return {
        "history": cat.codes[items].to(device),
        "history_len": torch.randint(5, HISTORY_ITEMS + 1, (users,), generator=g).to(device),
        "user_ids": torch.arange(users).to(device),
    }
