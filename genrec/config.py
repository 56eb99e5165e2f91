"""Run configuration: dataclasses loaded from TOML, with profiles and ``--set section.key=value``.

A config file holds one table per section (``[data]``, ``[embed]``, ``[tokenize]``, ``[model]``,
``[train]``, ``[eval]``, ``[run]``) plus optional profiles: ``[profile.cpu.train]`` etc. override
the base tables when ``--profile cpu`` is given. Overrides apply last, in order; their values are
read as TOML (numbers, booleans, strings, lists) and a bare word is a string. Every value is
type-checked against its field, and an unknown key is an error that names the key and the valid
ones.

Every section is read by genrec.settings (one loader, one ``--set`` parser, one error style for
the whole config, its ``[embed]`` and ``[tokenize]`` tables included); each pipeline stage hashes
``hashed_settings`` of its section (fields made with ``runtime``: logging, devices, batch sizes of
pure inference, paths of reused artifacts, are left out, so changing them never invalidates a
cached stage) and reports what it hashed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genrec.embed.config import EmbedConfig
from genrec.model_config import ModelConfig, migrate_model_table
from genrec.retrieval import KINDS
from genrec.settings import (
    ConfigError,
    apply_assignments,
    build,
    merge,
    require,
    runtime,
)
from genrec.tokenize.config import TokenizeConfig


@dataclass
class RunConfig:
    """Where a run lives and how it is seeded."""

    name: str = runtime("")
    """Shown in logs and summaries; defaults to the config file's name."""
    seed: int = 0
    """Seeds model initialisation, data order and dropout."""
    device: str = runtime("auto")
    """"auto" (CUDA when available), "cpu" or "cuda[:i]"."""
    cache_dir: str = runtime("")
    """Root of the stage cache; "" = $GENREC_CACHE_DIR, else ~/.cache/genrec/stages."""
    threads: int = runtime(0)
    """CPU threads for torch (0 = torch's default)."""

    def validate(self) -> None:
        require(self.threads >= 0, "run.threads", self.threads, ">= 0")
        require(
            0 <= self.seed < 2**32, "run.seed", self.seed, "in 0..2**32-1 (numpy and torch both take it)"
        )
        require(
            re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
            "run.device",
            self.device,
            '"auto", "cpu", "cuda" or "cuda:N"',
        )


@dataclass
class DataConfig:
    """Which dataset: a registered name, or a raw folder and its format, or an already prepared folder."""

    dataset: str = "amazon2014/beauty"
    """A registered dataset (`genrec data list`) under $GENREC_DATA_DIR."""
    source: str = ""
    """A raw-data folder to prepare instead of the registered dataset's folder."""
    format: str = ""
    """The format of ``source`` (`genrec data prepare --format`); default: the registered dataset's."""
    prepared: str = runtime("")
    """An already prepared dataset folder: skips the prepare stage (its manifest is hashed instead)."""
    embeddings: str = runtime("")
    """An embeddings folder (embeddings.npy + embed.json) of this dataset: skips the embed stage."""
    tokenizer: str = runtime("")
    """A tokenizer folder (semantic_ids.npy + tokenizer.json) of this dataset: skips the tokenize stage."""
    download: bool = runtime(True)
    """Download a registered dataset into $GENREC_DATA_DIR when its raw files are not there yet."""
    min_user_interactions: int = -1
    """k-core threshold for users; -1 keeps the format's default."""
    min_item_interactions: int = -1
    """k-core threshold for items; -1 keeps the format's default."""
    cold_start: float = 0.0
    """The cold-start protocol (genrec.data.cold_start): this share of the items (e.g. 0.1) loses every
    training interaction, validation and test keep them as targets, and the test reports cold-target
    users apart. 0 = off."""
    cold_start_seed: int = 0
    """Seeds which items go cold."""

    def validate(self) -> None:
        require(0 <= self.cold_start < 1, "data.cold_start", self.cold_start, "in [0, 1)")


PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULES = ("cosine", "linear", "constant")
SPARSE_ITEM_TABLE = ("auto", "on", "off")
SPARSE_ITEM_TABLE_FROM = 100_000
"""train.sparse_item_table = "auto" turns row-sparse item-table updates on from this many items."""


@dataclass
class TrainConfig:
    """The training loop: data, optimiser, schedule, validation and early stopping."""

    max_history: int = 20
    """Items of history per example (the most recent ones)."""
    batch_size: int = 256
    """Global batch: examples per optimiser step over all processes."""
    epochs: int = 200
    """Upper bound on passes over the training examples (early stopping usually ends sooner)."""
    max_steps: int = 0
    """Upper bound on optimiser steps (0 = epochs x steps per epoch); also sets the decay horizon."""
    lr: float = 1e-3
    min_lr_ratio: float = 0.02
    """The learning rate decays to lr x min_lr_ratio."""
    schedule: str = "cosine"
    """"cosine", "linear" or "constant" after warm-up."""
    warmup_steps: int = 500
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0
    """Clip the global gradient norm (0 = off)."""
    label_smoothing: float = 0.0
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32"."""
    compile: bool = False
    """torch.compile the training step (falls back to eager, with a notice, if compiling fails)."""
    sparse_item_table: str = "auto"
    """Update only the item-table rows a batch touches (genrec.train.lazy_adamw): "on", "off", or
    "auto": on for a catalogue of SPARSE_ITEM_TABLE_FROM items or more trained on a CPU, where the
    dense AdamW step over the whole table is most of a step. Lazy Adam is not dense AdamW (untouched
    rows keep still), so smaller catalogues and GPUs keep the dense recipe."""
    length_grouping: bool = True
    """Batch examples of similar history length together (less padding), in a seeded random order."""
    eval_every: int = 0
    """Steps between validations; 0 = once per epoch."""
    val_users: int = 0
    """Validate on a fixed random subset of this many users (0 = all)."""
    val_beam: int = 20
    """Beam size of the validation decode."""
    patience: int = 10
    """Stop after this many validations without a better NDCG@10 (0 = never stop early)."""
    min_delta: float = 0.0
    """An NDCG@10 gain must exceed this to count as better."""
    time_budget_s: float = 0.0
    """Stop training (then test the best checkpoint) after this many seconds; 0 = no limit."""
    checkpoint_every: int = runtime(0)
    """Steps between resumable checkpoints; 0 = at every validation."""
    log_every: int = runtime(50)
    """Steps between loss/learning-rate log lines."""
    eval_batch_users: int = runtime(1024)
    """Users per validation decode batch."""

    def validate(self) -> None:
        for name in ("max_history", "batch_size", "epochs", "val_beam", "eval_batch_users", "log_every"):
            require(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), ">= 1")
        for name in ("max_steps", "warmup_steps", "eval_every", "val_users", "patience", "checkpoint_every"):
            require(getattr(self, name) >= 0, f"train.{name}", getattr(self, name), ">= 0")
        require(math.isfinite(self.lr) and self.lr > 0, "train.lr", self.lr, "a finite number > 0")
        require(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "train.weight_decay",
            self.weight_decay,
            "a finite number >= 0",
        )
        require(0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        require(
            self.schedule in SCHEDULES, "train.schedule", self.schedule, f"one of {', '.join(SCHEDULES)}"
        )
        require(
            self.precision in PRECISIONS, "train.precision", self.precision, f"one of {', '.join(PRECISIONS)}"
        )
        require(0 <= self.label_smoothing < 1, "train.label_smoothing", self.label_smoothing, "in [0, 1)")
        require(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, ">= 0")
        require(
            self.sparse_item_table in SPARSE_ITEM_TABLE,
            "train.sparse_item_table",
            self.sparse_item_table,
            f"one of {', '.join(SPARSE_ITEM_TABLE)}",
        )
        require(self.time_budget_s >= 0, "train.time_budget_s", self.time_budget_s, ">= 0")
        for name in ("beta1", "beta2"):
            require(0 <= getattr(self, name) < 1, f"train.{name}", getattr(self, name), "in [0, 1)")


@dataclass
class EvalConfig:
    """The final test: constrained beam search over the catalogue, scored by genrec.eval."""

    beam_size: int = runtime(20)
    """Beams of the test decode (the top-k list is its best k)."""
    ks: list[int] = field(default_factory=lambda: [5, 10, 20], metadata={"cache": False})
    """Cut-offs of the reported metrics; k may not exceed beam_size."""
    batch_users: int = runtime(1024)
    """Users per decode batch."""
    users: int = runtime(0)
    """Test on a seeded sample (run.seed) of this many users, 0 = every user: a quicker test of a
    large dataset (the per-user files then hold the sample's rows)."""
    retrieval: str = runtime("exact")
    """sasrec: top-K by inner product, "exact", "hnsw" or "ivf" (approximate, faiss) or "auto"
    (approximate above a million items); faiss when installed, else an exact PyTorch matmul + top-k."""

    def validate(self) -> None:

        require(self.retrieval in KINDS, "eval.retrieval", self.retrieval, f"one of {', '.join(KINDS)}")
        require(self.beam_size >= 1, "eval.beam_size", self.beam_size, ">= 1")
        require(self.batch_users >= 1, "eval.batch_users", self.batch_users, ">= 1")
        require(self.users >= 0, "eval.users", self.users, ">= 0 (0: every user)")
        require(
            bool(self.ks) and all(1 <= k <= self.beam_size for k in self.ks),
            "eval.ks",
            self.ks,
            f"non-empty, each in 1..eval.beam_size ({self.beam_size})",
        )


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> Config:
        for section in dataclasses.fields(self):
            check = getattr(getattr(self, section.name), "validate", None)
            if check is not None:
                try:
                    check()
                except ConfigError:
                    raise
                except ValueError as e:
                    raise ConfigError(str(e)) from None
        if self.train.val_beam < 10:
            raise ConfigError(f"train.val_beam is {self.train.val_beam}; validation needs >= 10 (NDCG@10)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> Config:
        return build(cls, migrate_model_table(data, where, warn=False), "", where).validate()


# ---- loading ----
def load_config(
    path: str | Path | None = None, profile: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """The config of ``path`` (TOML; None = all defaults), with ``profile`` and ``overrides`` applied."""
    where = str(path) if path is not None else "defaults"
    table: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            table = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
    profiles = table.pop("profile", {})
    if not isinstance(profiles, dict):
        raise ConfigError(
            f"{where}: 'profile' must be a table of profiles ([profile.NAME.section]), got {profiles!r}"
        )
    if profile:
        if not isinstance(profiles.get(profile, {}), dict):
            raise ConfigError(
                f"{where}: profile {profile!r} must be a table ([profile.{profile}.section] ...), "
                f"got {profiles[profile]!r}"
            )
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"{where} has no profile {profile!r} (profiles there: {known})")
        table = merge(table, profiles[profile])
        where += f" [profile {profile}]"
    table = migrate_model_table(apply_assignments(table, overrides), where)
    config = build(Config, table, "", where)
    if not config.run.name and path is not None:
        config.run.name = Path(path).stem
    config.validate()
    for message in config.model.unread_settings():
        warnings.warn(f"{where}: {message}", UserWarning, stacklevel=2)
    return config


# ---- stage keys ----
#: Model settings that only the ranking after training reads (genrec.fusion): training ignores them,
#: so a run that changes only these reuses its trained weights.
FUSION_FIELDS = (
    "fusion_candidates",
    "tune_fusion",
    "tune_users",
    "cooccurrence_weight",
    "cooccurrence_eps",
    "cold_candidates",
    "cold_bias",
    "cold_epsilon",
    "cold_objective",
    "cold_share_cap",
    "profile_embeddings",
)
