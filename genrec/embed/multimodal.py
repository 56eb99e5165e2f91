"""The multimodal encoder: text, image, attributes and collaborative signal fused into one embedding.

Content modalities (text, image, attributes) each pass through their own projection into a
shared width; a learned attention pool weighs the modalities an item has (absent ones are masked
out, and a learned "nothing" token keeps an item with no content well defined) into one content
embedding ``c``. The fusion is trained by contrastive alignment (InfoNCE, in-batch negatives):
an alignment head maps ``c`` into collaborative space, where it must pick out the item's own
collaborative embedding ``b`` (learned from the training split). Modality dropout teaches it to
work from any subset of modalities. Without the collaborative modality, it aligns two random
modality subsets of the same item instead.

An item's embedding is ``[content_weight * c ; behaviour_weight * b]`` with both parts unit
length; an item without a collaborative embedding (no training interactions) gets the alignment
head's estimate of ``b`` from its content, or a generated one from the diffusion encoder.
A seeded share of the warm items is held out of training as a cold-start probe: how well their
``b`` is recovered from content alone is written to embed.json.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.encoder_config import CONTENT_MODALITIES, MultimodalConfig
from genrec.embed.modality import ModalityFeatures
from genrec.embed.registry import ItemEncoder
from genrec.files import file_sha256

PROBE_K = 10


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` CPU threads (0: leave torch's setting), restoring it after."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- gathering the modalities of a prepared dataset ----
def text_presence(item_table, text_columns: list[str]) -> np.ndarray:
    """bool [num_items]: the item has a non-empty value in at least one text column."""
    present = np.zeros(item_table.num_rows, dtype=bool)
    for column in text_columns:
        if column not in item_table.column_names:
            continue
        for i, v in enumerate(item_table.column(column).to_pylist()):
            if v is not None and (v if isinstance(v, list) else str(v).strip()):
                present[i] = True
    return present


def text_modality(dataset, embeddings: np.ndarray, info: dict | None = None) -> ModalityFeatures:
    """Text embeddings [num_items, D] of ``dataset`` as a modality (items without any text are absent)."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != dataset.num_items:
        raise EmbeddingError(
            f"text embeddings have shape {list(embeddings.shape)}; {dataset.path} has {dataset.num_items} items "
            "(row i must be item i: embed the same prepared dataset)"
        )
    columns = dataset.item_text_columns or ["title"]
    table = dataset.item_table([c for c in columns if c in dataset.item_table().column_names] or None)
    present = text_presence(table, columns)
    return ModalityFeatures(
        "text", embeddings.astype(np.float32), present, {"columns": columns, **(info or {})}
    )


def gather_modalities(
    dataset,
    config: MultimodalConfig,
    *,
    text: ModalityFeatures | None = None,
    image_encoder=None,
    log=print,
    fitted: dict | None = None,
) -> dict[str, ModalityFeatures]:
    """Each configured modality of ``dataset``: text must be given (the text encoder computes it).

    ``fitted`` (a dict) receives the fitted attribute model under "attributes" (to embed new items later).
    """
    from genrec.embed.attributes import fit_attributes
    from genrec.embed.collaborative import embed_collaborative
    from genrec.embed.image import embed_item_images, item_image_paths

    out: dict[str, ModalityFeatures] = {}
    for name in config.modalities:
        start = time.perf_counter()
        if name == "text":
            if text is None:
                raise EmbeddingError(
                    "the multimodal encoder needs the items' text embeddings (modality 'text')"
                )
            out[name] = text.check_items(dataset.num_items)
        elif name == "image":
            s = config.image
            table = dataset.item_table()
            paths = item_image_paths(
                table,
                column=s.column,
                root=s.root or dataset.path,
                directory=s.directory or None,
                where=str(dataset.path / "items.parquet"),
            )
            ids = [str(v) for v in table.column("item_id").to_pylist()]
            if any(p is not None for p in paths):
                from genrec.embed.image import ImageEncoder

                encoder = image_encoder or ImageEncoder(batch_size=s.batch_size, device=config.device)
                out[name] = embed_item_images(paths, ids, encoder=encoder, on_unreadable=s.on_unreadable)
            else:  # no item has an image: an empty modality, reported, never zero vectors posing as images
                from genrec.embed.image import EMBEDDING_DIM

                out[name] = ModalityFeatures(
                    "image",
                    np.zeros((len(ids), EMBEDDING_DIM), np.float32),
                    np.zeros(len(ids), bool),
                    {"with_image": 0, "without_image": len(ids)},
                )
        elif name == "attributes":
            s = config.attributes
            out[name], attribute_model = fit_attributes(
                dataset.item_table(),
                columns=s.columns,
                dim=s.dim,
                min_count=s.min_count,
                seed=config.seed,
                where=str(dataset.path / "items.parquet"),
            )
            if fitted is not None:
                fitted["attributes"] = attribute_model
        elif name == "collaborative":
            s = config.collaborative
            out[name] = embed_collaborative(
                dataset,
                dim=s.dim,
                window=s.window,
                shift=s.shift,
                context_power=s.context_power,
                seed=config.seed,
            )
        feats = out[name].check_items(dataset.num_items)
        log(
            f"  {name}: {int(feats.present.sum()):,} of {feats.num_items:,} items, dimension {feats.dimension} "
            f"({time.perf_counter() - start:.1f}s)"
        )
    return out


# ---- the fusion network ----
class ContentFusion(nn.Module):
    """Content modalities -> one embedding of width ``dim``: projections, then masked attention pooling."""

    def __init__(self, dims: dict[str, int], dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.names = list(dims)
        self.proj = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.LayerNorm(d),
                    nn.Linear(d, hidden),
                    nn.GELU(),
                    nn.Dropout(dropout),
                    nn.Linear(hidden, dim),
                )
                for name, d in dims.items()
            }
        )
        self.kind = nn.Parameter(torch.randn(len(dims) + 1, dim) * 0.02)  # one per modality, then "nothing"
        self.nothing = nn.Parameter(torch.zeros(dim))
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))

    def forward(self, features: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """features[name] (B, D_name), mask (B, M) bool in ``self.names`` order -> (B, dim)."""
        tokens = [self.proj[name](features[name]) for name in self.names]
        tokens.append(self.nothing.expand_as(tokens[0]))
        z = torch.stack(tokens, dim=1) + self.kind  # (B, M + 1, dim)
        keep = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # "nothing" is always a candidate
        weights = self.score(z).squeeze(-1).masked_fill(~keep, float("-inf")).softmax(dim=1)
        return self.out((weights.unsqueeze(-1) * z).sum(dim=1))


class AlignmentHead(nn.Module):
    """Fused content -> collaborative space (the content-only estimate of an item's behaviour)."""

    def __init__(self, dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of row-aligned pairs (a_i, b_i), the other rows as negatives."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def modality_dropout(mask: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """``mask`` with each present entry hidden with probability p; a row keeps at least one it had."""
    if p <= 0:
        return mask
    noise = torch.rand(mask.shape, generator=generator)
    kept = mask & (noise >= p)
    empty = ~kept.any(dim=1) & mask.any(dim=1)
    if empty.any():
        pick = (noise * mask).argmax(dim=1)  # one present modality per emptied row
        kept[empty, pick[empty]] = True
    return kept


# ---- probing how well behaviour is recovered from content ----
PROBE_MAX_ITEMS = 2000
"""Probe items scored: beyond this many, a seeded sample of them (the same one every epoch).
Each is compared with every warm item, so the cost is this times the catalogue."""
PROBE_SIMILARITIES = 2000 * 100_000
"""... and at most about this many probe x warm similarities per probe (the fusion probes once an
epoch): a catalogue with more than 100,000 warm items probes fewer items, down to PROBE_MIN_ITEMS
(200 at a million items, where 2,000 cost 45 % of the embed stage)."""
PROBE_MIN_ITEMS = 200
PROBE_BLOCK = 1 << 26
"""Similarities held at once (256 MiB of float32): probe rows are scored in blocks of this many;
fewer rows per block would re-read the whole warm bank for each few rows."""


def probe_size(warm_items: int) -> int:
    """How many probe items a catalogue of ``warm_items`` warm items scores (see PROBE_SIMILARITIES)."""
    return min(PROBE_MAX_ITEMS, max(PROBE_MIN_ITEMS, PROBE_SIMILARITIES // max(warm_items, 1)))


def probe_sample(probe: np.ndarray, max_items: int = PROBE_MAX_ITEMS, seed: int = 0) -> np.ndarray:
    """``probe`` itself when it has at most ``max_items`` items, else a seeded sorted sample of them."""
    if len(probe) <= max_items:
        return probe
    rng = np.random.default_rng([seed, 0x9B0BE, 1])
    return np.sort(rng.choice(probe, max_items, replace=False))


class BehaviourProbe:
    """How close estimated behaviour embeddings of held-out warm items are to their real ones.

    Built once per probe set: the warm items' real embeddings (the bank) and each probe item's
    true nearest warm items; calling it with estimates for :attr:`items` scores them. Probe rows
    are compared with the bank in blocks of ``block`` similarities, so memory stays bounded
    whatever the catalogue size, and each row's numbers are the ones a dense [probe x warm]
    matrix gives.

    ``recall@k``: the item itself is among the k warm items nearest its estimate (items scoring
    strictly higher count against it; ties go its way); ``neighbours@k``: overlap of the k
    nearest warm items of estimate and of truth (the item excluded).
    """

    def __init__(
        self,
        probe: np.ndarray,
        behaviour: np.ndarray,
        warm: np.ndarray,
        k: int = PROBE_K,
        *,
        max_items: int | None = None,
        seed: int = 0,
        block: int = PROBE_BLOCK,
    ) -> None:
        self.k = k
        warm_idx = np.flatnonzero(warm)
        if max_items is None:
            max_items = probe_size(len(warm_idx))
        self.items = probe_sample(np.asarray(probe, dtype=np.int64), max_items, seed)
        self.bank = torch.from_numpy(np.ascontiguousarray(behaviour[warm_idx], dtype=np.float32))
        self.truth = torch.from_numpy(np.ascontiguousarray(behaviour[self.items], dtype=np.float32))
        self.pos = torch.from_numpy(np.searchsorted(warm_idx, self.items))
        self.kk = min(k, len(warm_idx) - 1)
        self.rows = max(1, block // max(len(warm_idx), 1))
        self.near_true = (
            torch.cat([self._nearest(sims, lo).indices for lo, sims in self._blocks(self.truth)])
            if len(self.items) and self.kk > 0
            else torch.zeros(len(self.items), 0, dtype=torch.long)
        )

    def _blocks(self, x: torch.Tensor):
        """(first row, similarities of rows [first, first + rows) of ``x`` to the bank), one block
        at a time in one reused buffer (a fresh quarter-gigabyte per block costs page faults)."""
        buffer = torch.empty(min(self.rows, len(x)), len(self.bank))
        for lo in range(0, len(x), self.rows):
            part = x[lo : lo + self.rows]
            yield lo, torch.mm(part, self.bank.t(), out=buffer[: len(part)])

    def _nearest(self, sims: torch.Tensor, lo: int) -> torch.return_types.topk | None:
        """The kk nearest bank rows of each row of the block ``sims`` (values and indices), the
        item itself excluded (overwrites its own similarity); None when kk is 0."""
        sims[torch.arange(len(sims)), self.pos[lo : lo + len(sims)]] = float("-inf")
        return sims.topk(self.kk, dim=1) if self.kk > 0 else None

    def __call__(self, estimates: np.ndarray) -> dict:
        """Metrics of ``estimates`` [len(items), D] (any length rows; normalised here)."""
        if len(self.items) == 0:
            return {}
        if len(estimates) != len(self.items):
            raise ValueError(f"{len(estimates)} estimates for {len(self.items)} probe items")
        est = F.normalize(torch.from_numpy(np.asarray(estimates)).float(), dim=-1)
        hits, overlaps = [], []
        for lo, sims in self._blocks(est):
            own = sims[torch.arange(len(sims)), self.pos[lo : lo + len(sims)]]  # a copy
            near = self._nearest(sims, lo)
            if self.kk < self.k:  # fewer other warm items than k: the item is always within k
                hits.append(torch.ones(len(sims), dtype=torch.bool))
            else:  # fewer than k others score strictly higher <=> the k-th best other is <= own
                hits.append(near.values[:, self.k - 1] <= own)
            if near is not None:
                truth = self.near_true[lo : lo + len(sims)]
                overlaps.append(
                    (near.indices[:, :, None] == truth[:, None, :]).any(dim=2).float().mean(dim=1)
                )
        return {
            "items": len(self.items),
            "cosine": float((est * self.truth).sum(dim=1).mean()),
            f"recall@{self.k}": float(torch.cat(hits).float().mean()),
            f"neighbours@{self.k}": float(torch.cat(overlaps).mean()) if self.kk > 0 else 0.0,
        }


def behaviour_probe(
    estimates: np.ndarray,
    probe: np.ndarray,
    behaviour: np.ndarray,
    warm: np.ndarray,
    k: int = PROBE_K,
    *,
    max_items: int | None = None,
    seed: int = 0,
) -> dict:
    """:class:`BehaviourProbe` metrics of ``estimates`` [P, D] for the items ``probe``; ``behaviour``
    [N, D] unit rows, real for ``warm`` items. Beyond ``max_items`` probe items (default
    :func:`probe_size`), a seeded sample."""
    if len(probe) == 0:
        return {}
    scorer = BehaviourProbe(probe, behaviour, warm, k, max_items=max_items, seed=seed)
    rows = np.searchsorted(probe, scorer.items) if len(scorer.items) < len(probe) else slice(None)
    return scorer(np.asarray(estimates)[rows])


# ---- training ----
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


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))  # no [N, D] temporary of squares
    return (x / np.maximum(norm, 1e-12)[:, None]).astype(np.float32, copy=False)


def split_probe(warm: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, probe) item indices: a seeded ``holdout`` share of the warm items is held out."""
    warm_idx = np.flatnonzero(warm)
    rng = np.random.default_rng([seed, 0x9B0BE])
    n_probe = round(holdout * len(warm_idx)) if len(warm_idx) >= 20 else 0
    perm = rng.permutation(len(warm_idx))
    return np.sort(warm_idx[perm[n_probe:]]), np.sort(warm_idx[perm[:n_probe]])


def fuse(modalities: dict[str, ModalityFeatures], config: MultimodalConfig, *, log=print) -> FusionResult:
    """Train the fusion on ``modalities`` (row i = item i) and embed every item."""
    config.validate()
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
        behaviour_true = _unit(collab.values)
        train_items, probe = split_probe(warm, config.holdout, config.seed)
    else:
        warm = np.zeros(num_items, dtype=bool)
        behaviour_true = None
        train_items, probe = np.arange(num_items), np.zeros(0, dtype=np.int64)
    if len(train_items) < 2:
        raise EmbeddingError(f"only {len(train_items)} item(s) to train the fusion on; need at least 2")

    with torch.random.fork_rng(devices=[]), torch_threads(config.threads):
        torch.manual_seed(config.seed)
        fusion = ContentFusion(
            {m: modalities[m].dimension for m in content_names}, config.dim, config.hidden, config.dropout
        )
        head = AlignmentHead(config.dim, config.hidden, collab.dimension) if collab is not None else None
        fusion.to(device)
        if head is not None:
            head.to(device)
        params = list(fusion.parameters()) + (list(head.parameters()) if head is not None else [])
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
        gen = torch.Generator().manual_seed(config.seed)
        target = torch.from_numpy(behaviour_true).to(device) if behaviour_true is not None else None
        batch = min(config.batch_size, len(train_items), config.epoch_items)
        best, best_state, since_best, history = -1.0, None, 0, []
        scorer = None  # the behaviour probe, built at the first epoch that scores it
        start = time.perf_counter()
        for epoch in range(config.epochs):
            fusion.train()
            if head is not None:
                head.train()
            order = torch.from_numpy(train_items)[torch.randperm(len(train_items), generator=gen)]
            order = order[: config.epoch_items]  # a large catalogue: a fresh sample each epoch
            losses = []
            for lo in range(0, len(order) - batch + 1, batch):
                idx = order[lo : lo + batch].to(device)
                sub = {m: x[idx] for m, x in feats.items()}
                view = modality_dropout(mask[idx].cpu(), config.modality_dropout, gen).to(device)
                c = fusion(sub, view)
                if head is not None:
                    loss = info_nce(head(c), target[idx], config.temperature)
                else:  # no behaviour to align to: two views of the same item must agree
                    other = modality_dropout(mask[idx].cpu(), config.modality_dropout, gen).to(device)
                    loss = info_nce(c, fusion(sub, other), config.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            entry = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
            if head is not None and len(probe):
                scorer = scorer or BehaviourProbe(probe, behaviour_true, warm, seed=config.seed)
                result = _probe(fusion, head, feats, mask, scorer)
                entry.update(result)
                score = result[f"recall@{PROBE_K}"]
                if score > best:
                    best, since_best = score, 0
                    best_state = (
                        copy.deepcopy(fusion.state_dict()),
                        copy.deepcopy(head.state_dict()),
                        epoch + 1,
                    )
                else:
                    since_best += 1
            history.append(entry)
            if config.patience and best_state is not None and since_best >= config.patience:
                break
        if best_state is not None:
            fusion.load_state_dict(best_state[0])
            head.load_state_dict(best_state[1])
        fusion.eval()
        if head is not None:
            head.eval()
        with torch.no_grad():
            raw = torch.from_numpy(
                _batched(
                    lambda idx: fusion({m: x[idx] for m, x in feats.items()}, mask[idx]), num_items, device
                )
            ).to(device)
            content = _unit(raw.cpu().numpy())
            behaviour = estimate = None
            probe_metrics = {}
            if head is not None:
                estimate = _unit(_batched(lambda idx: head(raw[idx]), num_items, device))
                if len(probe):
                    scorer = scorer or BehaviourProbe(probe, behaviour_true, warm, seed=config.seed)
                    probe_metrics = scorer(estimate[scorer.items])
                behaviour = np.where(warm[:, None], behaviour_true, estimate).astype(np.float32)
    seconds = time.perf_counter() - start
    last = history[-1] if history else {}
    log(
        f"  fusion: {len(history)} epochs in {seconds:.0f}s, loss {last.get('loss', float('nan')):.3f}"
        + (f", probe recall@{PROBE_K} {probe_metrics[f'recall@{PROBE_K}']:.3f}" if probe_metrics else "")
    )
    info = {
        "content_modalities": content_names,
        "skipped_modalities": skipped,
        "objective": "infonce content->collaborative"
        if head is not None
        else "infonce between modality views",
        "train_items": len(train_items),
        "warm_items": int(warm.sum()),
        "estimated_items": int(num_items - warm.sum()) if head is not None else 0,
        "epochs_run": len(history),
        "epoch_items": min(config.epoch_items, len(train_items)),
        "best_epoch": best_state[2] if best_state is not None else len(history),
        "seconds": seconds,
        "final_loss": last.get("loss"),
        "probe": {"content": probe_metrics},
        "items_without_content": int((~mask.any(dim=1)).sum()),
    }
    return FusionResult(content, behaviour, warm, probe, fusion, head, info, estimate)


def _batched(fn, n: int, device: torch.device, size: int = 4096) -> np.ndarray:
    out = [
        fn(torch.arange(lo, min(n, lo + size), device=device)).float().cpu().numpy()
        for lo in range(0, n, size)
    ]
    return np.concatenate(out)


def _probe(fusion, head, feats, mask, scorer: BehaviourProbe) -> dict:
    fusion.eval()
    head.eval()
    with torch.no_grad():
        idx = torch.from_numpy(scorer.items).to(mask.device)
        est = head(fusion({m: x[idx] for m, x in feats.items()}, mask[idx])).float().cpu().numpy()
    return scorer(est)


# ---- the encoder ----
def encode_multimodal(
    dataset,
    config: MultimodalConfig,
    *,
    text: ModalityFeatures | None = None,
    image_encoder=None,
    log=print,
    fitted: dict | None = None,
) -> tuple[np.ndarray, dict, FusionResult]:
    """(embeddings [num_items, D], embed.json fields, the trained fusion) for a prepared dataset;
    ``fitted`` receives the fitted attribute model (see :func:`gather_modalities`)."""
    config.validate()
    modalities = gather_modalities(
        dataset, config, text=text, image_encoder=image_encoder, log=log, fitted=fitted
    )
    result = fuse(modalities, config, log=log)
    meta = {
        "encoder": "multimodal",
        "modalities": {name: feats.summary() for name, feats in modalities.items()},
        "fusion": result.info,
        "layout": _layout(result, config),
    }
    return result.embeddings(config), meta, result


def _layout(result: FusionResult, config: MultimodalConfig) -> dict:
    dims = {"content": [0, result.content.shape[1]]}
    if result.behaviour is not None and config.behaviour_weight > 0:
        dims["behaviour"] = [result.content.shape[1], result.content.shape[1] + result.behaviour.shape[1]]
    return {
        "columns": dims,
        "content_weight": config.content_weight,
        "behaviour_weight": config.behaviour_weight,
    }


# ---- the registered encoder (``genrec embed --encoder multimodal``) ----
ENCODER_VERSION = "multimodal-2"  # bump when the algorithm changes what equal settings produce


def settings_of(config, name: str, cls: type):
    """The ``name`` settings section of an EmbedConfig, as ``cls`` (a table is converted, then checked)."""
    value = getattr(config, name, None)
    if value is None:
        return cls().validate()
    if isinstance(value, dict):
        return cls.from_dict(value, f"embed.{name}")
    if not isinstance(value, cls):
        raise EmbeddingError(f"embed.{name} must be a {cls.__name__} or a table, got {type(value).__name__}")
    return value.validate()


def _stderr_log(enabled: bool):
    if not enabled:
        return lambda message: None
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    return lambda message: console.print(message, markup=False)


def multimodal_fingerprint(encoder, dataset, settings: MultimodalConfig, extra: dict | None = None) -> str:
    """Hash of what the embeddings depend on: the text inputs and model, the item table, the training
    split (the dataset's manifest), image files (path, size, mtime) and every cache-relevant setting."""
    import hashlib
    import json

    from genrec.config import cache_relevant

    parts: dict = {
        "version": ENCODER_VERSION,
        "settings": cache_relevant(settings),
        "dataset_manifest": dataset.fingerprint,
        "items_parquet": file_sha256(Path(dataset.path) / "items.parquet"),
        **(extra or {}),
    }
    if "text" in settings.modalities:
        parts["text"] = encoder.text_encoder().fingerprint(dataset)
    if "image" in settings.modalities:
        from genrec.embed.image import item_image_paths

        s = settings.image
        paths = item_image_paths(
            dataset.item_table(), column=s.column, root=s.root or dataset.path, directory=s.directory or None
        )
        h = hashlib.sha256()
        for p in paths:
            stat = p.stat() if p is not None and p.is_file() else None
            h.update(f"{p}\0{stat.st_size if stat else -1}\0{stat.st_mtime_ns if stat else -1}\n".encode())
        parts["images"] = h.hexdigest()
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class MultimodalEncoder(ItemEncoder):
    """``genrec embed --encoder multimodal``: settings from ``config.multimodal`` ([embed.multimodal]).

    The text modality is the ``text`` encoder's output for the same config (model, template), taken
    from the embedding cache when it was computed before.
    """

    name = "multimodal"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.settings = settings_of(config, "multimodal", MultimodalConfig)
        self._meta: dict = {}
        self._text_encoder = None

    def text_encoder(self):
        if self._text_encoder is None:
            from genrec.embed.text import TextEncoder

            self._text_encoder = TextEncoder(self.config)
        return self._text_encoder

    def text_modality(self, dataset) -> ModalityFeatures:
        """The text encoder's embeddings (through the shared cache); items whose text is empty are absent."""
        import dataclasses

        from genrec.embed.pipeline import embed_items

        artifact = embed_items(dataset, dataclasses.replace(self.config, encoder="text"))
        texts = self.text_encoder().texts(dataset)
        present = np.array([bool(t.strip()) for t in texts], dtype=bool)
        info = {
            "model": artifact.meta.get("model"),
            "template": self.config.template,
            "cache": str(artifact.path),
        }
        return ModalityFeatures("text", artifact.embeddings, present, info).check_items(dataset.num_items)

    def describe(self) -> dict:
        import dataclasses

        return {"multimodal_settings": dataclasses.asdict(self.settings), **self._meta}

    def fingerprint(self, dataset) -> str:
        return multimodal_fingerprint(self, dataset, self.settings)

    def encode(self, dataset) -> np.ndarray:
        log = _stderr_log(self.config.progress)
        text = self.text_modality(dataset) if "text" in self.settings.modalities else None
        fitted: dict = {}
        embeddings, meta, fusion = encode_multimodal(
            dataset, self.settings, text=text, log=log, fitted=fitted
        )
        self._meta = meta
        self._fitted = {"fusion": fusion, **fitted}
        return embeddings

    # ---- embedding items added after training (genrec.embed.state) ----
    def new_item_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """What :meth:`embed_new_items` needs, after :meth:`encode`: the settings (JSON) and the
        fitted networks and attribute model (tensors)."""
        return multimodal_state(self, self._fitted)

    @classmethod
    def new_item_columns(cls, spec: dict) -> dict[str, str]:
        return multimodal_columns(spec)

    @classmethod
    def embed_new_items(cls, spec, tensors, item_table, indices, *, where, root=None, device="auto"):
        content, estimate = new_item_content(spec, tensors, item_table, where=where, root=root, device=device)
        return new_item_embeddings(spec, content, estimate)


# ---- items added after training: the fitted state, and embedding new items with it ----
def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().cpu() for k, v in tensors.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def multimodal_state(encoder: MultimodalEncoder, fitted: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """(spec, tensors) of a multimodal encoder after encode(): the settings, the modalities the
    fusion reads and their widths, the fusion and alignment head's weights, the attribute model."""
    import dataclasses

    fusion: FusionResult = fitted["fusion"]
    names = list(fusion.info["content_modalities"])
    spec: dict = {
        "encoder": encoder.name,
        "multimodal": dataclasses.asdict(encoder.settings),
        "content_modalities": names,
        "modality_dims": {m: int(fusion.fusion.proj[m][0].normalized_shape[0]) for m in names},
        "behaviour_dim": int(fusion.behaviour.shape[1]) if fusion.behaviour is not None else None,
        "head": fusion.head is not None,
    }
    tensors = _prefixed("fusion.", fusion.fusion.state_dict())
    if fusion.head is not None:
        tensors.update(_prefixed("head.", fusion.head.state_dict()))
    if "text" in names:
        spec["text"] = encoder.text_encoder().describe()
    if "attributes" in names:
        model = fitted["attributes"]
        spec["attributes"] = model.spec()
        tensors.update(_prefixed("attributes.", model.tensors()))
    return spec, tensors


def multimodal_columns(spec: dict) -> dict[str, str]:
    """The item-table columns a new item needs, with their kind ("text", "attribute", "path")."""
    from genrec.embed.template import Template

    out: dict[str, str] = {}
    names = spec["content_modalities"]
    if "text" in names:
        out.update({c: "text" for c in Template(spec["text"]["template"]).fields})
    if "attributes" in names:
        out.update({c: "attribute" for c in spec["attributes"]["columns"]})
    image = spec["multimodal"]["image"]
    if "image" in names and not image["directory"]:
        out[image["column"]] = "path"
    return out


def new_item_content(
    spec: dict, tensors: dict[str, torch.Tensor], item_table, *, where: str, root=None, device="auto"
) -> tuple[np.ndarray, np.ndarray | None]:
    """(content [n, dim], the alignment head's behaviour estimate [n, Dc] or None), unit rows, of
    the rows of ``item_table`` through the saved fusion: what :func:`fuse` gives an item of the
    training catalogue that has the same content. ``root``: where relative image paths start."""
    settings = MultimodalConfig.from_dict(spec["multimodal"])
    names = spec["content_modalities"]
    dims = {m: int(spec["modality_dims"][m]) for m in names}
    n = item_table.num_rows
    feats: dict[str, ModalityFeatures] = {}
    if "text" in names:
        from genrec.embed.text import TextEncoder

        texts, vectors = TextEncoder.embed_new_texts(spec["text"], item_table, where=where, device=device)
        present = np.array([bool(t.strip()) for t in texts], dtype=bool)
        feats["text"] = ModalityFeatures("text", vectors, present)
    if "attributes" in names:
        from genrec.embed.attributes import AttributeModel

        model = AttributeModel.from_state(spec["attributes"], _unprefixed("attributes.", tensors))
        feats["attributes"] = model.transform(item_table, where)
    if "image" in names:
        from genrec.embed.image import ImageEncoder, embed_item_images, item_image_paths

        s = settings.image
        paths = item_image_paths(
            item_table, column=s.column, root=s.root or root, directory=s.directory or None, where=where
        )
        ids = [str(v) for v in item_table.column("item_id").to_pylist()]
        encoder = ImageEncoder(batch_size=s.batch_size, device="cpu")
        feats["image"] = embed_item_images(paths, ids, encoder=encoder, on_unreadable=s.on_unreadable)
    for m in names:
        if feats[m].dimension != dims[m]:
            raise EmbeddingError(
                f"modality {m!r} gives {feats[m].dimension} dimensions for new items, the fusion was trained "
                f"on {dims[m]}: the encoder it uses changed since the run was trained"
            )
    fusion = ContentFusion(dims, settings.dim, settings.hidden, settings.dropout)
    _load_state(fusion, _unprefixed("fusion.", tensors), "fusion")
    fusion.eval()
    head = None
    if spec["head"]:
        head = AlignmentHead(settings.dim, settings.hidden, int(spec["behaviour_dim"]))
        _load_state(head, _unprefixed("head.", tensors), "alignment head")
        head.eval()
    x = {m: torch.from_numpy(feats[m].values) for m in names}
    mask = torch.from_numpy(np.stack([feats[m].present for m in names], axis=1))
    with torch.no_grad(), torch_threads(settings.threads):
        raw = torch.from_numpy(
            _batched(lambda idx: fusion({m: v[idx] for m, v in x.items()}, mask[idx]), n, "cpu")
        )
        estimate = _unit(_batched(lambda idx: head(raw[idx]), n, "cpu")) if head is not None else None
    return _unit(raw.numpy()), estimate


def new_item_embeddings(spec: dict, content: np.ndarray, behaviour: np.ndarray | None) -> np.ndarray:
    """``[content_weight * c ; behaviour_weight * b]``, as :meth:`FusionResult.embeddings`."""
    settings = MultimodalConfig.from_dict(spec["multimodal"])
    parts = [settings.content_weight * content]
    if behaviour is not None and settings.behaviour_weight > 0:
        parts.append(settings.behaviour_weight * behaviour)
    return np.concatenate(parts, axis=1).astype(np.float32)


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise EmbeddingError(f"the saved {what} does not fit its settings ({e})") from None
