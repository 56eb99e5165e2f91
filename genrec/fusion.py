"""One ranked list from the candidate sources: the beam search, the item head, co-occurrence and
content similarity.

The constrained beam search proposes items by their semantic IDs. The ItemDecoder's item head (a
next-item softmax over the catalogue), the co-occurrence baseline (genrec.eval.baselines) and, with
profile embeddings, the content profile (genrec.profile_similarity) each propose their own
``candidates`` best items outside the history. Every candidate, whichever source found it, is
scored on fixed scales:

- ``seq``:  log P(semantic ID | history), the beam's own score (teacher-forced through the depth
  decoder for items the beam did not reach, which is the same number);
- ``head``: log P_head(item | history);
- ``cooc``: log(eps + the co-occurrence votes of the history's recent items for the item);
- ``sim``:  the cosine of the item's embedding to the history's recency-weighted profile;

and the list is ranked by ``seq + head_weight * head + cooc_weight * cooc + sim_weight * sim``. With
no extra candidates and only ``head_weight`` this is the LIGER-style re-ranking of the beam's items.
Items never seen in training (cold items) enter through their own sources and terms, capped at
``ceil(cold_epsilon * k)`` of a top k (:class:`FusionWeights`, genrec.fusion_tuning.tune_cold). The weights are
chosen on the validation split (genrec.fusion_tuning), so a new dataset gets its own; the beam alone
and every partial combination stay measurable (:data:`COMPONENTS`).

Only real catalogue items are ever ranked: the beam's are trie-constrained, the others are item
indices by construction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from genrec.eval.baselines import CoOccurrence, CoOccurrenceConfig
from genrec.files import atomic_path
from genrec.fusion_votes import BatchVotes
from genrec.profile_similarity import ProfileSimilarity

#: The rankings a fused recommender can record beside its final list (genrec.serve.beam):
#: the beam search alone (by log P(ID)); the beam's items re-ranked with the item head; the final
#: list without its cold candidates (what cold handling adds is the difference); the final.
COMPONENTS = ("beam", "beam+head", "no-cold", "fused")


@dataclass(frozen=True)
class FusionWeights:
    head_weight: float = 0.0
    cooc_weight: float = 0.0
    eps: float = 1e-3
    # Cold candidates (items never seen in training; see the module doc): their score is
    # cold_seq_weight * seq + the same head and co-occurrence terms + cold_bias, and at most
    # ceil(cold_epsilon * k) of them enter a top k.
    cold_bias: float = 0.0
    cold_seq_weight: float = 1.0
    cold_epsilon: float = 1.0
    cold_sim_weight: float = 0.0  # times the cosine of the item's content to the history's
    # Every candidate: times the cosine of its profile embedding to the history's (ProfileSimilarity).
    sim_weight: float = 0.0

    def __post_init__(self) -> None:
        weights = (
            self.head_weight,
            self.cooc_weight,
            self.cold_seq_weight,
            self.cold_sim_weight,
            self.sim_weight,
        )
        if min(weights) < 0 or self.eps <= 0:
            raise ValueError(f"fusion weights must be >= 0 and eps > 0, got {self}")
        if not (0 <= self.cold_epsilon <= 1 and np.isfinite(self.cold_bias)):
            raise ValueError(f"cold_epsilon must be in [0, 1] and cold_bias finite, got {self}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidates:
    """Per user, the candidate items [U, M] (-1 = an empty slot), their three scores [U, M] and
    whether each is a cold item (never seen in training) [U, M]."""

    items: torch.Tensor
    seq: torch.Tensor
    head: torch.Tensor
    cooc_votes: torch.Tensor
    num_beam: int  # the first num_beam columns are the beam's items, best first
    cold: torch.Tensor | None = None
    sim: torch.Tensor | None = None  # [U, M] cosine of each item's content to the history's profile

    def scores(self, w: FusionWeights, beam_only: bool = False) -> torch.Tensor:
        rest = w.head_weight * self.head
        if w.cooc_weight:
            rest = rest + w.cooc_weight * torch.log(w.eps + self.cooc_votes)
        if w.sim_weight and self.sim is not None:
            rest = rest + w.sim_weight * self.sim
        s = self.seq + rest
        if self.cold is not None and bool(self.cold.any()):
            # seq is finite for every real candidate; the product keeps 0 * seq out of -inf slots
            cold_seq = torch.where(self.items >= 0, self.seq, torch.zeros_like(self.seq)) * w.cold_seq_weight
            cold_score = cold_seq + rest + w.cold_bias
            if w.cold_sim_weight and self.sim is not None:
                cold_score = cold_score + w.cold_sim_weight * self.sim
            s = torch.where(self.cold, cold_score, s)
        s = s.masked_fill(self.items < 0, float("-inf"))
        if beam_only:
            s[:, self.num_beam :] = float("-inf")
        return s

    def top(self, w: FusionWeights, k: int, beam_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The best k items and their scores; ties keep the candidate order (beam order first).
        At most ceil(cold_epsilon * k) cold items enter the list (the best of them); the others are
        left out, even where that leaves the list short."""
        s = self.scores(w, beam_only)
        if self.cold is not None and w.cold_epsilon < 1:
            cap = math.ceil(w.cold_epsilon * k - 1e-9)
            order = torch.sort(s, dim=1, descending=True, stable=True).indices
            cold = self.cold.gather(1, order)
            over = cold & (torch.cumsum(cold.long(), dim=1) > cap)
            s = s.scatter(1, order, s.gather(1, order).masked_fill(over, float("-inf")))
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
        items = self.items.gather(1, order)
        got = s.gather(1, order)
        return items.masked_fill(torch.isinf(got), -1), got

    def without_cold(self) -> Candidates:
        """The same candidates with every cold one removed (the ranking without cold handling)."""
        if self.cold is None:
            return self
        return Candidates(
            self.items.masked_fill(self.cold, -1),
            self.seq,
            self.head,
            self.cooc_votes,
            self.num_beam,
            None,
            self.sim,
        )

    def to(self, device) -> Candidates:
        return Candidates(
            *(t.to(device) for t in (self.items, self.seq, self.head, self.cooc_votes)),
            self.num_beam,
            None if self.cold is None else self.cold.to(device),
            None if self.sim is None else self.sim.to(device),
        )


class Fusion:
    """Builds the candidates of a batch. ``cooccurrence`` is a genrec.eval.baselines.CoOccurrence
    (or None: no co-occurrence source or score); ``candidates`` is how many extra items each of the
    item head, co-occurrence and profile similarity proposes; ``similarity`` a
    genrec.profile_similarity.ProfileSimilarity (or None: no similarity score or source, except the
    model's own content rows for cold candidates)."""

    def __init__(
        self,
        weights: FusionWeights,
        cooccurrence=None,
        candidates: int = 0,
        cold_candidates: int = 0,
        similarity=None,
    ) -> None:
        if candidates < 0 or cold_candidates < 0:
            raise ValueError(f"candidates must be >= 0, got {candidates} and {cold_candidates}")
        if weights.cooc_weight and cooccurrence is None:
            raise ValueError("cooc_weight > 0 needs the co-occurrence statistics")
        self.weights = weights
        self.cooccurrence = cooccurrence
        self.candidates = int(candidates)
        self.cold_candidates = int(cold_candidates)
        self.similarity = similarity
        self._model_similarity = None  # (model, ProfileSimilarity of its content rows)

    def _similarity_for(self, model, cold_items):
        """The profile similarity of this batch: the given one; for cold candidates without one, the
        model's content rows (runs before profile embeddings); else None."""
        if self.similarity is not None:
            if self.similarity.num_items != model.num_items:
                raise ValueError(
                    f"profile embeddings cover {self.similarity.num_items} items, the model {model.num_items}"
                )
            return self.similarity
        if not (self.cold_candidates and cold_items is not None):
            return None
        cached = self._model_similarity
        if cached is None or cached[0] is not model or cached[1].num_items != model.num_items:
            self._model_similarity = (model, ProfileSimilarity(model.item_content.detach().cpu(), "content"))
        return self._model_similarity[1]

    def build(
        self,
        model,
        batch: dict[str, torch.Tensor],
        codes: torch.Tensor,
        beam_items: torch.Tensor,
        beam_scores: torch.Tensor,
        histories: Sequence[np.ndarray],
        exclude_history: bool,
        cold_search=None,
        best: int | None = None,
    ) -> Candidates:
        """The candidates of a batch. ``cold_search(m)``, where the model has cold items and the fusion
        asks for cold candidates, returns the (items, scores) [U, m] of a beam search restricted to
        them (genrec.serve.beam.BeamSearchRecommender passes it). With ``best``, only the ``top(self.weights,
        best)`` of the result will be read: a candidate that cannot reach it is not teacher-forced
        and keeps seq = -inf (the top ``best`` items and scores are those of the full candidates, to
        the rounding of the depth decoder's matmuls, which varies with how many rows they take)."""
        device = beam_items.device
        B = beam_items.shape[1]
        votes = None
        if self.cooccurrence is not None:
            votes = BatchVotes(self.cooccurrence, histories, exclude_history)
        cold_items = model.cold_items() if hasattr(model, "cold_items") else None
        if cold_items is not None and not bool(cold_items.any()):
            cold_items = None
        similarity = self._similarity_for(model, cold_items)
        profiles = similarity.profiles(histories, device) if similarity is not None else None
        exclude = histories if exclude_history else None
        cold_idx = None if cold_items is None else torch.nonzero(cold_items.to(device)).reshape(-1)
        m_cold = (
            0 if cold_idx is None or not self.cold_candidates else min(self.cold_candidates, len(cold_idx))
        )
        picks = [(None, min(self.candidates, model.num_items))] if self.candidates else []
        if m_cold:
            picks.append((cold_items.to(device), m_cold))
        # The head's log-normalizer only matters where its scores are read: in tuning (best None),
        # with a head weight, or with cold items (their cap reorders by the full score).
        normalize = best is None or self.weights.head_weight != 0 or cold_items is not None
        head = _HeadScores(model, batch, histories if exclude_history else None, picks, normalize)
        scored = [(beam_items, beam_scores.float())]  # sources whose seq score is known
        extra = []  # sources whose seq score the depth decoder computes
        if self.candidates:
            extra.append(head.tops[0])
            if votes is not None:
                extra.append(votes.top(self.candidates).to(device))
            if self.similarity is not None:  # the most similar items (cold ones come below, capped)
                warm_idx = None
                if cold_items is not None:
                    warm_idx = torch.nonzero(~cold_items.to(device)).reshape(-1)
                extra.append(similarity.best(profiles, self.candidates, exclude, among=warm_idx))
        if m_cold:
            if cold_search is not None:
                got_items, got_scores = cold_search(m_cold)
                scored.append((got_items, got_scores.float()))
            extra.append(head.tops[-1])  # the item head's best cold items
            extra.append(similarity.best(profiles, m_cold, exclude, among=cold_idx))  # the most similar
        items = torch.cat([t for t, _ in scored] + extra, dim=1)
        seq = torch.cat(
            [v for _, v in scored] + [torch.full(e.shape, float("-inf"), device=device) for e in extra], dim=1
        )
        items = _first_occurrences(items)
        known = sum(t.shape[1] for t, _ in scored)
        seq = seq.masked_fill(items < 0, float("-inf"))
        head = head.of(items)
        cooc = votes.of(items.cpu().numpy()).to(device) if votes is not None else torch.zeros_like(seq)
        cold = None if cold_items is None else cold_items.to(device)[items.clamp(min=0)] & (items >= 0)
        sim = None if similarity is None else similarity.of(profiles, items)
        cand = Candidates(items, seq, head, cooc, B, cold, sim)
        # Only the new candidates go through the depth decoder (most of a source's best items are
        # usually in the beam already).
        new = items >= 0
        new[:, :known] = False
        if best is not None and cold is None:
            new = self._teacher_force_best(model, batch, codes, cand, new, best)
        _teacher_force(model, batch, codes, cand, new)
        return cand

    def _teacher_force_best(self, model, batch, codes, cand: Candidates, new, best: int):
        """Teacher-force the new candidates that could enter the top ``best`` and return the rest
        of ``new`` that still could. A candidate's score is seq + the other terms ("rest", known
        without the depth decoder) and seq <= 0 (a sum of log-softmax values, also in floats), so
        one whose rest is below the best-th score already known cannot enter the top ``best``:
        at least ``best`` candidates score more. The new candidates with the highest rest go first,
        which makes that known score high enough to skip most of the others."""
        w = self.weights
        rest = Candidates(
            cand.items, torch.zeros_like(cand.seq), cand.head, cand.cooc_votes, 0, None, cand.sim
        )
        rest = rest.scores(w)  # exactly the terms Candidates.scores adds to seq (seq = 0 here)
        first = rest.masked_fill(~new, float("-inf")).topk(min(best, new.shape[1]), dim=1).indices
        early = torch.zeros_like(new).scatter_(1, first, True) & new
        _teacher_force(model, batch, codes, cand, early)
        if cand.items.shape[1] < best:
            return new & ~early
        floor = cand.scores(w).topk(best, dim=1).values[:, -1:]  # -inf where fewer are known
        return new & ~early & ~(rest < floor)


def _first_occurrences(items: torch.Tensor) -> torch.Tensor:
    """``items`` [U, M] with each item once per user: the first column that holds it stays, its
    repeats become -1."""
    M = items.shape[1]
    earlier = torch.ones(M, M, dtype=torch.bool, device=items.device).tril(-1)
    dup = ((items[:, :, None] == items[:, None, :]) & earlier).any(-1) & (items >= 0)
    return items.masked_fill(dup, -1)


def _teacher_force(model, batch, codes: torch.Tensor, cand: Candidates, which: torch.Tensor) -> None:
    """Fill ``cand.seq`` where ``which`` [U, M] with log P(semantic ID | history) (the depth decoder)."""
    owner, col = which.nonzero(as_tuple=True)
    if len(owner):
        cand.seq[owner, col] = model.id_log_probs(batch, codes[cand.items[owner, col]], owner)


class _HeadScores:
    """The item head's log-probabilities for a batch: each pick's best items (``picks``: (allowed
    [N] bool or None, m), outside the ``histories`` where given) and any candidates' scores. A
    catalogue of at most ``model.head_chunk`` items is scored in one [U, N] product; a larger one
    is scanned in chunks (ItemDecoder.item_head_scan), so memory does not grow with users x items."""

    def __init__(
        self, model, batch, histories: Sequence[np.ndarray] | None, picks, normalize: bool = True
    ) -> None:
        self.model = model
        chunk = getattr(model, "head_chunk", None)
        if chunk is None or model.num_items <= chunk:
            self.all = model.item_head_log_probs(batch)  # (U, N)
            device = self.all.device
            masked = self.all
            if histories is not None:
                masked = masked.masked_fill(
                    _history_mask(histories, self.all.shape[1], device), float("-inf")
                )
            self.tops = []
            for allowed, m in picks:
                scores = masked if allowed is None else masked.masked_fill(~allowed[None, :], float("-inf"))
                top = scores.topk(m, dim=1)
                self.tops.append(top.indices.masked_fill(torch.isinf(top.values), -1))
            return
        self.all = None
        exclude = None
        if histories is not None:
            device = batch["history"].device
            rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
            cols = np.concatenate([np.asarray(h, np.int64) for h in histories] or [np.zeros(0, np.int64)])
            exclude = (torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device))
        self.log_norm, self.tops, self.states = model.item_head_scan(batch, picks, exclude, normalize=normalize)

    def of(self, items: torch.Tensor) -> torch.Tensor:
        """log P_head [U, M] of candidate ``items`` [U, M] (-1: an empty slot)."""
        if self.all is not None:
            return self.all.gather(1, items.clamp(min=0))
        return self.model.item_head_log_probs_of(self.states, self.log_norm, items)


def _history_mask(histories: Sequence[np.ndarray], num_items: int, device) -> torch.Tensor:
    mask = torch.zeros(len(histories), num_items, dtype=torch.bool)
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate([np.asarray(h, np.int64) for h in histories] or [np.zeros(0, np.int64)])
    mask[torch.as_tensor(rows), torch.as_tensor(cols)] = True
    return mask.to(device)


def uses_cooccurrence(model_config) -> bool:
    """Whether a model config ranks with co-occurrence (tuned, or with a weight of its own)."""
    return model_config.item_loss > 0 and (model_config.tune_fusion or model_config.cooccurrence_weight > 0)


def config_weights(model_config) -> FusionWeights:
    """The weights a genrec.config.ModelConfig names (before any tuning)."""
    return FusionWeights(
        model_config.rerank_weight,
        model_config.cooccurrence_weight,
        model_config.cooccurrence_eps,
        cold_bias=getattr(model_config, "cold_bias", 0.0),
        cold_epsilon=getattr(model_config, "cold_epsilon", 1.0),
    )


def save_cooccurrence(path: Path, cooccurrence) -> None:
    """The statistics as safetensors (config in the metadata), written atomically."""
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(cooccurrence.arrays(), str(tmp), metadata={"config": json.dumps(cooccurrence.config())})


def load_cooccurrence(path: Path):
    """What :func:`save_cooccurrence` wrote; a missing or damaged file is an error naming it."""

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
