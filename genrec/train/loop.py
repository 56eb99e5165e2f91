"""The training loop: AdamW with warm-up and decay, clipping, bf16 autocast, optional torch.compile,
validation NDCG@10 through the constrained beam search, early stopping, resumable checkpoints,
and DistributedDataParallel under torchrun.

``fit(config, inputs, run_dir, ...)`` trains and leaves ``run_dir/model.safetensors`` holding the
best validated weights (the last weights when validation never ran).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genrec import cpu_threads
from genrec.config import FUSION_FIELDS, SPARSE_ITEM_TABLE_FROM, Config, cache_relevant, stable_hash
from genrec.faults import fault_point
from genrec.models import GenerativeModel, build_model
from genrec.train import checkpoint as ckpt
from genrec.train.distributed import DistInfo, all_reduce_sum, barrier, broadcast_value
from genrec.train.examples import BatchMaker, build_examples, epoch_batches, shard
from genrec.train.lazy_adamw import LazyAdamW
from genrec.train.metrics_log import MetricsLog
from genrec.train.schedule import learning_rate


@dataclass
class TrainInputs:
    """What training reads: the dataset's sequences and splits, and the items' semantic IDs."""

    flat_items: np.ndarray  # int64 [num_interactions], per-user chronological (CSR)
    train_starts: np.ndarray  # int64 [num_users] training part of user u: [start, end)
    train_ends: np.ndarray
    valid_users: np.ndarray  # int64 [U] validation rows: history = flat_items[v_starts:v_ends]
    valid_starts: np.ndarray
    valid_ends: np.ndarray
    valid_targets: np.ndarray
    codes: np.ndarray  # int64 [num_items, T] semantic IDs (codes + disambiguation token)
    level_sizes: list[int]
    fingerprints: dict[str, str]  # dataset / tokenizer hashes: what the run was trained from
    item_content: np.ndarray | None = None  # float32 [num_items, D]: the model's content vectors' input

    @classmethod
    def from_dataset(
        cls,
        dataset,
        codes: np.ndarray,
        level_sizes: list[int],
        fingerprints: dict[str, str],
        item_content: np.ndarray | None = None,
    ):
        starts, ends = dataset.train_bounds()
        valid = dataset.split("valid")
        return cls(
            flat_items=dataset.items,
            train_starts=starts,
            train_ends=ends,
            valid_users=valid.users,
            valid_starts=valid.starts,
            valid_ends=valid.ends,
            valid_targets=valid.targets,
            codes=np.asarray(codes, dtype=np.int64),
            level_sizes=list(level_sizes),
            fingerprints=dict(fingerprints),
            item_content=item_content,
        )

    def trained_items(self) -> np.ndarray:
        """bool [num_items]: the items some training sequence holds (the others are cold)."""
        seen = np.zeros(len(self.codes), dtype=bool)
        lengths = self.train_ends - self.train_starts
        rows = np.repeat(self.train_starts, lengths) + (
            np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        )
        seen[self.flat_items[rows]] = True
        return seen


@dataclass
class TrainResult:
    model: GenerativeModel
    steps: int
    epochs_completed: float
    best: dict
    stopped_because: str
    train_seconds: float
    validations: list[dict] = field(default_factory=list)


class TrainingDiverged(ckpt.CheckpointError):
    """The loss became NaN or infinite: training stopped, the last good checkpoint is kept."""


def kept_step(folder: Path | None) -> int:
    return int(folder.name.split("-")[1]) if folder is not None else 0


class _LossModule(nn.Module):
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
        "model": {k: v for k, v in cache_relevant(config.model).items() if k not in FUSION_FIELDS},
        "train": cache_relevant(config.train),
        "seed": config.run.seed,
        "inputs": inputs.fingerprints,
        "level_sizes": inputs.level_sizes,
    }


def _describe_difference(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _describe_difference(a, b, f"{prefix}{key}.")
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


def fit(
    config: Config,
    inputs: TrainInputs,
    run_dir: Path,
    *,
    device: torch.device,
    dist_info: DistInfo = DistInfo(),
    resume: bool = False,
    validate_fn: Callable | None = None,
    console=None,
    progress: bool = True,
) -> TrainResult:
    """Train the configured model on ``inputs``; see the module docstring.

    ``validate_fn(model, users, histories_starts, histories_ends, targets)`` -> dict with
    ``ndcg@10`` and ``recall@10`` for this process's share of validation rows (summed, with
    ``count``); by default the constrained beam search of :mod:`genrec.recommend`.
    """
    t = config.train
    run_dir = Path(run_dir)
    say = console.print if console is not None else print
    main = dist_info.is_main
    if t.batch_size % dist_info.world_size:
        raise ValueError(
            f"train.batch_size {t.batch_size} must divide evenly over {dist_info.world_size} processes"
        )
    torch.manual_seed(config.run.seed)
    model = build_training_model(config, inputs).to(device)
    names = {p: n for n, p in model.named_parameters()}
    sparse_items = uses_sparse_item_table(config, model, device, dist_info)
    if sparse_items:
        model.sparse_item_grads(True)
        say(
            f"item table: {model.num_items:,} rows, each step updates only the rows it touched (train.sparse_item_table)"
        )
    optimizer = make_optimizer(model, config, device, sparse_items)
    examples = build_examples(inputs.train_starts, inputs.train_ends, t.max_history, model.example_kind)
    if len(examples) < t.batch_size:
        raise ValueError(
            f"only {len(examples)} training examples for train.batch_size {t.batch_size}: lower the batch size"
        )
    maker = BatchMaker(examples, inputs.flat_items, inputs.codes, device)
    steps_per_epoch = len(examples) // t.batch_size
    total_steps = t.epochs * steps_per_epoch
    if t.max_steps:
        total_steps = min(total_steps, t.max_steps)
    eval_every = t.eval_every or steps_per_epoch
    checkpoint_every = t.checkpoint_every or eval_every
    signature = training_signature(config, inputs)
    ckpt_root = run_dir / "checkpoints"
    log = MetricsLog(run_dir, enabled=main, notice=say)

    # Validation rows: a fixed seeded subset when asked, this process's share of it.
    val_rows = np.arange(len(inputs.valid_users))
    if t.val_users and t.val_users < len(val_rows):
        val_rows = np.sort(
            np.random.default_rng([config.run.seed, 0x7A1]).choice(val_rows, t.val_users, False)
        )
    my_val_rows = val_rows[dist_info.rank :: dist_info.world_size]

    state = {
        "step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "best": {"ndcg@10": -1.0, "recall@10": 0.0, "step": 0},
        "bad_validations": 0,
        "train_seconds": 0.0,
        "validations": [],
        "signature": signature,
        "signature_hash": stable_hash(signature),
        "world_size": dist_info.world_size,
        "finished": "",
        # The loss summed since the last log line and its target tokens: a resumed run's next line
        # averages the same steps as the uninterrupted run's.
        "loss_window": [0.0, 0],
    }
    latest = ckpt.latest_checkpoint(ckpt_root)
    if latest is not None and not resume:
        raise ckpt.CheckpointError(
            f"{run_dir} already holds a training run (checkpoint {latest.name}); pass --resume to "
            "continue it, or choose another --run-dir"
        )
    if resume and latest is not None:
        saved = ckpt.read_state(latest)
        if saved.get("signature_hash") != state["signature_hash"]:
            diff = _describe_difference(saved.get("signature", {}), signature)
            raise ckpt.CheckpointError(
                f"checkpoint {latest} was trained with a different config or different inputs, so it "
                f"cannot be resumed with this one: {'; '.join(diff[:8]) or 'unknown difference'}"
            )
        ckpt.load_model_weights(latest / "model.safetensors", model)
        ckpt.restore_optimizer(
            optimizer, ckpt.read_tensors(latest / "optimizer.safetensors"), saved["optimizer_groups"], names
        )
        rng_file = latest / f"rng-rank{dist_info.rank}.safetensors"
        if saved.get("world_size") != dist_info.world_size:
            say(
                f"note: resuming a {saved.get('world_size')}-process run with {dist_info.world_size} processes"
            )
        if dist_info.rank < saved.get("world_size", 1):  # this rank's random state was saved: demand it
            if not rng_file.is_file():
                raise ckpt.CheckpointError(
                    f"{rng_file} is missing: checkpoint {latest.name} is incomplete, and resuming without its "
                    "random-number state would not continue the same run; restore the file, or delete "
                    f"{ckpt_root} to train from the start"
                )
            ckpt.restore_rng(ckpt.read_tensors(rng_file))
        state.update({k: saved[k] for k in state if k in saved and k not in ("signature", "world_size")})
        log.drop_after(state["step"])
        say(f"resumed from {latest.name}: step {state['step']}, epoch {state['epoch']}")
    elif resume:
        say(f"--resume: no checkpoint in {ckpt_root} yet, starting from scratch")
    if latest is None:
        log.drop_after(0)  # a run killed before its first checkpoint starts its log over

    amp_dtype = autocast_dtype(config, device)
    loss_module: nn.Module = _LossModule(model, t.label_smoothing)
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        loss_module = DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None
        )
    step_module = loss_module
    compiled = False
    if t.compile:
        step_module = torch.compile(loss_module, dynamic=True)
        compiled = True
    params = [p for p in model.parameters() if p.requires_grad]

    def run_step(batch, normalizer: float) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            total = step_module(batch)
        (total * (dist_info.world_size / normalizer)).backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total.detach()

    def validate() -> dict:
        model.eval()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            sums = validate_fn(
                model,
                inputs.valid_users[my_val_rows],
                inputs.valid_starts[my_val_rows],
                inputs.valid_ends[my_val_rows],
                inputs.valid_targets[my_val_rows],
            )
        model.train()
        packed = torch.tensor(
            [sums["ndcg@10"], sums["recall@10"], sums["count"]], dtype=torch.float64, device=device
        )
        ndcg, recall, count = all_reduce_sum(packed, dist_info).tolist()
        return {"ndcg@10": ndcg / max(count, 1), "recall@10": recall / max(count, 1), "users": int(count)}

    def save_checkpoint() -> None:
        state["loss_window"] = [float(all_reduce_sum(loss_sum.clone(), dist_info)), loss_tokens]
        staged = ckpt.stage_checkpoint(ckpt_root, state["step"]) if main else None
        barrier(dist_info)
        staged = staged or ckpt_root / f".{ckpt.step_dir_name(state['step'])}.tmp"
        ckpt.write_rank_rng(staged, dist_info.rank)
        barrier(dist_info)
        if main:
            ckpt.commit_checkpoint(ckpt_root, staged, state["step"], model, optimizer, names, state)
        barrier(dist_info)

    def check_finite() -> None:
        """Stop at a non-finite loss before its weights are validated, logged or checkpointed."""
        bad = all_reduce_sum((first_bad >= 0).to(torch.float64), dist_info)
        if float(bad) > 0:
            at = int(first_bad) if int(first_bad) >= 0 else state["step"]
            kept = ckpt.latest_checkpoint(ckpt_root)
            log.log("diverged", at, reason="non-finite loss")
            log.close()
            raise TrainingDiverged(
                f"training diverged: the loss is not finite (NaN or infinite) at step {at} "
                f"(train.lr = {t.lr:g}); nothing after step {kept_step(kept)} was saved"
                f"{f' and the last good checkpoint, {kept.name}, is kept in {ckpt_root}' if kept else ''}. "
                "Lower train.lr (or raise train.warmup_steps / set train.grad_clip) and train again"
            )

    model.train()
    started = time.perf_counter() - state["train_seconds"]
    window_sum, loss_tokens = state["loss_window"]  # rank 0 carries the (all-reduced) resumed sum
    loss_sum = torch.full((), window_sum if main else 0.0, device=device, dtype=torch.float64)
    first_bad = torch.full((), -1, device=device, dtype=torch.int64)  # first step with a non-finite loss
    stopped = state["finished"]  # a resumed run that had already finished goes straight to the end
    bar = _Progress(total_steps, enabled=main and progress, console=console)
    bar.advance_to(state["step"])
    batches = epoch_batches(examples, t.batch_size, config.run.seed, state["epoch"], t.length_grouping)
    last_log = time.perf_counter()
    examples_since_log = 0
    while not stopped:
        cpu_threads.tick()  # fewer threads while other processes hold cores (unless the user set them)
        if state["batch_in_epoch"] >= len(batches):
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            batches = epoch_batches(
                examples, t.batch_size, config.run.seed, state["epoch"], t.length_grouping
            )
        global_idx = batches[state["batch_in_epoch"]]
        batch = maker(shard(global_idx, dist_info.rank, dist_info.world_size))
        normalizer = maker.target_tokens(global_idx, model.num_levels)
        elapsed = time.perf_counter() - started
        if t.time_budget_s:  # ranks' clocks differ: rank 0's decides the schedule and the stop
            elapsed = broadcast_value(elapsed, dist_info, device)
        lr = learning_rate(
            state["step"],
            lr=t.lr,
            warmup_steps=t.warmup_steps,
            total_steps=total_steps,
            schedule=t.schedule,
            min_lr_ratio=t.min_lr_ratio,
            time_progress=elapsed / t.time_budget_s if t.time_budget_s else 0.0,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        try:
            total = run_step(batch, normalizer)
        except Exception as e:  # a compiler failure must not cost the run: fall back to eager
            if not compiled:
                raise
            say(
                f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); training eagerly"
            )
            optimizer.zero_grad(set_to_none=True)
            step_module, compiled = loss_module, False
            total = run_step(batch, normalizer)
        loss_sum += total
        loss_tokens += normalizer
        examples_since_log += len(global_idx)
        state["step"] += 1
        state["batch_in_epoch"] += 1
        step = state["step"]
        # Recorded on the device (no sync per step), checked where the loop syncs anyway.
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(total), step, first_bad)
        fault_point("train-step")

        if step % t.log_every == 0 or step == total_steps:
            check_finite()
            mean = float(all_reduce_sum(loss_sum.clone(), dist_info)) / max(1, loss_tokens)
            now = time.perf_counter()
            rate = examples_since_log / max(now - last_log, 1e-9)
            log.log("train", step, loss=mean, lr=lr, epoch=step / steps_per_epoch, examples_per_s=rate)
            bar.update(step, loss=mean)
            loss_sum.zero_()
            loss_tokens, examples_since_log, last_log = 0, 0, now

        # Judged on the clock read before the step, which every rank shares: all validate together.
        over_budget = bool(t.time_budget_s) and elapsed >= t.time_budget_s
        if step % eval_every == 0 or step == total_steps or over_budget:
            check_finite()
            metrics = validate() if validate_fn is not None else None
            if metrics is not None:
                better = metrics["ndcg@10"] > state["best"]["ndcg@10"] + t.min_delta
                if better:
                    state["best"] = {
                        "ndcg@10": metrics["ndcg@10"],
                        "recall@10": metrics["recall@10"],
                        "step": step,
                    }
                    state["bad_validations"] = 0
                    if main:
                        ckpt.save_model(run_dir / "best.safetensors", model, {"step": str(step)})
                        fault_point("best-saved")
                else:
                    state["bad_validations"] += 1
                record = {**metrics, "epoch": round(step / steps_per_epoch, 3), "seconds": round(elapsed, 1)}
                state["validations"].append({"step": step, **record})
                log.log("val", step, **record)
                bar.update(step, ndcg=metrics["ndcg@10"])
                say(
                    f"step {step} (epoch {step / steps_per_epoch:.1f}, {elapsed:.0f}s): "
                    f"valid NDCG@10 {metrics['ndcg@10']:.4f} Recall@10 {metrics['recall@10']:.4f}"
                    f"{'  best' if better else ''}"
                )
                if t.patience and state["bad_validations"] >= t.patience:
                    stopped = f"early stopping: no better validation NDCG@10 in {t.patience} validations"
        state["train_seconds"] = time.perf_counter() - started
        if not stopped and step >= total_steps:
            stopped = f"reached {total_steps} steps"
        if not stopped and over_budget:
            stopped = f"time budget of {t.time_budget_s:.0f}s spent"
        if stopped:
            state["finished"] = stopped
        if step % checkpoint_every == 0 or stopped:
            check_finite()
            save_checkpoint()
            fault_point("checkpoint-saved")
    bar.close()
    log.log("train_end", state["step"], reason=stopped, train_seconds=state["train_seconds"])
    log.close()
    fault_point("train-end-logged")

    best_path = run_dir / "best.safetensors"
    if best_path.is_file():
        ckpt.load_model_weights(best_path, model)
    if main:
        ckpt.save_model(
            run_dir / "model.safetensors", model, {"step": str(state["best"]["step"] or state["step"])}
        )
        fault_point("model-saved")
    barrier(dist_info)
    return TrainResult(
        model=model,
        steps=state["step"],
        epochs_completed=state["step"] / steps_per_epoch,
        best=state["best"],
        stopped_because=stopped,
        train_seconds=state["train_seconds"],
        validations=state["validations"],
    )


class _Progress:
    """A rich progress bar over optimiser steps (silent when disabled)."""

    def __init__(self, total: int, enabled: bool, console=None) -> None:
        self._bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  val NDCG@10 {task.fields[ndcg]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("train", total=total, loss="-", ndcg="-")
        self._bar.start()

    def advance_to(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def update(self, step: int, loss: float | None = None, ndcg: float | None = None) -> None:
        if self._bar is None:
            return
        fields = {}
        if loss is not None and math.isfinite(loss):
            fields["loss"] = f"{loss:.4f}"
        if ndcg is not None:
            fields["ndcg"] = f"{ndcg:.4f}"
        self._bar.update(self._task, completed=step, **fields)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
