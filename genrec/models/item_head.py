"""ItemDecoder's item side (genrec.models.item_decoder): one vector per item (a free embedding,
plus the projection of its content vector where the model has content vectors), the catalogue's
cold items and items added after training, and the item head: log P(item | history) by a softmax
over the item vectors, the next-item term of the loss and the second scorer of the fusion.

A mixin: it reads the attributes ItemDecoder.__init__ sets (``item_emb``, ``content_dim``,
``item_content``, ``item_trained``, ``content_proj``, ``content_dropout``, ``item_negatives``,
``codes``, ``num_levels``) and calls its ``_last_states``, ``depth_logits`` and ``hidden``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genrec.models.losses import softmax_cross_entropy


class ItemHead:
    # ---- item vectors ----
    def item_vectors(self, idx: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The vectors of items ``idx`` (any shape; None: the whole catalogue) [..., C]: the free item
        embedding, plus with content vectors the projected content embedding, where the free part
        counts only for items seen in training (and, in a training step, not dropped by ``keep``
        [num_items] bool)."""
        free = self.item_emb.weight if idx is None else self.item_emb(idx)
        if not self.content_dim:
            return free
        content = self.item_content if idx is None else self.item_content[idx]
        use_free = self.item_trained if idx is None else self.item_trained[idx]
        if keep is not None:
            use_free = use_free & (keep if idx is None else keep[idx])
        return free * use_free[..., None].to(free.dtype) + self.content_proj(content.to(free.dtype))

    def _free_vector_keep(self, device) -> torch.Tensor | None:
        """In training with content vectors, the items whose free embedding this step keeps: each is
        dropped with probability content_dropout (as DropoutNet does), so the content part alone
        learns to rank items, on the scale the items never seen in training are scored on."""
        if not (self.training and self.content_dim and self.content_dropout):
            return None
        return torch.rand(self.num_items, device=device) >= self.content_dropout

    def set_item_content(self, content, trained) -> None:
        """Fill the content table [num_items, content_dim] (rows L2-normalised here) and the mask of
        items seen in training [num_items] (the others score by their content alone)."""
        if not self.content_dim:
            raise ValueError("this model has no content vectors (content_dim = 0)")
        content = torch.as_tensor(content, dtype=torch.float32)
        trained = torch.as_tensor(trained, dtype=torch.bool)
        if tuple(content.shape) != (self.num_items, self.content_dim) or tuple(trained.shape) != (
            self.num_items,
        ):
            raise ValueError(
                f"item content must be [{self.num_items}, {self.content_dim}] and the trained mask "
                f"[{self.num_items}], got {list(content.shape)} and {list(trained.shape)}"
            )
        if not torch.isfinite(content).all():
            raise ValueError("item content holds NaN or infinite values")
        content = content / content.norm(dim=1, keepdim=True).clamp(min=1e-12)
        self.item_content.copy_(content)
        self.item_trained.copy_(trained)

    def cold_items(self) -> torch.Tensor | None:
        """bool [num_items]: items never seen in training (None without content vectors)."""
        return ~self.item_trained if self.content_dim else None

    def add_items(self, content) -> None:
        """Append ``content`` [n, content_dim] as n new items (indices num_items..num_items+n-1), never
        seen in training: a zero free embedding, scored by their content. The caller extends the
        semantic IDs and the decoding index to match."""
        if not self.content_dim:
            raise ValueError("adding items needs a model with content vectors (model.content_vectors)")
        content = torch.as_tensor(content, dtype=torch.float32, device=self.item_content.device)
        if content.ndim != 2 or content.shape[1] != self.content_dim or not torch.isfinite(content).all():
            raise ValueError(
                f"new items' content must be finite [n, {self.content_dim}], got {list(content.shape)}"
            )
        n = content.shape[0]
        self._states_memo = None  # the item table is replaced below
        old = self.item_emb
        self.item_emb = nn.Embedding(
            self.num_items + n,
            old.embedding_dim,
            device=old.weight.device,
            dtype=old.weight.dtype,
            sparse=old.sparse,
        )
        with torch.no_grad():
            self.item_emb.weight[: self.num_items] = old.weight
            self.item_emb.weight[self.num_items :] = 0
        content = content / content.norm(dim=1, keepdim=True).clamp(min=1e-12)
        self.item_content = torch.cat([self.item_content, content])
        self.item_trained = torch.cat([self.item_trained, self.item_trained.new_zeros(n)])
        self.num_items += n

    def _item_cross_entropy(
        self, h: torch.Tensor, items: torch.Tensor, label_smoothing: float, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Summed cross-entropy of the target ``items`` (N,) after states ``h`` (N, C): over the whole
        catalogue, or (``item_negatives`` > 0) over each target and one set of uniformly drawn
        items shared by the batch, a draw equal to the target left out. Uniform draws need no
        correction: the ranking a sampled softmax learns is that of the full one, at a fraction of
        the cost on a CPU."""
        if not self.item_negatives or self.item_negatives >= self.num_items:
            return softmax_cross_entropy(h, self.item_vectors(None, keep), items, label_smoothing)
        negatives = torch.randint(0, self.num_items, (self.item_negatives,), device=h.device)
        pos = (h * self.item_vectors(items, keep)).sum(-1, keepdim=True)  # (N, 1)
        neg = (h @ self.item_vectors(negatives, keep).T).masked_fill(
            negatives[None, :] == items[:, None], float("-inf")
        )
        logits = torch.cat([pos, neg], dim=1).float()
        target = torch.zeros(len(items), dtype=torch.long, device=h.device)
        return F.cross_entropy(logits, target, reduction="sum", label_smoothing=label_smoothing)

    # ---- the item head (with item_loss) ----
    def item_log_probs(self, batch: Mapping[str, torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        """log P(item | history) [U, K] of candidate ``items`` [U, K] under the auxiliary item head:
        a softmax over the whole catalogue of the history state's inner products with the item
        embeddings. Used to re-rank the beam search's items (genrec.serve.beam.BeamSearchRecommender)."""
        if not self.item_loss:
            raise ValueError("item_log_probs needs a model trained with item_loss > 0 (model.item_loss)")
        with torch.no_grad():
            logits = (self._last_states(batch) @ self.item_vectors().T).float()  # (U, N)
            return logits.gather(1, items) - torch.logsumexp(logits, dim=1, keepdim=True)

    def item_head_log_probs(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log P(item | history) [U, N] over the whole catalogue under the item head (float32)."""
        if not self.item_loss:
            raise ValueError("the item head needs a model trained with item_loss > 0 (model.item_loss)")
        with torch.no_grad():
            logits = (self._last_states(batch) @ self.item_vectors().T).float()
            return logits - torch.logsumexp(logits, dim=1, keepdim=True)

    @torch.no_grad()
    def item_head_scan(
        self,
        batch: Mapping[str, torch.Tensor],
        picks: Sequence[tuple[torch.Tensor | None, int]],
        exclude: tuple[torch.Tensor, torch.Tensor] | None = None,
        chunk: int | None = None,
        normalize: bool = True,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The item head over the catalogue ``chunk`` items at a time (default ``head_chunk``), so
        memory holds users x chunk scores, never users x catalogue: (the log-normalizer [U] float32,
        per pick (``allowed`` [N] bool or None for every item, ``m``) the best m items [U, m] by
        log P_head outside the ``exclude`` pairs (rows [P], items [P]; -1 where fewer qualify; ties
        across chunks: the lower index), the history states [U, C] for :meth:`item_head_log_probs_of`).
        ``normalize=False`` skips the log-normalizer (returned as zeros: log P_head is then off by a
        per-user constant, which leaves every pick's ranking as it is) for callers that never read
        the head's scores: the exp over users x catalogue is half the scan at a million items."""
        if not self.item_loss:
            raise ValueError("the item head needs a model trained with item_loss > 0 (model.item_loss)")
        states = self._last_states(batch)
        U, N = states.shape[0], self.num_items
        chunk = int(chunk or self.head_chunk)
        device = states.device
        peak = torch.full((U,), float("-inf"), device=device)
        total = torch.zeros(U, device=device)
        best = [
            (
                torch.full((U, 0), float("-inf"), device=device),
                torch.zeros(U, 0, dtype=torch.long, device=device),
            )
            for _ in picks
        ]
        for lo in range(0, N, chunk):
            ids = torch.arange(lo, min(N, lo + chunk), device=device)
            logits = (states @ self.item_vectors(ids).T).float()  # (U, chunk)
            if normalize:
                top = logits.max(dim=1).values
                new_peak = torch.maximum(peak, top)
                # exp_ in place: one [U, chunk] temporary instead of two.
                total = total * torch.exp(peak - new_peak) + (logits - new_peak[:, None]).exp_().sum(1)
                peak = new_peak
            if exclude is not None:  # in place: the normalizer above has read the chunk
                rows, items = exclude
                inside = (items >= lo) & (items < lo + len(ids))
                logits.index_put_(
                    (rows[inside], items[inside] - lo), torch.tensor(float("-inf"), device=device)
                )
            for p, (allowed, m) in enumerate(picks):
                scores = (
                    logits if allowed is None else logits.masked_fill(~allowed[ids][None, :], float("-inf"))
                )
                top = scores.topk(min(m, len(ids)), dim=1)  # the chunk's best, merged with the best so far
                # Earlier chunks (lower indices) first: the stable sort keeps the lower index on ties.
                s = torch.cat([best[p][0], top.values], dim=1)
                i = torch.cat([best[p][1], ids[top.indices]], dim=1)
                order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :m]
                best[p] = (s.gather(1, order), i.gather(1, order))
        tops = [i.masked_fill(torch.isinf(s), -1) for s, i in best]
        log_norm = peak + torch.log(total) if normalize else torch.zeros(U, device=device)
        return log_norm, tops, states

    @torch.no_grad()
    def item_head_log_probs_of(
        self, states: torch.Tensor, log_norm: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """log P_head [U, M] of ``items`` [U, M] (-1 slots score -inf) from :meth:`item_head_scan`'s
        states and log-normalizer."""
        vectors = self.item_vectors(items.clamp(min=0))  # (U, M, C)
        logits = torch.einsum("uc,umc->um", states, vectors).float()
        return (logits - log_norm[:, None]).masked_fill(items < 0, float("-inf"))

    def id_log_probs(
        self,
        batch: Mapping[str, torch.Tensor],
        codes: torch.Tensor,
        owner: torch.Tensor | None = None,
        chunk_rows: int = 32768,
    ) -> torch.Tensor:
        """log P(semantic ID | history), teacher-forced through the depth decoder: the sum over levels
        of each level's log-softmax, exactly the score the beam search gives an item it finds. Lets
        items from other sources than the beam be scored on the beam's scale.

        ``codes`` [U, M, T] (M candidates per history) gives [U, M]; or ``codes`` [R, T] with
        ``owner`` [R] (each row's history) gives [R]. Rows go through ``chunk_rows`` at a time."""
        self._require_eval()
        shape = codes.shape[:-1]
        if owner is None:
            U, M, _ = codes.shape
            owner = torch.arange(U, device=codes.device).repeat_interleave(M)
        rows = codes.reshape(-1, codes.shape[-1])
        with torch.no_grad():
            h = self._last_states(batch)  # (U, C)
            out = torch.empty(len(rows), dtype=torch.float32, device=codes.device)
            for lo in range(0, len(rows), chunk_rows):
                hi = min(len(rows), lo + chunk_rows)
                target = rows[lo:hi]
                logits = self.depth_logits(h[owner[lo:hi]], target)
                out[lo:hi] = sum(
                    lg.float().log_softmax(-1).gather(1, target[:, t : t + 1])[:, 0]
                    for t, lg in enumerate(logits)
                )
        return out.reshape(shape)
