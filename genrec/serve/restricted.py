"""Requests with ``exclude`` / ``allow`` item lists: the run's recommender searching a smaller
catalogue, per row, through genrec.decoding's request masks (no post-filter that can come up short).

- ``exclude`` E: the beam search runs with E masked out (beside the history, where the run excludes
  it), so its beam holds only permitted items and the list is short only where the catalogue minus
  E is; the fusion's other sources (item head, co-occurrence, profile similarity) propose their
  usual best items, of which those in E are dropped before ranking.
- ``allow`` A: the beam search runs restricted to A with a beam of at least |A|, which the masks
  make exhaustive (every allowed item comes back with its exact sequence score); the fusion then
  scores all of them with the run's own weights and takes the best k. So an allow list gets
  exactly the best k allowed items by the run's final score: a separate path, since the plain
  path ranks a beam's worth of candidates and an allow list may hold none of them.

Nothing here imports a web framework: genrec.serve.service calls it from its worker thread.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from genrec.fusion import Fusion
from genrec.serve.beam import BeamSearchRecommender


class _FilteredFusion(Fusion):
    """The run's fusion with each row's forbidden candidates removed before ranking (``forbidden``
    and ``permitted`` are per-row keys row * num_items + item, or None)."""

    def __init__(self, base: Fusion, *, extra_sources: bool, forbidden, permitted, num_items: int):
        super().__init__(
            base.weights,
            base.cooccurrence,
            base.candidates if extra_sources else 0,
            base.cold_candidates if extra_sources else 0,
            base.similarity,
        )
        self._model_similarity = base._model_similarity  # a cache of the model's content rows
        self._forbidden, self._permitted, self._num_items = forbidden, permitted, num_items

    def build(
        self, model, batch, codes, beam_items, beam_scores, histories, exclude_history, cold_search=None, best=None
    ):
        # Every candidate is scored (best=None): the lists filter them after building, so one that
        # could not reach the unfiltered top k may be in the filtered one.
        cand = super().build(
            model, batch, codes, beam_items, beam_scores, histories, exclude_history, cold_search, best=None
        )
        rows = torch.arange(cand.items.shape[0], device=cand.items.device)[:, None]
        keys = rows * self._num_items + cand.items.clamp(min=0)
        drop = torch.zeros_like(cand.items, dtype=torch.bool)
        if self._forbidden is not None:
            drop |= torch.isin(keys, self._forbidden.to(keys.device))
        if self._permitted is not None:
            drop |= ~torch.isin(keys, self._permitted.to(keys.device))
        drop &= cand.items >= 0
        cand.items = cand.items.masked_fill(drop, -1)
        cand.seq = cand.seq.masked_fill(drop, float("-inf"))
        if cand.cold is not None:
            cand.cold = cand.cold & ~drop
        return cand


def _row_keys(lists: Sequence[np.ndarray | None], num_items: int) -> torch.Tensor | None:
    """Sorted keys row * num_items + item of every listed item; None when no row has a list."""
    if all(x is None for x in lists):
        return None
    keys = [r * num_items + np.asarray(x, dtype=np.int64) for r, x in enumerate(lists) if x is not None]
    return torch.as_tensor(np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64))


def _merge(given: torch.Tensor | None, extra: Sequence[np.ndarray | None], intersect: bool):
    """Per-row item lists: the search's own (a tensor [U, M] padded with -1 that BeamSearchRecommender passes:
    the history, or the cold items) combined with the request's: their union (exclusions) or, for
    allow lists, their intersection. None where a row has neither."""
    if given is None:
        return list(extra)
    own_rows = given.cpu().numpy()
    out = []
    for own, req in zip(own_rows, extra, strict=True):
        own = own[own >= 0]
        if req is None:
            out.append(own)
        else:
            out.append(np.intersect1d(own, req) if intersect else np.union1d(own, req))
    return out


def _masked_search(search, exclude_rows, allow_rows):
    """The recommender's search with each row's request lists added to the masks it passes."""

    def run(step, index, num_users, beam_size, top_k, exclude=None, allow=None, **kw):
        if len(exclude_rows) != num_users:
            raise RuntimeError(f"a masked search of {num_users} rows for {len(exclude_rows)} requests")
        ex = _merge(exclude, exclude_rows, intersect=False)
        al = _merge(allow, allow_rows, intersect=True)
        ex = None if all(x is None for x in ex) else ex
        al = None if all(x is None for x in al) else al
        return search(step, index, num_users, beam_size, top_k, exclude=ex, allow=al, **kw)

    return run


def restricted_topk(
    base: BeamSearchRecommender,
    histories: Sequence[np.ndarray],
    k: int,
    users: np.ndarray | None,
    exclude: Sequence[np.ndarray | None],
    allow: Sequence[np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray]:
    """(items [U, k], scores [U, k]) of ``base`` for rows with exclude and/or allow lists (item
    indices; None: no list for that row), as the module doc describes. Rows with an allow list and
    rows without one must not be mixed (their beams differ): call once per kind."""
    has_allow = [a is not None for a in allow]
    if any(has_allow) and not all(has_allow):
        raise ValueError("rows with and without allow lists go in separate calls")
    num_items = base.num_items
    beam = base.beam_size
    if all(has_allow):  # exhaustive: the beam holds every allowed item
        beam = max(beam, max(len(a) for a in allow))
    rec = copy.copy(base)  # the run's model, trie and settings; its own search, beam and fusion
    rec.beam_size = beam
    rec.batch_users = max(len(histories), 1)  # one search call: the masks' rows are the requests'
    rec.use_graphs = False
    rec._graphed = {}
    rec.recorded = None
    rec.collect_candidates = None
    rec.search = _masked_search(base.search, list(exclude), list(allow))
    if base.fusion is not None:
        rec.fusion = _FilteredFusion(
            base.fusion,
            extra_sources=not all(has_allow),  # with allow lists every permitted item is in the beam
            forbidden=_row_keys(exclude, num_items),
            permitted=_row_keys(allow, num_items),
            num_items=num_items,
        )
    return rec.topk(histories, k, users)
