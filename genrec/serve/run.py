"""A finished run, opened for recommending: :func:`load_run` returns a :class:`RunRecommender`,
which takes histories of original item ids and returns item ids, titles and scores;
:func:`recommender_for` is how a model in memory recommends (validation and the test use it).

>>> rec = load_run("runs/demo")                                     # doctest: +SKIP
>>> rec.recommend_ids([["B0001", "B0002"]], k=10)[0][0]             # doctest: +SKIP
Recommendation(item_idx=812, item_id='B00AB', title='...', score=-3.21)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrec.fusion import Fusion, FusionWeights, config_weights, load_cooccurrence, uses_cooccurrence
from genrec.models import build_model, model_class
from genrec.profile_similarity import SIMILARITY_FILE, load_similarity
from genrec.run_format import (
    COOCCURRENCE_FILE,
    RunError,
    read_finished_run,
    read_run_items,
    saved_content_dim,
)
from genrec.serve.beam import BeamSearchRecommender
from genrec.serve.inner_product import InnerProductRecommender
from genrec.serve.recommender import BaseRecommender
from genrec.train.checkpoint import load_model_weights
from genrec.train.distributed import resolve_device


@dataclass(frozen=True)
class Recommendation:
    item_idx: int
    item_id: str
    title: str | None
    score: float


class RunRecommender:
    """A finished run loaded for recommending: the model, the semantic IDs and the item table, with
    the run.json (``info``) and config it was read from."""

    def __init__(
        self,
        run_dir: Path,
        recommender: BaseRecommender,
        item_ids: list[str],
        titles: list[str | None],
        *,
        info: dict | None = None,
        config=None,
    ):
        self.run_dir = run_dir
        self.info = info if info is not None else {}
        self.config = config
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
    if beam_size is not None and beam_size < 1:
        raise ValueError(f"beam size {beam_size} is invalid: it must be >= 1")
    run = read_finished_run(run_dir)
    config, codes = run.config, run.codes
    dev = resolve_device(device)
    weights = run.run_dir / "model.safetensors"
    model = build_model(
        config.model,
        run.level_sizes,
        config.train.max_history,
        len(codes),
        content_dim=saved_content_dim(weights, config.model),
    )
    load_model_weights(weights, model)
    model.to(dev).eval()
    items = read_run_items(run.run_dir, len(codes))
    rec = recommender_for(
        model,
        codes,
        config.model,
        beam_size=config.eval.beam_size if beam_size is None else beam_size,
        retrieval=config.eval.retrieval,
        fusion=load_fusion(run.run_dir, config.model, run.info.get("fusion", {}), num_items=len(codes)),
        device=dev,
    )
    return RunRecommender(run.run_dir, rec, *items, info=run.info, config=config)


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
    """How a run's model recommends, as the model declares (``GenerativeModel.serving``): items that
    are their own IDs (SASRec) by inner-product retrieval of kind ``retrieval``; generative models
    by the constrained beam search of ``beam_size`` beams, with history exclusion and re-ranking
    (``fusion``, or the config's rerank_weight over the beam's items). ``options`` (batch_users,
    device, amp_dtype) go to either."""
    if model.serving == "inner_product":
        return InnerProductRecommender(model, kind=retrieval, **options)
    return BeamSearchRecommender(
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
    if model_class(model_config).serving != "beam_search" or model_config.item_loss <= 0:
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
        try:
            similarity = load_similarity(Path(run_dir) / SIMILARITY_FILE, num_items)
        except (FileNotFoundError, ValueError) as e:
            raise RunError(str(e)) from None
    return Fusion(
        weights, cooc, model_config.fusion_candidates, getattr(model_config, "cold_candidates", 0), similarity
    )
