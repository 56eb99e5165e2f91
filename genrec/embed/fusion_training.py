"""Training the content fusion and embedding every item with it (the multimodal encoder's core).

The fusion is trained by contrastive alignment (InfoNCE, in-batch negatives): the alignment head
maps an item's fused content ``c`` into collaborative space, where it must pick out the item's own
collaborative embedding ``b``; without the collaborative modality two random modality subsets of
the same item must agree instead. A seeded share of the warm items is held out as the behaviour
probe, scored after every epoch; the best epoch's weights are kept (early stopping on its
recall@k). Then every item is embedded: ``c`` for all, and ``b`` real for warm items, the head's
estimate for the others.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.behaviour_probe import PROBE_K, BehaviourProbe
from genrec.embed.encoder_config import CONTENT_MODALITIES, MultimodalConfig
from genrec.embed.fusion_net import AlignmentHead, ContentFusion, info_nce, modality_dropout
from genrec.embed.modality import ModalityFeatures
from genrec.embed.runtime import torch_threads


@dataclass
class FusionResult:
    """A trained fusion and the embeddings it gives every item."""

    content: np.ndarray  # float32 [N, dim], unit rows
    behaviour: np.ndarray | None  # float32 [N, Dc], unit rows (real for warm items, estimated otherwise)
    warm: np.ndarray  # bool [N]: items with a real collaborative embedding
    probe: np.ndarray  # int64: warm items held out of training
    fusion: ContentFusion
    head: AlignmentHead | None
    info: dict = field(default_factory=dict)
    estimate: np.ndarray | None = None  # float32 [N, Dc], unit rows: the alignment head's b for every item

    def embeddings(self, config: MultimodalConfig, behaviour: np.ndarray | None = None) -> np.ndarray:
        """``[content_weight * c ; behaviour_weight * b]`` (``behaviour`` replaces the stored b)."""
        behaviour = self.behaviour if behaviour is None else behaviour
        with_b = behaviour is not None and config.behaviour_weight > 0
        width = self.content.shape[1]
        # Written into one array: a million items' temporaries would cost gigabytes.
        out = np.empty((len(self.content), width + (behaviour.shape[1] if with_b else 0)), np.float32)
        np.multiply(self.content, config.content_weight, out=out[:, :width])
        if with_b:
            np.multiply(behaviour, config.behaviour_weight, out=out[:, width:])
        return out


@dataclass
class FusionData:
    """What the fusion trains on, on its device: content features and their presence mask, which
    items are warm (their real ``b``), and the split of the warm items into training and probe."""

    content_names: list[str]
    skipped: list[str]  # configured content modalities no item has
    num_items: int
    device: torch.device
    feats: dict[str, torch.Tensor]
    mask: torch.Tensor  # bool [N, M] in content_names order
    warm: np.ndarray
    behaviour_true: np.ndarray | None  # unit rows of the collaborative modality
    behaviour_dim: int | None
    train_items: np.ndarray
    probe: np.ndarray

    def probe_scorer(self, config: MultimodalConfig) -> BehaviourProbe:
        return BehaviourProbe(self.probe, self.behaviour_true, self.warm, seed=config.seed)


def unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))  # no [N, D] temporary of squares
    return (x / np.maximum(norm, 1e-12)[:, None]).astype(np.float32, copy=False)


def split_probe(warm: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, probe) item indices: a seeded ``holdout`` share of the warm items is held out."""
    warm_idx = np.flatnonzero(warm)
    rng = np.random.default_rng([seed, 0x9B0BE])
    n_probe = round(holdout * len(warm_idx)) if len(warm_idx) >= 20 else 0
    perm = rng.permutation(len(warm_idx))
    return np.sort(warm_idx[perm[n_probe:]]), np.sort(warm_idx[perm[:n_probe]])


def fusion_data(modalities: dict[str, ModalityFeatures], config: MultimodalConfig, log) -> FusionData:
    """Check that the modalities fit together and put what the fusion trains on on its device."""
    content_names = [m for m in config.modalities if m in CONTENT_MODALITIES and m in modalities]
    missing = [m for m in config.modalities if m not in modalities]
    if missing:
        raise EmbeddingError(f"modalities {', '.join(missing)} were configured but not computed")
    sizes = {modalities[m].num_items for m in config.modalities}
    if len(sizes) != 1:
        counts = ", ".join(f"{m}: {modalities[m].num_items}" for m in config.modalities)
        raise EmbeddingError(
            f"modalities disagree on the number of items ({counts}); row i must be item i everywhere"
        )
    (num_items,) = sizes
    skipped = [m for m in content_names if not modalities[m].present.any()]
    content_names = [m for m in content_names if m not in skipped]
    if not content_names:
        raise EmbeddingError(
            f"no item has any of the content modalities {', '.join(m for m in config.modalities if m in CONTENT_MODALITIES)}"
        )
    for m in skipped:
        log(f"  note: no item has modality {m!r}; the fusion leaves it out")
    device = torch.device(config.device)
    feats = {m: torch.from_numpy(modalities[m].values).to(device) for m in content_names}
    mask = torch.from_numpy(np.stack([modalities[m].present for m in content_names], axis=1)).to(device)
    collab = modalities.get("collaborative") if config.uses_collaborative else None
    if collab is not None:
        warm = collab.present.copy()
        behaviour_true = unit_rows(collab.values)
        train_items, probe = split_probe(warm, config.holdout, config.seed)
    else:
        warm = np.zeros(num_items, dtype=bool)
        behaviour_true = None
        train_items, probe = np.arange(num_items), np.zeros(0, dtype=np.int64)
    if len(train_items) < 2:
        raise EmbeddingError(f"only {len(train_items)} item(s) to train the fusion on; need at least 2")
    return FusionData(
        content_names, skipped, num_items, device, feats, mask, warm, behaviour_true,
        collab.dimension if collab is not None else None, train_items, probe,
    )  # fmt: skip


def fuse(modalities: dict[str, ModalityFeatures], config: MultimodalConfig, *, log=print) -> FusionResult:
    """Train the fusion on ``modalities`` (row i = item i) and embed every item."""
    config.validate()
    data = fusion_data(modalities, config, log)
    with torch.random.fork_rng(devices=[]), torch_threads(config.threads):
        torch.manual_seed(config.seed)
        dims = {m: modalities[m].dimension for m in data.content_names}
        fusion = ContentFusion(dims, config.dim, config.hidden, config.dropout)
        has_head = data.behaviour_dim is not None
        head = AlignmentHead(config.dim, config.hidden, data.behaviour_dim) if has_head else None
        fusion.to(device=data.device)
        if head is not None:
            head.to(device=data.device)
        start = time.perf_counter()
        history, best_epoch, scorer = train_fusion(fusion, head, data, config)
        content, behaviour, estimate, probe_metrics = embed_all(fusion, head, data, config, scorer)
    seconds = time.perf_counter() - start
    last = history[-1] if history else {}
    log(
        f"  fusion: {len(history)} epochs in {seconds:.0f}s, loss {last.get('loss', float('nan')):.3f}"
        + (f", probe recall@{PROBE_K} {probe_metrics[f'recall@{PROBE_K}']:.3f}" if probe_metrics else "")
    )
    info = {
        "content_modalities": data.content_names,
        "skipped_modalities": data.skipped,
        "objective": "infonce content->collaborative" if head is not None else "infonce between modality views",
        "train_items": len(data.train_items),
        "warm_items": int(data.warm.sum()),
        "estimated_items": int(data.num_items - data.warm.sum()) if head is not None else 0,
        "epochs_run": len(history),
        "epoch_items": min(config.epoch_items, len(data.train_items)),
        "best_epoch": best_epoch if best_epoch is not None else len(history),
        "seconds": seconds,
        "final_loss": last.get("loss"),
        "probe": {"content": probe_metrics},
        "items_without_content": int((~data.mask.any(dim=1)).sum()),
    }
    return FusionResult(content, behaviour, data.warm, data.probe, fusion, head, info, estimate)


def train_fusion(
    fusion: ContentFusion, head: AlignmentHead | None, data: FusionData, config: MultimodalConfig
) -> tuple[list[dict], int | None, BehaviourProbe | None]:
    """Train for up to ``config.epochs``, probing after each epoch and stopping ``patience`` epochs
    after the best; leaves the best epoch's weights loaded. (history, best epoch, the probe scorer)."""
    params = list(fusion.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    gen = torch.Generator().manual_seed(config.seed)
    target = torch.from_numpy(data.behaviour_true).to(data.device) if data.behaviour_true is not None else None
    batch = min(config.batch_size, len(data.train_items), config.epoch_items)
    best, best_state, since_best, history = -1.0, None, 0, []
    scorer = None  # the behaviour probe, built at the first epoch that scores it
    for epoch in range(config.epochs):
        order = torch.from_numpy(data.train_items)[torch.randperm(len(data.train_items), generator=gen)]
        order = order[: config.epoch_items]  # a large catalogue: a fresh sample each epoch
        losses = train_epoch(fusion, head, opt, data, target, order, batch, config, gen)
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
        if head is not None and len(data.probe):
            scorer = scorer or data.probe_scorer(config)
            result = _probe(fusion, head, data, scorer)
            entry.update(result)
            score = result[f"recall@{PROBE_K}"]
            if score > best:
                best, since_best = score, 0
                best_state = (copy.deepcopy(fusion.state_dict()), copy.deepcopy(head.state_dict()), epoch + 1)
            else:
                since_best += 1
        history.append(entry)
        if config.patience and best_state is not None and since_best >= config.patience:
            break
    if best_state is not None:
        fusion.load_state_dict(best_state[0])
        head.load_state_dict(best_state[1])
    return history, best_state[2] if best_state is not None else None, scorer


def train_epoch(fusion, head, opt, data: FusionData, target, order, batch: int, config, gen) -> list[float]:
    """One pass over ``order`` in full batches; the batch losses."""
    fusion.train()
    if head is not None:
        head.train()
    losses = []
    for lo in range(0, len(order) - batch + 1, batch):
        idx = order[lo : lo + batch].to(data.device)
        sub = {m: x[idx] for m, x in data.feats.items()}
        view = modality_dropout(data.mask[idx].cpu(), config.modality_dropout, gen).to(data.device)
        c = fusion(sub, view)
        if head is not None:
            loss = info_nce(head(c), target[idx], config.temperature)
        else:  # no behaviour to align to: two views of the same item must agree
            other = modality_dropout(data.mask[idx].cpu(), config.modality_dropout, gen).to(data.device)
            loss = info_nce(c, fusion(sub, other), config.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def embed_all(fusion, head, data: FusionData, config: MultimodalConfig, scorer: BehaviourProbe | None):
    """(content, behaviour, estimate, probe metrics) of every item through the trained networks."""
    fusion.eval()
    if head is not None:
        head.eval()
    with torch.no_grad():
        raw = torch.from_numpy(
            batched_rows(
                lambda idx: fusion({m: x[idx] for m, x in data.feats.items()}, data.mask[idx]),
                data.num_items,
                data.device,
            )
        ).to(data.device)
        content = unit_rows(raw.cpu().numpy())
        behaviour = estimate = None
        probe_metrics = {}
        if head is not None:
            estimate = unit_rows(batched_rows(lambda idx: head(raw[idx]), data.num_items, data.device))
            if len(data.probe):
                scorer = scorer or data.probe_scorer(config)
                probe_metrics = scorer(estimate[scorer.items])
            behaviour = np.where(data.warm[:, None], data.behaviour_true, estimate).astype(np.float32)
    return content, behaviour, estimate, probe_metrics


def batched_rows(fn, n: int, device: torch.device | str, size: int = 4096) -> np.ndarray:
    """``fn`` over the row indices 0..n in batches of ``size``, concatenated as float32 numpy."""
    out = [
        fn(torch.arange(lo, min(n, lo + size), device=device)).float().cpu().numpy()
        for lo in range(0, n, size)
    ]
    return np.concatenate(out)


def _probe(fusion, head, data: FusionData, scorer: BehaviourProbe) -> dict:
    fusion.eval()
    head.eval()
    with torch.no_grad():
        idx = torch.from_numpy(scorer.items).to(data.mask.device)
        est = head(fusion({m: x[idx] for m, x in data.feats.items()}, data.mask[idx])).float().cpu().numpy()
    return scorer(est)
