"""One ranked list from three candidate sources: the beam search, the item head and co-occurrence.

The constrained beam search proposes items by their semantic IDs. The ItemDecoder's item head (a
next-item softmax over the catalogue) and the co-occurrence baseline (genrec.eval.baselines)
each propose their own ``candidates`` best items outside the history. Every candidate, whichever
source found it, is scored on three fixed scales:

- ``seq``:  log P(semantic ID | history), the beam's own score (teacher-forced through the depth
  decoder for items the beam did not reach, which is the same number);
- ``head``: log P_head(item | history);
- ``cooc``: log(eps + the co-occurrence votes of the history's recent items for the item);

and the list is ranked by ``seq + head_weight * head + cooc_weight * cooc``. With no extra
candidates and ``cooc_weight`` 0 this is the LIGER-style re-ranking of the beam's items. The
weights are chosen on the validation split (:func:`tune_fusion`), so a new dataset gets its own;
the beam alone and every partial combination stay measurable (:data:`COMPONENTS`).

Only real catalogue items are ever ranked: the beam's are trie-constrained, the others are item
indices by construction.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

#: The rankings a fused recommender can record beside its final list (genrec.recommend):
#: the beam search alone (by log P(ID)); the beam's items re-ranked with the item head; the final.
COMPONENTS = ("beam", "beam+head", "fused")


@dataclass(frozen=True)
class FusionWeights:
    head_weight: float = 0.0
    cooc_weight: float = 0.0
    eps: float = 1e-3

    def __post_init__(self) -> None:
        if self.head_weight < 0 or self.cooc_weight < 0 or self.eps <= 0:
            raise ValueError(f"fusion weights must be >= 0 and eps > 0, got {self}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidates:
    """Per user, the candidate items [U, M] (-1 = an empty slot) and their three scores [U, M]."""

    items: torch.Tensor
    seq: torch.Tensor
    head: torch.Tensor
    cooc_votes: torch.Tensor
    num_beam: int  # the first num_beam columns are the beam's items, best first

    def scores(self, w: FusionWeights, beam_only: bool = False) -> torch.Tensor:
        s = self.seq + w.head_weight * self.head
        if w.cooc_weight:
            s = s + w.cooc_weight * torch.log(w.eps + self.cooc_votes)
        s = s.masked_fill(self.items < 0, float("-inf"))
        if beam_only:
            s[:, self.num_beam :] = float("-inf")
        return s

    def top(self, w: FusionWeights, k: int, beam_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The best k items and their scores; ties keep the candidate order (beam order first)."""
        s = self.scores(w, beam_only)
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
        items = self.items.gather(1, order)
        got = s.gather(1, order)
        return items.masked_fill(torch.isinf(got), -1), got

    def to(self, device) -> Candidates:
        return Candidates(
            *(t.to(device) for t in (self.items, self.seq, self.head, self.cooc_votes)), self.num_beam
        )


class Fusion:
    """Builds the candidates of a batch. ``cooccurrence`` is a genrec.eval.baselines.CoOccurrence
    (or None: no co-occurrence source or score); ``candidates`` is how many extra items each of the
    item head and co-occurrence proposes."""

    def __init__(self, weights: FusionWeights, cooccurrence=None, candidates: int = 0) -> None:
        if candidates < 0:
            raise ValueError(f"candidates must be >= 0, got {candidates}")
        if weights.cooc_weight and cooccurrence is None:
            raise ValueError("cooc_weight > 0 needs the co-occurrence statistics")
        self.weights = weights
        self.cooccurrence = cooccurrence
        self.candidates = int(candidates)

    def build(
        self,
        model,
        batch: dict[str, torch.Tensor],
        codes: torch.Tensor,
        beam_items: torch.Tensor,
        beam_scores: torch.Tensor,
        histories: Sequence[np.ndarray],
        exclude_history: bool,
    ) -> Candidates:
        device = beam_items.device
        U, B = beam_items.shape
        head_all = model.item_head_log_probs(batch)  # (U, N)
        history = _history_mask(histories, head_all.shape[1], device) if exclude_history else None
        votes = self._votes(histories, exclude_history) if self.cooccurrence is not None else None
        extra = []
        if self.candidates:
            masked = head_all if history is None else head_all.masked_fill(history, float("-inf"))
            extra.append(masked.topk(min(self.candidates, masked.shape[1]), dim=1).indices)
            if votes is not None:
                extra.append(_top_voted(votes, U, self.candidates).to(device))
        if extra:
            ext = torch.cat(extra, dim=1)
            seen = (ext[:, :, None] == beam_items[:, None, :]).any(-1)
            E = ext.shape[1]
            earlier = torch.ones(E, E, dtype=torch.bool, device=device).tril(-1)
            seen |= ((ext[:, :, None] == ext[:, None, :]) & earlier).any(-1)
            ext = ext.masked_fill(seen, -1)
            # Only the new candidates go through the depth decoder (most of a source's best
            # items are usually in the beam already).
            owner, col = (ext >= 0).nonzero(as_tuple=True)
            ext_seq = torch.full(ext.shape, float("-inf"), device=device)
            if len(owner):
                ext_seq[owner, col] = model.id_log_probs(batch, codes[ext[owner, col]], owner)
            items = torch.cat([beam_items, ext], dim=1)
            seq = torch.cat([beam_scores.float(), ext_seq], dim=1)
        else:
            items, seq = beam_items, beam_scores.float()
        head = head_all.gather(1, items.clamp(min=0))
        cooc = (
            _lookup(votes, items.cpu().numpy()).to(device)
            if votes is not None
            else torch.zeros_like(seq)
        )
        return Candidates(items, seq, head, cooc, B)

    def _votes(self, histories: Sequence[np.ndarray], exclude_history: bool):
        cooc = self.cooccurrence
        row, item, score = cooc.voted([np.asarray(h, dtype=np.int64) for h in histories])
        if exclude_history:
            n = cooc.num_items
            hist_keys = np.concatenate(
                [np.full(len(h), r, np.int64) * n + np.asarray(h, np.int64) for r, h in enumerate(histories)]
                or [np.zeros(0, np.int64)]
            )
            keep = ~np.isin(row * n + item, hist_keys)
            row, item, score = row[keep], item[keep], score[keep]
        return row, item, score, cooc.num_items


def _history_mask(histories: Sequence[np.ndarray], num_items: int, device) -> torch.Tensor:
    mask = torch.zeros(len(histories), num_items, dtype=torch.bool)
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate([np.asarray(h, np.int64) for h in histories] or [np.zeros(0, np.int64)])
    mask[torch.as_tensor(rows), torch.as_tensor(cols)] = True
    return mask.to(device)


def _top_voted(votes, U: int, m: int) -> torch.Tensor:
    """[U, m]: each row's m best voted items (votes come sorted best first per row), -1 padded."""
    row, item, _, _ = votes
    place = np.arange(len(row)) - np.searchsorted(row, row)
    out = np.full((U, m), -1, dtype=np.int64)
    keep = place < m
    out[row[keep], place[keep]] = item[keep]
    return torch.as_tensor(out)


def _lookup(votes, items: np.ndarray) -> torch.Tensor:
    """[U, M] float32: the summed votes for each candidate (0 where none, or for -1 slots)."""
    row, item, score, n = votes
    keys = row * n + item
    order = np.argsort(keys, kind="stable")
    keys, score = keys[order], score[order]
    want = (np.arange(items.shape[0])[:, None] * n + np.maximum(items, 0)).ravel()
    pos = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
    found = (keys[pos] == want) if len(keys) else np.zeros(len(want), bool)
    out = np.where(found, score[pos] if len(keys) else 0.0, 0.0).reshape(items.shape)
    out[items < 0] = 0.0
    return torch.as_tensor(out, dtype=torch.float32)


#: The weights :func:`tune_fusion` tries (every combination).
HEAD_WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
COOC_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
EPS = (1e-4, 1e-3, 1e-2)


def tune_fusion(
    candidates: Sequence[Candidates],
    targets: np.ndarray,
    metric: str = "ndcg@10",
    cooc: bool = True,
) -> tuple[FusionWeights, list[dict]]:
    """The weights with the best ``metric`` (ndcg@K or recall@K) over validation rows whose
    candidates (in row order, batch by batch) and held-out ``targets`` are given; and the table of
    every combination tried. Ties keep the earlier (smaller) combination.

    Each combination costs a few element-wise passes: a target's rank is the number of candidates
    scored above it, plus those tied with it earlier in the candidate order (the stable sort's rule)."""
    name, k = metric.split("@")
    k = int(k)
    if name not in ("ndcg", "recall"):
        raise ValueError(f"metric must be ndcg@K or recall@K, got {metric!r}")
    total = sum(len(c.items) for c in candidates)
    if total != len(targets):
        raise ValueError(f"candidates cover {total} rows, targets {len(targets)}")
    targets_t = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    batches, lo = [], 0
    for cand in candidates:
        t = targets_t[lo : lo + len(cand.items)]
        lo += len(cand.items)
        is_target = cand.items == t[:, None]
        found = is_target.any(1)
        pos = is_target.float().argmax(1)
        before = torch.arange(cand.items.shape[1])[None, :] < pos[:, None]
        batches.append((cand, found, pos, before))
    grid = [
        FusionWeights(h, c, e)
        for h, c, e in itertools.product(HEAD_WEIGHTS, COOC_WEIGHTS if cooc else (0.0,), EPS)
        if c or e == EPS[0]  # eps only matters with a co-occurrence weight
    ]
    table = []
    for w in grid:
        ndcg = recall = 0.0
        for cand, found, pos, before in batches:
            s = cand.scores(w)
            st = s.gather(1, pos[:, None])
            rank = ((s > st) | ((s == st) & before)).sum(1)
            hit = found & (rank < k) & torch.isfinite(st[:, 0])
            recall += float(hit.sum())
            ndcg += float((hit / torch.log2(rank.float() + 2)).sum())
        table.append({**w.to_dict(), f"recall@{k}": recall / total, f"ndcg@{k}": ndcg / total})
    best = max(range(len(grid)), key=lambda i: (table[i][metric], -i))
    return grid[best], table


def uses_cooccurrence(model_config) -> bool:
    """Whether a model config ranks with co-occurrence (tuned, or with a weight of its own)."""
    return model_config.item_loss > 0 and (model_config.tune_fusion or model_config.cooccurrence_weight > 0)


def config_weights(model_config) -> FusionWeights:
    """The weights a genrec.config.ModelConfig names (before any tuning)."""
    return FusionWeights(
        model_config.rerank_weight, model_config.cooccurrence_weight, model_config.cooccurrence_eps
    )


def save_cooccurrence(path: Path, cooccurrence) -> None:
    """The statistics as safetensors (config in the metadata), written atomically."""
    from safetensors.numpy import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(cooccurrence.arrays(), str(tmp), metadata={"config": json.dumps(cooccurrence.config())})
    tmp.replace(path)


def load_cooccurrence(path: Path):
    """What :func:`save_cooccurrence` wrote; a missing or damaged file is an error naming it."""
    from safetensors import SafetensorError, safe_open

    from genrec.eval.baselines import CoOccurrence, CoOccurrenceConfig

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run ranks with co-occurrence statistics")
    try:
        with safe_open(str(path), framework="numpy") as f:
            config = CoOccurrenceConfig(**json.loads((f.metadata() or {})["config"]))
            arrays = {k: f.get_tensor(k) for k in ("indptr", "indices", "values", "train_counts")}
        return CoOccurrence.from_arrays(arrays, config)
    except (SafetensorError, KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid co-occurrence statistics ({e})") from None
