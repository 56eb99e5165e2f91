"""Generative models over semantic IDs: TIGER (encoder-decoder) and decoder-only variants, and the
item-ID baseline SASRec.

``model.kind`` names the class: ``tiger`` (:class:`Tiger`), ``decoder_only`` (:class:`DecoderOnly`,
one token per semantic-ID level), ``item_decoder`` (:class:`ItemDecoder`, one token per item plus a
small depth decoder for the levels, and an item head) and ``sasrec`` (:class:`SASRec`).

``build_model(config, level_sizes, max_history)`` makes the model a config names; both serve
the decoding contract through ``model.step_fn(batch, beam_size)``.
"""

from __future__ import annotations

from genrec.model_config import MODEL_KINDS
from genrec.models.base import GenerativeModel, StepFn, last_items
from genrec.models.decoder_only import DecoderOnly
from genrec.models.item_decoder import ItemDecoder
from genrec.models.layers import user_buckets
from genrec.models.sasrec import SASRec, identity_codes
from genrec.models.tiger import Tiger


def model_class(config) -> type[GenerativeModel]:
    """The class ``config`` (a :class:`genrec.config.ModelConfig`) builds: what a stage asks before
    the model exists (``serving``: whether it needs semantic IDs and a beam search)."""
    if config.kind == "sasrec":
        return SASRec
    if config.kind == "tiger":
        return Tiger
    if config.kind == "item_decoder":
        return ItemDecoder
    if config.kind == "decoder_only":
        return DecoderOnly
    raise ValueError(f"model.kind {config.kind!r} is not one of {', '.join(MODEL_KINDS)}")


def build_model(
    config, level_sizes: list[int], max_history: int, num_items: int = 0, content_dim: int = 0
) -> GenerativeModel:
    """The model described by ``config`` (a :class:`genrec.config.ModelConfig`).

    ``num_items`` is needed when ``config.item_embeddings`` is on (one learned vector per item);
    ``content_dim`` (the item embeddings' width) when ``config.content_vectors`` is.
    """
    if config.item_embeddings and num_items < 1:
        raise ValueError("model.item_embeddings needs the catalogue size (num_items)")
    content_vectors = getattr(config, "content_vectors", False)
    if content_vectors and content_dim < 1:
        raise ValueError("model.content_vectors needs the item embeddings' dimension (content_dim)")
    common = dict(
        max_history=max_history,
        d_model=config.d_model,
        num_heads=config.num_heads,
        head_dim=config.head_dim,
        d_ff=config.d_ff,
        dropout=config.dropout,
        user_buckets=config.user_buckets,
        user_dropout=config.user_dropout,
        tie_embeddings=config.tie_embeddings,
        num_items=num_items if config.item_embeddings else 0,
    )
    if config.kind == "sasrec":
        if len(level_sizes) != 1:
            raise ValueError(
                f"sasrec reads each item as its own one-token ID: level_sizes must be [num_items], got "
                f"{level_sizes} (use genrec.models.identity_codes instead of semantic IDs)"
            )
        return SASRec(
            level_sizes[0],
            max_history=max_history,
            d_model=config.d_model,
            num_layers=config.decoder_layers,
            num_heads=config.num_heads,
            head_dim=config.head_dim,
            d_ff=config.d_ff,
            dropout=config.dropout,
            loss=config.loss,
            negatives=config.negatives,
            exclude_seen=config.exclude_seen,
        )
    if config.kind == "tiger":
        return Tiger(
            level_sizes,
            encoder_layers=config.encoder_layers,
            decoder_layers=config.decoder_layers,
            history_tokens=config.history_tokens,
            **common,
        )
    if config.kind == "item_decoder":
        return ItemDecoder(
            level_sizes,
            num_layers=config.decoder_layers,
            depth_layers=config.depth_layers,
            item_loss=config.item_loss,
            item_negatives=config.item_negatives,
            content_dim=content_dim if content_vectors else 0,
            content_dropout=config.content_dropout if content_vectors else 0.0,
            **common,
        )
    if config.kind == "decoder_only":
        return DecoderOnly(level_sizes, num_layers=config.decoder_layers, **common)
    raise ValueError(f"model.kind {config.kind!r} is not one of {', '.join(MODEL_KINDS)}")


__all__ = [
    "MODEL_KINDS",
    "DecoderOnly",
    "GenerativeModel",
    "ItemDecoder",
    "SASRec",
    "StepFn",
    "Tiger",
    "build_model",
    "identity_codes",
    "last_items",
    "model_class",
    "user_buckets",
]
