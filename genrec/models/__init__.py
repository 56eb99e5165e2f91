"""Generative models over semantic IDs: TIGER (encoder-decoder) and a decoder-only variant.

``build_model(config, level_sizes, max_history)`` makes the model a config names; both serve
the decoding contract through ``model.step_fn(batch, beam_size)``.
"""

from __future__ import annotations

from genrec.models.base import GenerativeModel, StepFn, last_items
from genrec.models.decoder_only import DecoderOnly
from genrec.models.layers import user_buckets
from genrec.models.tiger import Tiger

MODEL_KINDS = ("tiger", "decoder_only")


def build_model(config, level_sizes: list[int], max_history: int) -> GenerativeModel:
    """The model described by ``config`` (a :class:`genrec.config.ModelConfig`)."""
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
    )
    if config.kind == "tiger":
        return Tiger(
            level_sizes, encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers, **common
        )
    if config.kind == "decoder_only":
        return DecoderOnly(level_sizes, num_layers=config.decoder_layers, **common)
    raise ValueError(f"model.kind {config.kind!r} is not one of {', '.join(MODEL_KINDS)}")


__all__ = [
    "MODEL_KINDS",
    "DecoderOnly",
    "GenerativeModel",
    "StepFn",
    "Tiger",
    "build_model",
    "last_items",
    "user_buckets",
]
