"""The pieces of a training run that its config decides: the model, the signature a resumed run
must match, the optimizer (with row-sparse item-table updates on a large catalogue), the
precision, and the loss as one module call (what DDP and torch.compile wrap)."""

from __future__ import annotations

import torch
from torch import nn

from genrec.config import FUSION_FIELDS, SPARSE_ITEM_TABLE_FROM, Config
from genrec.models import GenerativeModel, build_model
from genrec.settings import hashed_settings
from genrec.train.distributed import DistInfo
from genrec.train.inputs import TrainInputs
from genrec.train.lazy_adamw import LazyAdamW


class LossModule(nn.Module):
    """forward(batch) = summed token cross-entropy, so DDP's hooks and torch.compile see one call."""

    def __init__(self, model: GenerativeModel, label_smoothing: float) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        total, _ = self.model.loss_terms(batch, self.label_smoothing)
        return total


def build_training_model(config: Config, inputs: TrainInputs) -> GenerativeModel:
    """The model ``config`` names for these inputs, content vectors filled where it has them."""
    content = inputs.item_content
    if config.model.content_vectors and content is None:
        raise ValueError("model.content_vectors needs the item embeddings (TrainInputs.item_content)")
    model = build_model(
        config.model,
        inputs.level_sizes,
        config.train.max_history,
        len(inputs.codes),
        content_dim=content.shape[1] if config.model.content_vectors else 0,
    )
    if getattr(model, "content_dim", 0):
        model.set_item_content(content, inputs.trained_items())
    return model


def training_signature(config: Config, inputs: TrainInputs) -> dict:
    """What decides a training run's result: resuming demands the same signature."""
    return {
        "model": {k: v for k, v in hashed_settings(config.model).items() if k not in FUSION_FIELDS},
        "train": hashed_settings(config.train),
        "seed": config.run.seed,
        "inputs": inputs.fingerprints,
        "level_sizes": inputs.level_sizes,
    }


def signature_difference(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Each setting where two signatures differ, as "key.path: checkpoint A, now B"."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += signature_difference(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return out


def make_optimizer(
    model: nn.Module, config: Config, device: torch.device, sparse_items: bool = False
) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and embeddings only (not on biases, norms or the BOS vector).
    With ``sparse_items`` (:func:`uses_sparse_item_table`), :class:`LazyAdamW`: the item table's
    row-sparse gradients update only their rows."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    t = config.train
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if sparse_items:
        return LazyAdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2))
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=device.type == "cuda")


def uses_sparse_item_table(
    config: Config, model: GenerativeModel, device: torch.device, dist_info: DistInfo = DistInfo()
) -> bool:
    """Whether ``train.sparse_item_table`` gives this model's item table row-sparse updates: "auto"
    where the catalogue is large (SPARSE_ITEM_TABLE_FROM items) and the device a CPU (a GPU updates
    a million-row table in about a millisecond, and NCCL has no sparse all-reduce)."""
    setting = config.train.sparse_item_table
    if setting == "off":
        return False
    blocker = model.sparse_item_table_blocker()
    if setting == "auto":
        return blocker is None and device.type == "cpu" and model.num_items >= SPARSE_ITEM_TABLE_FROM
    if blocker:
        raise ValueError(f'train.sparse_item_table = "on" is not possible: {blocker}')
    if dist_info.enabled and device.type == "cuda":
        raise ValueError(
            'train.sparse_item_table = "on" under torchrun on GPUs: NCCL has no sparse all-reduce; use "off"'
        )
    return True


def autocast_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    precision = config.train.precision
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if precision == "bf16" else None
