"""Settings of the multimodal and diffusion encoders, as dataclasses that map onto TOML tables.

In a run config they are ``[embed.multimodal]`` (with ``[embed.multimodal.image]``,
``[embed.multimodal.attributes]``, ``[embed.multimodal.collaborative]``) and
``[embed.diffusion]``. Importing this module needs no torch (configs load anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genrec.settings import build, require, runtime

MODALITIES = ("text", "image", "attributes", "collaborative")
CONTENT_MODALITIES = ("text", "image", "attributes")
SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("eps", "x0", "v")
STARTS = ("noise", "zero", "estimate")


@dataclass
class ImageSettings:
    """Where item images come from (EfficientNet-Lite0 embeds them)."""

    column: str = "image_path"
    """Item-table column with each item's image file (null: the item has no image)."""
    root: str = ""
    """Folder that relative paths in ``column`` resolve against; "" = the prepared dataset's folder."""
    directory: str = ""
    """Instead of ``column``: a folder of ``<item_id>.<ext>`` image files."""
    on_unreadable: str = "error"
    """"error" stops at a missing or undecodable file (naming it); "missing" treats the item as image-less."""
    batch_size: int = runtime(32)

    def validate(self, prefix: str) -> None:
        require(
            self.on_unreadable in ("error", "missing"),
            f"{prefix}.on_unreadable",
            self.on_unreadable,
            "'error' or 'missing'",
        )
        require(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, ">= 1")


@dataclass
class AttributeSettings:
    """Categorical attributes: a tf-idf bag of column values reduced by truncated SVD."""

    columns: list[str] = field(default_factory=lambda: ["brand", "categories"])
    dim: int = 64
    min_count: int = 2
    """Values on fewer items than this are dropped."""

    def validate(self, prefix: str) -> None:
        require(bool(self.columns), f"{prefix}.columns", self.columns, "non-empty")
        require(self.dim >= 1, f"{prefix}.dim", self.dim, ">= 1")
        require(self.min_count >= 1, f"{prefix}.min_count", self.min_count, ">= 1")


@dataclass
class CollaborativeSettings:
    """Item co-occurrence in the training part, factorized (PPMI + truncated SVD)."""

    dim: int = 64
    window: int = 3
    """Pairs up to this many steps apart in a user's sequence co-occur (weight 1/distance)."""
    shift: float = 1.0
    """PMI is shifted down by log(shift) before negatives are dropped."""
    context_power: float = 0.75

    def validate(self, prefix: str) -> None:
        require(self.dim >= 1, f"{prefix}.dim", self.dim, ">= 1")
        require(self.window >= 1, f"{prefix}.window", self.window, ">= 1")
        require(self.shift > 0, f"{prefix}.shift", self.shift, "> 0")
        require(0 < self.context_power <= 1, f"{prefix}.context_power", self.context_power, "in (0, 1]")


@dataclass
class MultimodalConfig:
    """The trained fusion: content modalities -> one content embedding aligned to collaborative space.

    An item's output embedding is ``[content_weight * c ; behaviour_weight * b]``, both unit
    length: ``c`` the fused content embedding, ``b`` the item's collaborative embedding, or for an
    item without one (cold) the content's image in collaborative space (the alignment head).
    """

    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    """What to fuse; a modality an item lacks is masked out, one no item has is reported and skipped."""
    dim: int = 128
    """Width of the fused content embedding."""
    hidden: int = 512
    dropout: float = 0.3
    modality_dropout: float = 0.25
    """In training, hide each present content modality with this probability (one always stays)."""
    temperature: float = 0.1
    """Of the InfoNCE loss aligning content to collaborative embeddings (in-batch negatives)."""
    epochs: int = 150
    epoch_items: int = 100_000
    """Items one epoch trains on: all training items, or a fresh seeded sample of this many when
    there are more. Early stopping and the probe look once per epoch, so at a million items they
    look every 200 steps instead of every 1,800 (the 1M-item fusion stopped at its best epoch, 1,
    after 16 full passes and 17 minutes); catalogues up to this size train as before."""
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-4
    holdout: float = 0.1
    """Share of warm items held out of training: early stopping, and a cold-start probe reported in embed.json."""
    patience: int = 15
    """Epochs without a better probe recall before training stops."""
    content_weight: float = 1.0
    behaviour_weight: float = 1.0
    seed: int = 0
    device: str = runtime("cpu")
    threads: int = runtime(1)
    """CPU threads while training (these networks are small: more threads mostly add waiting); 0 = torch's setting."""
    image: ImageSettings = field(default_factory=ImageSettings)
    attributes: AttributeSettings = field(default_factory=AttributeSettings)
    collaborative: CollaborativeSettings = field(default_factory=CollaborativeSettings)

    def validate(self, prefix: str = "embed.multimodal") -> MultimodalConfig:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        require(not unknown, f"{prefix}.modalities", self.modalities, f"a subset of {', '.join(MODALITIES)}")
        require(
            any(m in CONTENT_MODALITIES for m in self.modalities),
            f"{prefix}.modalities",
            self.modalities,
            f"including at least one content modality ({', '.join(CONTENT_MODALITIES)})",
        )
        require(
            len(set(self.modalities)) == len(self.modalities),
            f"{prefix}.modalities",
            self.modalities,
            "without repeats",
        )
        for name in ("dim", "hidden", "epochs", "epoch_items", "batch_size"):
            require(getattr(self, name) >= 1, f"{prefix}.{name}", getattr(self, name), ">= 1")
        require(self.batch_size >= 2, f"{prefix}.batch_size", self.batch_size, ">= 2 (in-batch negatives)")
        require(self.patience >= 0, f"{prefix}.patience", self.patience, ">= 0")
        require(self.threads >= 0, f"{prefix}.threads", self.threads, ">= 0")
        for name in ("dropout", "modality_dropout"):
            require(0 <= getattr(self, name) < 1, f"{prefix}.{name}", getattr(self, name), "in [0, 1)")
        require(0 <= self.holdout < 0.5, f"{prefix}.holdout", self.holdout, "in [0, 0.5)")
        require(self.temperature > 0, f"{prefix}.temperature", self.temperature, "> 0")
        require(self.lr > 0, f"{prefix}.lr", self.lr, "> 0")
        require(self.weight_decay >= 0, f"{prefix}.weight_decay", self.weight_decay, ">= 0")
        for name in ("content_weight", "behaviour_weight"):
            require(getattr(self, name) >= 0, f"{prefix}.{name}", getattr(self, name), ">= 0")
        require(
            self.content_weight > 0 or self.behaviour_weight > 0,
            f"{prefix}.content_weight",
            self.content_weight,
            "> 0 when behaviour_weight is 0",
        )
        self.image.validate(f"{prefix}.image")
        self.attributes.validate(f"{prefix}.attributes")
        self.collaborative.validate(f"{prefix}.collaborative")
        return self

    @property
    def uses_collaborative(self) -> bool:
        return "collaborative" in self.modalities

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "embed.multimodal") -> MultimodalConfig:
        return build(cls, data, where + ".", f"[{where}]").validate(where)


@dataclass
class DiffusionConfig:
    """Conditional denoising diffusion over collaborative embeddings, conditioned on fused content.

    Trained on warm items (their collaborative embedding given their content), it generates the
    collaborative part of items without training interactions with a deterministic DDIM sampler.
    """

    timesteps: int = 1000
    schedule: str = "cosine"
    """Noise schedule: "cosine" (Nichol & Dhariwal) or "linear" (Ho et al.)."""
    prediction: str = "v"
    """What the denoiser predicts: "eps" (the noise), "x0" (the clean embedding) or "v" (Salimans & Ho)."""
    hidden: int = 256
    layers: int = 3
    """Residual blocks of the denoiser, each modulated by the timestep and the condition."""
    dropout: float = 0.0
    steps: int = 4000
    """Optimiser steps."""
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    ema: float = 0.999
    """Decay of the exponential moving average of the weights used for sampling (0 = off)."""
    cond_dropout: float = 0.1
    """In training, replace the condition by a learned null condition with this probability."""
    guidance: float = 2.0
    """Classifier-free guidance scale at sampling (1 = the plain conditional model)."""
    sample_steps: int = 50
    """DDIM steps (eta = 0: deterministic given the starting noise)."""
    samples: int = 4
    """Samples per item, each from its own seeded noise, averaged (after unit-normalising)."""
    start: str = "estimate"
    """Where sampling starts: "noise" (pure generation from seeded noise at t = T), "zero" (the prior's
    mean at t = T, one deterministic sample) or "estimate" (SDEdit: the content-only estimate noised to
    t = strength * T, then denoised: the model moves it onto the behaviour it learned)."""
    strength: float = 0.5
    """With start = "estimate": how far back into the noise the estimate is pushed (0 keeps it, 1 = noise)."""
    seed: int = 0
    device: str = runtime("cpu")
    threads: int = runtime(1)
    """CPU threads while training and sampling; 0 = torch's setting."""

    def validate(self, prefix: str = "embed.diffusion") -> DiffusionConfig:
        require(
            self.schedule in SCHEDULES, f"{prefix}.schedule", self.schedule, f"one of {', '.join(SCHEDULES)}"
        )
        require(
            self.prediction in PREDICTIONS,
            f"{prefix}.prediction",
            self.prediction,
            f"one of {', '.join(PREDICTIONS)}",
        )
        require(self.timesteps >= 2, f"{prefix}.timesteps", self.timesteps, ">= 2")
        require(
            1 <= self.sample_steps <= self.timesteps,
            f"{prefix}.sample_steps",
            self.sample_steps,
            f"in 1..timesteps ({self.timesteps})",
        )
        for name in ("hidden", "layers", "steps", "batch_size", "samples"):
            require(getattr(self, name) >= 1, f"{prefix}.{name}", getattr(self, name), ">= 1")
        require(self.warmup_steps >= 0, f"{prefix}.warmup_steps", self.warmup_steps, ">= 0")
        require(self.threads >= 0, f"{prefix}.threads", self.threads, ">= 0")
        require(self.start in STARTS, f"{prefix}.start", self.start, f"one of {', '.join(STARTS)}")
        require(0 < self.strength <= 1, f"{prefix}.strength", self.strength, "in (0, 1]")
        require(0 <= self.ema < 1, f"{prefix}.ema", self.ema, "in [0, 1)")
        require(0 <= self.cond_dropout < 1, f"{prefix}.cond_dropout", self.cond_dropout, "in [0, 1)")
        require(0 <= self.dropout < 1, f"{prefix}.dropout", self.dropout, "in [0, 1)")
        require(self.guidance >= 0, f"{prefix}.guidance", self.guidance, ">= 0")
        require(self.lr > 0, f"{prefix}.lr", self.lr, "> 0")
        require(self.weight_decay >= 0, f"{prefix}.weight_decay", self.weight_decay, ">= 0")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "embed.diffusion") -> DiffusionConfig:
        return build(cls, data, where + ".", f"[{where}]").validate(where)
