"""Recommend from a trained generative model: constrained beam search over the catalogue's semantic IDs.

:class:`Recommender` wraps a model in memory (validation and testing use it) and follows
genrec.eval's recommender protocol. :func:`load_run` opens a finished run folder and returns a
:class:`RunRecommender`, which takes histories of original item ids and returns item ids, titles
and scores:

>>> rec = load_run("runs/demo")                                     # doctest: +SKIP
>>> rec.recommend_ids([["B0001", "B0002"]], k=10)[0][0]             # doctest: +SKIP
Recommendation(item_idx=812, item_id='B00AB', title='...', score=-3.21)
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genrec import cpu_threads
from genrec.fusion import (
    COMPONENTS,
    Candidates,
    Fusion,
    FusionWeights,
    config_weights,
    load_cooccurrence,
    uses_cooccurrence,
)
from genrec.models import ITEM_ID_KINDS, GenerativeModel, build_model

RUN_FORMAT_VERSION = 1
#: A run that ranks with co-occurrence keeps the statistics it was tested with here (genrec.fusion).
COOCCURRENCE_FILE = "cooccurrence.safetensors"


class RunError(RuntimeError):
    """A run folder cannot be used: the message names the file and what is wrong."""


def _flatten(histories: Sequence[Sequence[int]] | Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    flat = (
        np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if len(histories) else np.zeros(0)
    )
    ends = np.cumsum(lengths)
    return flat.astype(np.int64), ends - lengths, ends


def _padded(flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, device) -> torch.Tensor:
    """Histories as a LongTensor [U, longest] padded with -1 (genrec.decoding's item-list form)."""
    lengths = np.asarray(ends) - np.asarray(starts)
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    cols = np.arange(width)
    valid = cols[None, :] < lengths[:, None]
    out = np.full((len(lengths), width), -1, dtype=np.int64)
    out[valid] = flat[(np.asarray(starts)[:, None] + cols[None, :])[valid]]
    return torch.as_tensor(out, device=device)


class Recommender:
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
        # re-ranked by the item head (genrec.fusion.COMPONENTS), so each part stays measurable.
        self.recorded: dict[str, list[np.ndarray]] | None = (
            {name: [] for name in COMPONENTS} if record_components and fusion is not None else None
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
            from genrec.decoding import TrieIndex, beam_search

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

    def recommend(self, histories, k: int, users: np.ndarray | None = None) -> np.ndarray:
        """genrec.eval's protocol: item indices [len(histories), k], best first, -1 where fewer than k."""
        return self.topk(histories, k, users)[0]

    def topk(self, histories, k: int, users: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(items int64 [U, k], scores float32 [U, k]: the sequence log-probability of each item)."""
        flat, starts, ends = _flatten(histories)
        return self.topk_ranges(flat, starts, ends, k, users)

    def topk_ranges(
        self, flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, k: int, users: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`topk` for histories given as ``flat[starts[i]:ends[i]]`` (no per-user copies)."""
        extra = 2 * self.fusion.candidates if self.fusion is not None else 0
        if k > self.beam_size + extra:
            raise ValueError(
                f"k={k} exceeds the beam size {self.beam_size} (+ {extra} fused candidates): the "
                "beam search keeps only that many"
            )
        flat = np.asarray(flat, dtype=np.int64)
        if len(flat) and (flat.min() < 0 or flat.max() >= self.num_items):
            raise ValueError(f"histories hold item indices outside 0..{self.num_items - 1}")
        n = len(starts)
        items = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        if n == 0:
            return items, scores
        flat_t = torch.as_tensor(flat, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            for lo in range(0, n, self.batch_users):
                cpu_threads.tick()  # fewer threads while other processes hold cores (genrec.cpu_threads)
                hi = min(n, lo + self.batch_users)
                batch = self._batch(
                    flat_t, starts[lo:hi], ends[lo:hi], None if users is None else users[lo:hi]
                )
                with (
                    torch.no_grad(),
                    torch.autocast(
                        self.device.type,
                        dtype=self.amp_dtype or torch.float32,
                        enabled=self.amp_dtype is not None,
                    ),
                ):
                    masks = {}
                    if self.exclude_history:  # the whole history, not only the part the model reads
                        masks["exclude"] = _padded(flat, starts[lo:hi], ends[lo:hi], self.device)
                    # Re-ranking reads every beam's item; otherwise the search keeps the best k.
                    want = self.beam_size if self.fusion is not None else k
                    got = self._try_graphed(want, batch, masks) if self.use_graphs else None
                    if got is not None:
                        got_items, got_scores = got
                    else:
                        step = self.model.step_fn(batch, self.beam_size, check=False)
                        got_items, got_scores = self.search(
                            step, self.index, hi - lo, self.beam_size, want, **masks
                        )
                    if self.fusion is not None:
                        histories = [flat[a:b] for a, b in zip(starts[lo:hi], ends[lo:hi], strict=True)]
                        got_items, got_scores = self._fuse(batch, got_items, got_scores, histories, k, masks)
                items[lo:hi] = got_items.cpu().numpy()
                scores[lo:hi] = got_scores.float().cpu().numpy()
        finally:
            self.model.train(was_training)
        self._slots += items.size
        self._invalid += int(((items < 0) | (items >= self.num_items)).sum())
        return items, scores

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
        from genrec.decoding import GraphedBeamSearch

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
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        lengths = np.minimum(ends - starts, self.model.max_history)
        if self.model.user_buckets == 0 and len(lengths) and lengths.min() < 1:
            raise ValueError("every history needs at least one item (this model has no user token)")
        width = self.model.max_history if self.use_graphs else max(1, int(lengths.max()))
        lengths_t = torch.as_tensor(lengths, device=self.device)
        first = torch.as_tensor(ends - lengths, device=self.device)
        cols = torch.arange(width, device=self.device)
        valid = cols[None, :] < lengths_t[:, None]
        pos = torch.where(valid, first[:, None] + cols[None, :], torch.zeros_like(valid, dtype=torch.long))
        item = flat_t[pos] if len(flat_t) else torch.zeros_like(pos)
        item = item * valid
        batch = {
            "history": self.codes[item] * valid[:, :, None],
            "history_len": lengths_t,
            "history_items": item,
        }
        if users is not None:
            batch["user_ids"] = torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.device)
        elif self.use_graphs:
            batch["user_ids"] = torch.full((len(lengths),), -1, dtype=torch.long, device=self.device)
        return batch

    def ranking_sums(self, flat, starts, ends, targets, users=None, k: int = 10) -> dict[str, float]:
        """Summed NDCG@k and Recall@k of held-out ``targets`` (one per row), and the row count."""
        items, _ = self.topk_ranges(flat, starts, ends, k, users)
        hit = items == np.asarray(targets)[:, None]
        rank = np.argmax(hit, axis=1)
        found = hit.any(axis=1)
        return {
            f"ndcg@{k}": float(np.sum(found / np.log2(rank + 2.0))),
            f"recall@{k}": float(found.sum()),
            "count": float(len(targets)),
        }


@dataclass(frozen=True)
class Recommendation:
    item_idx: int
    item_id: str
    title: str | None
    score: float


class RunRecommender:
    """A finished run loaded for recommending: the model, the semantic IDs and the item table."""

    def __init__(
        self, run_dir: Path, recommender: Recommender, item_ids: list[str], titles: list[str | None]
    ):
        self.run_dir = run_dir
        self.recommender = recommender
        self.item_ids = item_ids
        self.titles = titles
        self.index_of = {item_id: i for i, item_id in enumerate(item_ids)}

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def item_indices(self, ids: Sequence[str]) -> np.ndarray:
        """Item indices of original item ids; an unknown id is an error naming it."""
        out = []
        for item_id in ids:
            key = str(item_id).strip()
            if key not in self.index_of:
                raise KeyError(
                    f"item id {key!r} is not in this run's catalogue ({self.run_dir / 'items.parquet'})"
                )
            out.append(self.index_of[key])
        return np.array(out, dtype=np.int64)

    def recommend_indices(
        self, histories: Sequence[Sequence[int]], k: int = 10, users: Sequence[int] | None = None
    ) -> list[list[Recommendation]]:
        """Top-k per history of item indices (best first), with ids, titles and log-probability scores."""
        if k < 1:
            raise ValueError(f"k = {k} is invalid: ask for at least one recommendation")
        for h in histories:
            bad = [int(i) for i in h if not 0 <= int(i) < self.num_items]
            if bad:
                raise ValueError(f"item indices {bad[:5]} are outside 0..{self.num_items - 1}")
        users_arr = None if users is None else np.asarray(users, dtype=np.int64)
        items, scores = self.recommender.topk(histories, k, users_arr)
        found = np.asarray(items) >= 0
        if np.isnan(np.asarray(scores, dtype=np.float64)[found]).any():
            raise RunError(
                f"{self.run_dir / 'model.safetensors'} scores items as NaN: the model's weights are broken "
                "(a diverged training); train again"
            )
        return [
            [
                Recommendation(int(i), self.item_ids[i], self.titles[i], float(s))
                for i, s in zip(row_items, row_scores, strict=True)
                if i >= 0
            ]
            for row_items, row_scores in zip(items, scores, strict=True)
        ]

    def recommend_ids(
        self, histories: Sequence[Sequence[str]], k: int = 10, users: Sequence[int] | None = None
    ) -> list[list[Recommendation]]:
        """Top-k per history of original item ids."""
        return self.recommend_indices([self.item_indices(h) for h in histories], k, users)


def load_run(run_dir: str | Path, *, device: str = "auto", beam_size: int | None = None) -> RunRecommender:
    """Open a finished ``genrec train`` run folder for recommending."""
    from genrec.config import Config
    from genrec.train.checkpoint import load_model_weights
    from genrec.train.distributed import resolve_device

    run_dir = Path(run_dir)
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        raise RunError(f"{run_dir} is not a finished genrec run: {run_json.name} is missing")
    try:
        info = json.loads(run_json.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{run_json}: not valid JSON ({e})") from None
    if info.get("format_version") != RUN_FORMAT_VERSION:
        raise RunError(
            f"{run_json}: run format {info.get('format_version')!r}, this genrec reads {RUN_FORMAT_VERSION}"
        )
    config = Config.from_dict(info["config"], where=str(run_json))
    if beam_size is not None and beam_size < 1:
        raise ValueError(f"beam size {beam_size} is invalid: it must be >= 1")
    codes, level_sizes = read_run_tokenizer(run_dir)
    recorded = (info.get("inputs") or {}).get("semantic_ids")
    if recorded is not None:
        from genrec.embed.artifacts import array_sha256

        if array_sha256(np.ascontiguousarray(codes, dtype=np.int64)) != recorded:
            raise RunError(
                f"{run_dir / 'tokenizer' / 'semantic_ids.npy'} is not the file this run was trained on "
                f"(run.json records semantic IDs {str(recorded)[:16]}...); restore it or train again"
            )
    if level_sizes != info["level_sizes"]:
        raise RunError(
            f"{run_dir / 'tokenizer'} has level sizes {level_sizes} but the model was trained on "
            f"{info['level_sizes']}: the run folder mixes artifacts of different tokenizers; train again"
        )
    dev = resolve_device(device)
    model = build_model(
        config.model,
        level_sizes,
        config.train.max_history,
        len(codes),
        content_dim=_saved_content_dim(run_dir / "model.safetensors", config.model),
    )
    load_model_weights(run_dir / "model.safetensors", model)
    model.to(dev).eval()
    items = _read_items(run_dir / "items.parquet", len(codes))
    rec = recommender_for(
        model,
        codes,
        config.model,
        beam_size=config.eval.beam_size if beam_size is None else beam_size,
        retrieval=config.eval.retrieval,
        fusion=load_fusion(run_dir, config.model, info.get("fusion", {}), num_items=len(codes)),
        device=dev,
    )
    return RunRecommender(run_dir, rec, *items)


def _saved_content_dim(weights: Path, model_config) -> int:
    """The width of the content table a run's weights hold (0 without content vectors)."""
    if not getattr(model_config, "content_vectors", False):
        return 0
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            if "item_content" not in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
                raise RunError(
                    f"{weights} holds no item_content table, but the run's model has content vectors"
                )
            return int(f.get_slice("item_content").get_shape()[1])
    except (OSError, SafetensorError) as e:
        raise RunError(f"{weights}: cannot be read ({e})") from None


def recommender_for(
    model,
    codes: np.ndarray,
    model_config,
    *,
    beam_size: int,
    retrieval: str = "exact",
    fusion: Fusion | None = None,
    record_components: bool = False,
    **options,
):
    """How a run's model recommends, as ``model_config`` (genrec.config.ModelConfig) says: items that
    are their own IDs (SASRec) by inner-product retrieval of kind ``retrieval``; generative models
    by the constrained beam search of ``beam_size`` beams, with history exclusion and re-ranking
    (``fusion``, or the config's rerank_weight over the beam's items). ``options`` (batch_users,
    device, amp_dtype) go to either."""
    if model_config.kind in ITEM_ID_KINDS:
        from genrec.retrieval import RetrievalRecommender

        return RetrievalRecommender(model, kind=retrieval, **options)
    return Recommender(
        model,
        codes,
        beam_size=beam_size,
        exclude_history=model_config.exclude_seen,
        rerank_weight=model_config.rerank_weight,
        fusion=fusion,
        record_components=record_components,
        **options,
    )


def load_fusion(run_dir: Path, model_config, recorded: dict, num_items: int) -> Fusion | None:
    """The fusion a finished run tests and recommends with: the weights run.json records under
    "fusion" (chosen on validation, or the config's), the co-occurrence statistics and profile
    embeddings of the run folder."""
    if model_config.kind in ITEM_ID_KINDS or model_config.item_loss <= 0:
        return None
    weights = (
        FusionWeights(**recorded["weights"]) if recorded.get("weights") else config_weights(model_config)
    )
    cooc = None
    if uses_cooccurrence(model_config):
        try:
            cooc = load_cooccurrence(Path(run_dir) / COOCCURRENCE_FILE)
        except (FileNotFoundError, ValueError) as e:
            raise RunError(str(e)) from None
    similarity = None
    if getattr(model_config, "profile_embeddings", ""):
        from genrec.profile_similarity import SIMILARITY_FILE, load_similarity

        try:
            similarity = load_similarity(Path(run_dir) / SIMILARITY_FILE, num_items)
        except (FileNotFoundError, ValueError) as e:
            raise RunError(str(e)) from None
    return Fusion(
        weights, cooc, model_config.fusion_candidates, getattr(model_config, "cold_candidates", 0), similarity
    )


class RecordedRanking:
    """Replays the lists a :class:`Recommender` recorded (``recorded[name]``), call by call, through
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


def read_run_tokenizer(run_dir: Path) -> tuple[np.ndarray, list[int]]:
    """The semantic IDs and level sizes a run was trained on (its own copy under tokenizer/)."""
    folder = Path(run_dir) / "tokenizer"
    ids_path, meta_path = folder / "semantic_ids.npy", folder / "tokenizer.json"
    for p in (ids_path, meta_path):
        if not p.is_file():
            raise RunError(f"{p} is missing: the run folder is incomplete")
    from genrec.data.npy import load_npy

    codes = load_npy(ids_path, RunError)
    meta = json.loads(meta_path.read_text())
    level_sizes = [int(v) for v in meta["level_sizes"]]
    if codes.ndim != 2 or codes.shape[1] != len(level_sizes):
        raise RunError(
            f"{ids_path} has shape {list(codes.shape)}, tokenizer.json names {len(level_sizes)} levels"
        )
    return codes.astype(np.int64), level_sizes


def _read_items(path: Path, num_items: int) -> tuple[list[str], list[str | None]]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise RunError(f"{path} is missing: the run folder is incomplete")
    table = pq.read_table(path)
    if table.num_rows != num_items:
        raise RunError(f"{path} lists {table.num_rows} items but the semantic IDs cover {num_items}")
    ids = [str(x) for x in table.column("item_id").to_pylist()]
    titles = table.column("title").to_pylist() if "title" in table.column_names else [None] * num_items
    return ids, titles
