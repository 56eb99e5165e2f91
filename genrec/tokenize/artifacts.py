"""The tokenizer's folder (docs/contracts.md): writing it, and reading it back.

```
TOK/semantic_ids.npy        int64 [num_items, levels + 1], the last column the disambiguation token
TOK/tokenizer.json          method, levels, codebook_size, level_sizes, config, inputs and their hashes
TOK/codebooks.safetensors   codebooks [levels, codebook_size, D], normalizer.mean/scale [input_dim]
TOK/rqvae.safetensors       the RQ-VAE's weights (rqvae only)
TOK/metrics.json            usage and perplexity per level, collisions, reconstruction, training
TOK/training.json           losses per epoch (rqvae only)
```
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import genrec
from genrec.embed.artifacts import atomic_save_json, atomic_save_npy
from genrec.files import array_sha256, atomic_path
from genrec.tokenize.config import TokenizeConfig
from genrec.tokenize.normalize import Normalizer
from genrec.tokenize.rqvae import RQVAE
from genrec.tokenize.tokenizer import Tokenizer, TokenizerResult

FORMAT_VERSION = 1
SEMANTIC_IDS_FILE = "semantic_ids.npy"
TOKENIZER_FILE = "tokenizer.json"
CODEBOOKS_FILE = "codebooks.safetensors"
RQVAE_FILE = "rqvae.safetensors"
METRICS_FILE = "metrics.json"
TRAINING_FILE = "training.json"


class TokenizerArtifactError(ValueError):
    """A tokenizer folder is missing a file or does not hold what tokenizer.json says."""


def _save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def write_tokenizer(out_dir: str | Path, result: TokenizerResult, inputs: dict | None = None) -> Path:
    """Write ``result`` into ``out_dir``; ``inputs`` (embeddings and dataset provenance) goes into
    tokenizer.json. tokenizer.json is written last: a folder that has it is complete."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TOKENIZER_FILE).unlink(missing_ok=True)
    tok = result.tokenizer
    metadata = {"format_version": str(FORMAT_VERSION), "method": tok.method}
    atomic_save_npy(out_dir / SEMANTIC_IDS_FILE, result.semantic_ids.astype(np.int64))
    _save_safetensors(
        out_dir / CODEBOOKS_FILE,
        {
            "codebooks": tok.codebooks,
            "normalizer.mean": tok.normalizer.mean,
            "normalizer.scale": tok.normalizer.scale,
        },
        metadata,
    )
    if tok.model is not None:
        _save_safetensors(out_dir / RQVAE_FILE, tok.model.state_dict(), metadata)
        atomic_save_json(out_dir / TRAINING_FILE, {"epochs": result.history})
    else:
        (out_dir / RQVAE_FILE).unlink(missing_ok=True)
        (out_dir / TRAINING_FILE).unlink(missing_ok=True)
    atomic_save_json(out_dir / METRICS_FILE, result.metrics)
    atomic_save_json(
        out_dir / TOKENIZER_FILE,
        {
            "format_version": FORMAT_VERSION,
            "method": tok.method,
            "levels": result.config.levels,
            "codebook_size": result.config.codebook_size,
            "level_sizes": result.level_sizes,
            "num_items": int(result.semantic_ids.shape[0]),
            "input_dim": tok.input_dim,
            "codeword_dim": int(tok.codebooks.shape[2]),
            "normalize": tok.normalizer.mode,
            "kmeans_backend": result.metrics.get("kmeans_backend"),
            "config": result.config.to_dict(),
            "semantic_ids_sha256": array_sha256(result.semantic_ids.astype(np.int64)),
            **(inputs or {}),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "genrec_version": genrec.__version__,
        },
    )
    return out_dir


def read_tokenizer_info(path: str | Path) -> dict:
    """tokenizer.json of a tokenizer folder, checked for the fields every reader needs."""
    file = Path(path) / TOKENIZER_FILE
    if not file.is_file():
        raise TokenizerArtifactError(
            f"{path} is not a tokenizer folder: {TOKENIZER_FILE} is missing (run `genrec tokenize`)"
        )
    try:
        info = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerArtifactError(f"{file}: not valid JSON ({e})") from None
    for key in ("format_version", "method", "levels", "codebook_size", "level_sizes", "config", "input_dim"):
        if key not in info:
            raise TokenizerArtifactError(f"{file}: missing field {key!r}")
    if info["format_version"] != FORMAT_VERSION:
        raise TokenizerArtifactError(
            f"{file}: format_version {info['format_version']!r}; this genrec reads {FORMAT_VERSION} (tokenize again)"
        )
    return info


def load_semantic_ids(path: str | Path) -> np.ndarray:
    """int64 [num_items, levels + 1] from a tokenizer folder, checked against tokenizer.json."""
    path = Path(path)
    info = read_tokenizer_info(path)
    file = path / SEMANTIC_IDS_FILE
    if not file.is_file():
        raise TokenizerArtifactError(f"{file} is missing")
    try:
        ids = np.load(file, allow_pickle=False)
    except ValueError as e:
        raise TokenizerArtifactError(f"{file}: not a plain numpy array ({e})") from None
    expected = (info.get("num_items", ids.shape[0]), len(info["level_sizes"]))
    if ids.dtype != np.int64 or ids.ndim != 2 or ids.shape != expected:
        raise TokenizerArtifactError(
            f"{file}: expected int64 {list(expected)}, got {ids.dtype} {list(ids.shape)}"
        )
    if len(ids) and (ids.min() < 0 or np.any(ids.max(0) >= np.asarray(info["level_sizes"]))):
        raise TokenizerArtifactError(f"{file}: tokens outside level_sizes {info['level_sizes']}")
    return ids


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> Tokenizer:
    """The fitted tokenizer saved in ``path``, to encode new items' embeddings."""
    path = Path(path)
    info = read_tokenizer_info(path)
    device = torch.device(device)
    tensors = _load_safetensors(path / CODEBOOKS_FILE, device)
    for key in ("codebooks", "normalizer.mean", "normalizer.scale"):
        if key not in tensors:
            raise TokenizerArtifactError(f"{path / CODEBOOKS_FILE}: tensor {key!r} is missing")
    normalizer = Normalizer(info["normalize"], tensors["normalizer.mean"], tensors["normalizer.scale"])
    config = TokenizeConfig.from_dict(info["config"])
    model = None
    if info["method"] == "rqvae":
        model = RQVAE.from_config(
            info["input_dim"],
            config.rqvae,
            levels=config.levels,
            codebook_size=config.codebook_size,
            encode_backend=config.encode_backend,
        ).to(device)
        state = _load_safetensors(path / RQVAE_FILE, device)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise TokenizerArtifactError(
                f"{path / RQVAE_FILE}: does not fit tokenizer.json's config ({e})"
            ) from None
        model.eval()
    return Tokenizer(
        info["method"], info["input_dim"], normalizer, tensors["codebooks"], model, config.encode_backend
    )


def _load_safetensors(file: Path, device: torch.device) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise TokenizerArtifactError(f"{file} is missing")
    return load_file(str(file), device=str(device))
