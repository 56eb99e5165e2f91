"""Evaluation: full-catalogue ranking metrics, the evaluator, and non-learned baselines.

numpy (and pyarrow for saving per-user arrays) only: this runs on the GPU machine without polars.
"""

from genrec.eval.baselines import CoOccurrence, CoOccurrenceConfig, MostPop, make_baseline
from genrec.eval.content_knn import ContentKNN, ContentKNNConfig
from genrec.eval.evaluator import EvalResult, RecommenderOutputError, evaluate, load_per_user

__all__ = [
    "CoOccurrence",
    "CoOccurrenceConfig",
    "ContentKNN",
    "ContentKNNConfig",
    "EvalResult",
    "MostPop",
    "RecommenderOutputError",
    "evaluate",
    "load_per_user",
    "make_baseline",
]
