"""Turning item embeddings into semantic IDs: :func:`tokenize` and the fitted :class:`Tokenizer`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

import genrec.ops
from genrec.embed.artifacts import EmbeddingError, check_embeddings
from genrec.embed.runtime import torch_threads
from genrec.tokenize.capacity import choice_order, fit_to_capacity, last_level_distances
from genrec.tokenize.config import TokenizeConfig
from genrec.tokenize.kmeans import resolve_kmeans_backend
from genrec.tokenize.metrics import (
    CHUNK_ROWS,
    reconstruction_error,
    squared_errors,
    summarize_errors,
    token_metrics,
    total_variance,
)
from genrec.tokenize.normalize import Normalizer
from genrec.tokenize.rqkmeans import residual_kmeans_codes
from genrec.tokenize.rqvae import RQVAE
from genrec.tokenize.rqvae_training import train_rqvae
from genrec.tokenize.semantic_ids import disambiguate


@dataclass
class Tokenizer:
    """A fitted tokenizer: maps embeddings [N, input_dim] to codes [N, levels].

    ``codebooks`` [levels, codebook_size, D] live in the RQ-VAE's latent space (rqvae) or in the
    normalized embedding space (rqkmeans).
    """

    method: str
    input_dim: int
    normalizer: Normalizer
    codebooks: torch.Tensor
    model: RQVAE | None = None
    encode_backend: str = "auto"

    @property
    def levels(self) -> int:
        return self.codebooks.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.codebooks.shape[1]

    @property
    def device(self) -> torch.device:
        return self.codebooks.device

    def _prepare(self, embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().cpu().numpy()
        array = check_embeddings(embeddings, dimension=self.input_dim, source="embeddings")
        return self.normalizer(torch.from_numpy(array).to(self.device))

    @torch.no_grad()
    def encode(self, embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
        """int64 codes [N, levels] (before disambiguation), e.g. for items added after training."""
        x = self._prepare(embeddings)
        if self.model is not None:
            return self.model.encode(x).cpu().numpy()
        return genrec.ops.rq_encode(x, self.codebooks, backend=self.encode_backend).cpu().numpy()

    @property
    def quantizer_codebooks(self) -> torch.Tensor:
        """[levels, codebook_size, D]: the codebooks the codes index, in the space of :meth:`latents`."""
        return self.model.quantizer.codebooks.detach() if self.model is not None else self.codebooks

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """What the codes quantize, for normalized embeddings ``x``: the RQ-VAE's encoder output,
        or ``x`` itself (rqkmeans)."""
        if self.model is None:
            return x
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model.encoder(x)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def encode_choices(self, embeddings: np.ndarray | torch.Tensor, count: int) -> np.ndarray:
        """int64 [N, count, levels]: first the codes :meth:`encode` gives, then the same codes with the
        last level's other codewords, nearest to the last residual first (ties: the lower index); for
        an item whose own ID is taken, the nearest ID that may be free (genrec.catalogue). The same
        order places the items of an overflowing cell at tokenize time (genrec.tokenize.capacity)."""
        codes = torch.as_tensor(self.encode(embeddings), device=self.device)
        n, levels = codes.shape
        count = max(1, min(int(count), self.codebook_size))
        z, books = self.latents(self._prepare(embeddings)), self.quantizer_codebooks
        residual = z.float()
        for level in range(levels - 1):
            residual = residual - books[level, codes[:, level]].float()
        order = choice_order(last_level_distances(residual, books[levels - 1]))  # [N, K]
        own = codes[:, levels - 1 :]
        others = order[order != own].reshape(n, -1)  # each row holds its own code exactly once
        last = torch.cat([own, others], dim=1)[:, :count]
        out = codes[:, None, :].repeat(1, count, 1)
        out[:, :, levels - 1] = last
        return out.cpu().numpy()

    @torch.no_grad()
    def reconstruct(self, codes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[N, input_dim] in the normalized embedding space: what the codes say the item is."""
        codes = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=self.device)
        if self.model is not None:
            return self.model.decode_codes(codes)
        return sum(self.codebooks[level, codes[:, level]] for level in range(self.levels))


@dataclass
class TokenizerResult:
    """What :func:`tokenize` returns; :func:`genrec.tokenize.write_tokenizer` saves it."""

    config: TokenizeConfig
    tokenizer: Tokenizer
    codes: np.ndarray
    """int64 [N, levels]: the tokenizer's codes (:meth:`Tokenizer.encode`), before disambiguation."""
    semantic_ids: np.ndarray
    """int64 [N, levels + 1]: codes plus the disambiguation token; every row unique. The code
    columns are ``codes`` except for the items moved out of a cell fuller than the token can
    number (``metrics["overflow"]``, genrec.tokenize.capacity)."""
    metrics: dict
    history: list[dict] = field(default_factory=list)
    """Per epoch of RQ-VAE training: losses and codes restarted (empty for rqkmeans)."""

    @property
    def level_sizes(self) -> list[int]:
        """Vocabulary size per column of ``semantic_ids``."""
        return [self.config.codebook_size] * self.config.levels + [self.metrics["disambiguation_level_size"]]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"tokenize.device is {device!r} but CUDA is not available here; use cpu or auto")
    return resolved


def tokenize(
    embeddings: np.ndarray | torch.Tensor,
    config: TokenizeConfig | None = None,
    popularity: np.ndarray | None = None,
) -> TokenizerResult:
    """Fit ``config.method`` on ``embeddings`` [N, D] and give every item a unique semantic ID.

    Row i of the result is row i of ``embeddings``. ``popularity`` [N] (training interactions per
    item) orders colliding items when ``config.disambiguation`` is "popularity"; without it they
    keep item-index order. The same inputs, config and device give the same IDs.
    """
    config = (config or TokenizeConfig()).validate()
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    array = check_embeddings(embeddings)
    if array.shape[0] == 0:
        raise EmbeddingError("embeddings: no items to tokenize (0 rows)")
    with torch_threads(config.threads):
        return _fit(array, config, popularity if config.disambiguation == "popularity" else None)


def _fit(array: np.ndarray, config: TokenizeConfig, popularity: np.ndarray | None) -> TokenizerResult:
    started = time.perf_counter()
    device = resolve_device(config.device)
    kmeans_backend = resolve_kmeans_backend(config.kmeans_backend)
    x = torch.from_numpy(array)
    normalizer = Normalizer.fit(x, config.normalize)
    x = normalizer(x).to(device)
    normalizer = Normalizer(normalizer.mode, normalizer.mean.to(device), normalizer.scale.to(device))
    history: list[dict] = []
    if config.method == "rqvae":
        model, history = train_rqvae(x, config)
        tokenizer = Tokenizer(
            "rqvae",
            array.shape[1],
            normalizer,
            model.quantizer.codebooks.detach(),
            model,
            config.encode_backend,
        )
        codes_t = model.encode(x)
    else:
        codebooks, codes_t = residual_kmeans_codes(
            x,
            config.levels,
            config.codebook_size,
            iters=config.rqkmeans.iters,
            seed=config.seed,
            backend=kmeans_backend,
            encode_backend=config.encode_backend,
        )
        tokenizer = Tokenizer("rqkmeans", array.shape[1], normalizer, codebooks, None, config.encode_backend)
    codes = codes_t.cpu().numpy()
    with torch.no_grad():
        z = tokenizer.latents(x)
    fitted = fit_to_capacity(
        codes, z, tokenizer.quantizer_codebooks, config.codebook_size, encode_backend=config.encode_backend
    )
    semantic_ids = disambiguate(fitted.codes, config.codebook_size, popularity)
    metrics = {
        "method": config.method,
        **token_metrics(codes, semantic_ids, config.codebook_size),
        "overflow": fitted.report(),
    }
    errors = torch.cat(
        [
            squared_errors(x[s : s + CHUNK_ROWS], tokenizer.reconstruct(codes[s : s + CHUNK_ROWS]))
            for s in range(0, len(codes), CHUNK_ROWS)
        ]
    )
    variance = total_variance(x)
    metrics["reconstruction"] = summarize_errors(errors, variance)
    if len(fitted.moved):  # what the moves cost: the semantic IDs' own reconstruction
        moved = torch.from_numpy(fitted.moved).to(x.device)
        errors[moved] = squared_errors(x[moved], tokenizer.reconstruct(fitted.codes[fitted.moved]))
        metrics["overflow"]["reconstruction"] = summarize_errors(errors, variance)
    if tokenizer.model is not None:
        with torch.no_grad():
            metrics["latent_quantization"] = reconstruction_error(
                z, tokenizer.model.quantizer.lookup(codes_t)
            )
        metrics["training"] = {k: v for k, v in history[-1].items() if k != "seconds"} | {
            "codes_restarted_total": sum(h["codes_restarted"] for h in history),
            "seconds": sum(h["seconds"] for h in history),
        }
    metrics["kmeans_backend"] = kmeans_backend
    metrics["device"] = str(device)
    metrics["threads"] = torch.get_num_threads()
    metrics["seconds"] = time.perf_counter() - started
    return TokenizerResult(config, tokenizer, codes, semantic_ids, metrics, history)
