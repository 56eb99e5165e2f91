"""``genrec train`` as a pipeline of cached stages: prepare, embed, tokenize, train, test."""

from genrec.pipeline.cache import StageCache, StageOutput, default_cache_root
from genrec.pipeline.run import run_pipeline
from genrec.pipeline.summary import STAGES, PipelineResult, print_summary

__all__ = [
    "STAGES",
    "PipelineResult",
    "StageCache",
    "StageOutput",
    "default_cache_root",
    "print_summary",
    "run_pipeline",
]
