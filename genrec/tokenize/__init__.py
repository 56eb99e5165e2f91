"""Item tokenizer: embeddings in, unique semantic IDs out (RQ-VAE or RQ-KMeans).

``tokenize(embeddings, config) -> TokenizerResult`` is the Python entry point;
``genrec tokenize`` wraps it with dataset checks and writes the artifacts of docs/contracts.md.
"""

from genrec.tokenize.artifacts import (
    TokenizerArtifactError,
    load_semantic_ids,
    load_tokenizer,
    read_tokenizer_info,
    write_tokenizer,
)
from genrec.tokenize.config import RQKMeansConfig, RQVAEConfig, TokenizeConfig
from genrec.tokenize.folders import tokenize_dataset
from genrec.tokenize.semantic_ids import CodebookOverflowError, disambiguate
from genrec.tokenize.tokenizer import Tokenizer, TokenizerResult, tokenize

__all__ = [
    "CodebookOverflowError",
    "RQKMeansConfig",
    "RQVAEConfig",
    "TokenizeConfig",
    "Tokenizer",
    "TokenizerArtifactError",
    "TokenizerResult",
    "disambiguate",
    "load_semantic_ids",
    "load_tokenizer",
    "read_tokenizer_info",
    "tokenize",
    "tokenize_dataset",
    "write_tokenizer",
]
