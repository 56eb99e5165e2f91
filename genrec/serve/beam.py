"""Recommending by constrained beam search over the catalogue's semantic IDs (the generative
models), optionally fused with the item head, co-occurrence and cold candidates (genrec.fusion),
with the whole search replayed as one CUDA graph on a GPU."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from genrec.decoding import GraphedBeamSearch, TrieIndex, beam_search
from genrec.fusion import COMPONENTS, Candidates, Fusion, FusionWeights
from genrec.models import GenerativeModel
from genrec.serve.recommender import BaseRecommender


def padded_histories(flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, device) -> torch.Tensor:
    """Histories as a LongTensor [U, longest] padded with -1 (genrec.decoding's item-list form)."""
    lengths = np.asarray(ends) - np.asarray(starts)
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    cols = np.arange(width)
    valid = cols[None, :] < lengths[:, None]
    out = np.full((len(lengths), width), -1, dtype=np.int64)
    out[valid] = flat[(np.asarray(starts)[:, None] + cols[None, :])[valid]]
    return torch.as_tensor(out, device=device)


class BeamSearchRecommender(BaseRecommender):
    """Top-k items of a generative model for histories of item indices, by constrained beam search.

    ``codes`` [num_items, T] are the items' semantic IDs (the trie is built from them, unless an
    ``index`` built from the same codes is given). Only the ``model.max_history`` most recent
    items of a history are read. ``invalid_rate`` is the fraction of returned slots, over all
    calls so far, that hold no catalogue item (-1); constrained decoding keeps it at 0 whenever
    the catalogue has at least k items. ``exclude_history`` masks each user's own history items out
    of the search (through genrec.decoding's per-request masks, so no beam is spent on them).
    """

    def __init__(
        self,
        model: GenerativeModel,
        codes: np.ndarray,
        *,
        beam_size: int = 20,
        batch_users: int = 1024,
        device: torch.device | str | None = None,
        amp_dtype: torch.dtype | None = None,
        index=None,
        search=None,
        cuda_graphs: bool = True,
        exclude_history: bool = False,
        rerank_weight: float = 0.0,
        fusion: Fusion | None = None,
        record_components: bool = False,
    ) -> None:
        if (rerank_weight or fusion is not None) and not hasattr(model, "item_head_log_probs"):
            raise ValueError(
                f"rerank_weight and fusion need a model with an item head; {type(model).__name__} has none"
            )
        if fusion is None and rerank_weight:  # the beam's items re-ranked with the item head alone
            fusion = Fusion(FusionWeights(head_weight=float(rerank_weight)))
        self.fusion = fusion
        self.rerank_weight = fusion.weights.head_weight if fusion is not None else 0.0
        # With record_components, every call also keeps the beam's own top k and the beam's items
        # re-ranked by the item head (genrec.fusion.COMPONENTS), so each part stays measurable;
        # the list without cold candidates only where there are cold candidates to leave out.
        parts = [c for c in COMPONENTS if c != "no-cold" or (fusion is not None and fusion.cold_candidates)]
        self.recorded: dict[str, list[np.ndarray]] | None = (
            {name: [] for name in parts} if record_components and fusion is not None else None
        )
        #: With collect_candidates set to a list, each batch's genrec.fusion.Candidates (on the CPU)
        #: is appended to it: what tune_fusion chooses the weights from.
        self.collect_candidates: list[Candidates] | None = None
        self.model = model
        self.exclude_history = exclude_history
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self._cold_allow: torch.Tensor | None = None  # the model's cold items, for their beam search
        self.codes_np = np.asarray(codes, dtype=np.int64)
        self.codes = torch.as_tensor(self.codes_np, device=self.device)
        if self.codes.shape[1] != model.num_levels:
            raise ValueError(
                f"semantic IDs have {self.codes.shape[1]} columns but the model generates {model.num_levels}"
            )
        self.num_items = self.codes.shape[0]
        custom_search = search is not None
        if index is None or search is None:
            if index is None:  # the model's vocabulary per level, also where the codes leave a value unused
                index = TrieIndex.from_codes(self.codes, device=self.device, level_sizes=model.level_sizes)
            search = search or beam_search
        self.index, self.search = index, search
        # On a GPU the whole search of a batch replays as one CUDA graph (genrec.decoding).
        self.use_graphs = cuda_graphs and self.device.type == "cuda" and not custom_search
        self._graphed: dict[int, object] = {}
        self.beam_size = beam_size
        self.batch_users = batch_users
        self.amp_dtype = amp_dtype
        self._slots = 0
        self._invalid = 0

    @property
    def invalid_rate(self) -> float:
        return self._invalid / self._slots if self._slots else 0.0

    def extra_metrics(self) -> dict[str, float]:
        """genrec.eval merges these into its metrics after the last batch."""
        return {"invalid_rate": self.invalid_rate}

    def _check_k(self, k: int) -> None:
        extra = 2 * self.fusion.candidates if self.fusion is not None else 0
        if k > self.beam_size + extra:
            raise ValueError(
                f"k={k} exceeds the beam size {self.beam_size} (+ {extra} fused candidates): the "
                "beam search keeps only that many"
            )

    def _rank_batch(self, flat, flat_t, starts, ends, users, k: int) -> tuple[np.ndarray, np.ndarray]:
        batch = self._batch(flat_t, starts, ends, users)
        with torch.no_grad(), self._autocast():
            masks = {}
            if self.exclude_history:  # the whole history, not only the part the model reads
                masks["exclude"] = padded_histories(flat, starts, ends, self.device)
            # Re-ranking reads every beam's item; otherwise the search keeps the best k.
            want = self.beam_size if self.fusion is not None else k
            got = self._try_graphed(want, batch, masks) if self.use_graphs else None
            if got is not None:
                items, scores = got
            else:
                step = self.model.step_fn(batch, self.beam_size, check=False)
                items, scores = self.search(step, self.index, len(starts), self.beam_size, want, **masks)
            if self.fusion is not None:
                histories = [flat[a:b] for a, b in zip(starts, ends, strict=True)]
                items, scores = self._fuse(batch, items, scores, histories, k, masks)
        return items.cpu().numpy(), scores.float().cpu().numpy()

    def _ranked(self, items: np.ndarray) -> None:
        self._slots += items.size
        self._invalid += int(((items < 0) | (items >= self.num_items)).sum())

    def _cold_search(self, batch, m: int, masks: dict):
        """(items, scores) [U, m]: a beam search of m beams restricted to the model's cold items (the
        allow masks of genrec.decoding), history exclusions kept."""
        if self._cold_allow is None:
            self._cold_allow = torch.nonzero(self.model.cold_items().to(self.device)).reshape(-1)
        U = batch["history_len"].shape[0]
        step = self.model.step_fn(batch, m, check=False)
        allow = self._cold_allow[None, :].expand(U, -1)
        return self.search(step, self.index, U, m, m, allow=allow, **masks)

    def _fuse(self, batch, items: torch.Tensor, scores: torch.Tensor, histories, k: int, masks=None):
        """The best k candidates (the beam's items, and the item head's and co-occurrence's where the
        fusion proposes them) by genrec.fusion's combined score; ties keep the beam order (a stable
        sort); missing items (-1) stay last."""
        fusion = self.fusion
        masks = masks or {}
        cand = fusion.build(
            self.model,
            batch,
            self.codes,
            items,
            scores,
            histories,
            self.exclude_history,
            cold_search=lambda m: self._cold_search(batch, m, masks),
            # Tuning reads every candidate's scores; otherwise only the top k is read.
            best=k if self.collect_candidates is None else None,
        )
        if self.collect_candidates is not None:
            self.collect_candidates.append(cand.to("cpu"))
        if self.recorded is not None:
            head_only = FusionWeights(head_weight=fusion.weights.head_weight)
            for name, weights in (("beam", FusionWeights()), ("beam+head", head_only)):
                self.recorded[name].append(cand.top(weights, k, beam_only=True)[0].cpu().numpy())
            if "no-cold" in self.recorded:
                self.recorded["no-cold"].append(cand.without_cold().top(fusion.weights, k)[0].cpu().numpy())
        got_items, got_scores = cand.top(fusion.weights, k)
        if self.recorded is not None:
            self.recorded["fused"].append(got_items.cpu().numpy())
        return got_items, got_scores

    def _try_graphed(self, k: int, batch, masks):
        """The graphed search's result, or None (and eager search from now on) where the first
        capture fails: a model whose step cannot be captured still decodes, only slower."""
        first = k not in self._graphed
        try:
            return self._graph_search(k)(batch, **masks)
        except RuntimeError as err:
            if not first:
                raise
            warnings.warn(f"CUDA graph capture failed, decoding eagerly: {err}", RuntimeWarning, stacklevel=3)
            self.use_graphs = False
            self._graphed.clear()
            return None

    def _graph_search(self, k: int):
        if k not in self._graphed:
            self._graphed[k] = GraphedBeamSearch(
                lambda batch: self.model.step_fn(batch, self.beam_size, check=False),
                self.index,
                num_users=self.batch_users,
                beam_size=self.beam_size,
                top_k=k,
            )
        return self._graphed[k]

    def _batch(self, flat_t: torch.Tensor, starts, ends, users) -> dict[str, torch.Tensor]:
        """The model's history batch: the most recent ``max_history`` items, left-aligned, as semantic IDs.

        With CUDA graphs every batch has the same shapes (``max_history`` columns, user ids -1
        when unknown), so one captured graph serves them all.
        """
        if self.model.user_buckets == 0 and len(starts) and (np.asarray(ends) - np.asarray(starts)).min() < 1:
            raise ValueError("every history needs at least one item (this model has no user token)")
        width = self.model.max_history if self.use_graphs else None
        item, lengths_t, valid = self._recent_items(flat_t, starts, ends, width)
        batch = {
            "history": self.codes[item] * valid[:, :, None],
            "history_len": lengths_t,
            "history_items": item,
        }
        if users is not None:
            batch["user_ids"] = torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.device)
        elif self.use_graphs:
            batch["user_ids"] = torch.full((len(starts),), -1, dtype=torch.long, device=self.device)
        return batch


class RecordedRanking:
    """Replays the lists a :class:`BeamSearchRecommender` recorded (``recorded[name]``), call by call, through
    genrec.eval's protocol: evaluating the same rows in the same batches scores that component."""

    def __init__(self, name: str, lists: list[np.ndarray]) -> None:
        self.name = name
        self._lists = list(lists)
        self._next = 0

    def recommend(self, histories, k: int, users=None) -> np.ndarray:
        if self._next >= len(self._lists):
            raise ValueError(f"{self.name}: more calls than recorded batches ({len(self._lists)})")
        got = self._lists[self._next]
        self._next += 1
        if got.shape[0] != len(histories) or got.shape[1] < k:
            raise ValueError(f"{self.name}: recorded {got.shape}, asked for {len(histories)} x {k}")
        return got[:, :k]
