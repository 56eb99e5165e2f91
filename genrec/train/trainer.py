"""The training loop: AdamW with warm-up and decay, clipping, bf16 autocast, optional torch.compile,
validation NDCG@10 through the constrained beam search, early stopping, a time budget, resumable
checkpoints, and DistributedDataParallel under torchrun.

:class:`Trainer` holds a run's parts as attributes (``setup``), continues a checkpoint
(``resume``), and ``run`` loops over ``train_step``, ``validate`` and ``save_checkpoint``; the
state a checkpoint saves is one :class:`TrainState`. ``fit(config, inputs, run_dir, ...)`` does
all of it and leaves ``run_dir/model.safetensors`` holding the best validated weights (the last
weights when validation never ran).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from genrec import cpu_threads
from genrec.config import Config
from genrec.faults import fault_point
from genrec.heap import keep_freed_memory
from genrec.settings import stable_hash
from genrec.train import checkpoint as ckpt
from genrec.train.distributed import DistInfo, all_reduce_sum, barrier, broadcast_value
from genrec.train.examples import BatchMaker, build_examples, epoch_batches, shard
from genrec.train.inputs import TrainInputs
from genrec.train.metrics_log import MetricsLog
from genrec.train.progress_bar import TrainProgress
from genrec.train.recipe import (
    LossModule,
    autocast_dtype,
    build_training_model,
    make_optimizer,
    signature_difference,
    training_signature,
    uses_sparse_item_table,
)
from genrec.train.schedule import learning_rate
from genrec.train.state import TrainingDiverged, TrainResult, TrainState, kept_step


class Trainer:
    """One training run. ``validate_fn(model, users, history_starts, history_ends, targets)`` ->
    dict with ``ndcg@10`` and ``recall@10`` summed over this process's share of validation rows
    (with ``count``); by default the constrained beam search of :mod:`genrec.serve.beam`."""

    def __init__(
        self,
        config: Config,
        inputs: TrainInputs,
        run_dir: Path,
        *,
        device: torch.device,
        dist_info: DistInfo = DistInfo(),
        validate_fn: Callable | None = None,
        console=None,
        progress: bool = True,
    ) -> None:
        self.config, self.t, self.inputs = config, config.train, inputs
        self.run_dir = Path(run_dir)
        self.device, self.dist = device, dist_info
        self.validate_fn = validate_fn
        self.console, self.progress = console, progress
        self.say = console.print if console is not None else print
        self.main = dist_info.is_main
        self.ckpt_root = self.run_dir / "checkpoints"

    # ---- setup ----
    def setup(self) -> Trainer:
        """Build the model, optimizer, examples, validation rows and a fresh state (seeded)."""
        t, dist = self.t, self.dist
        if t.batch_size % dist.world_size:
            raise ValueError(f"train.batch_size {t.batch_size} must divide evenly over {dist.world_size} processes")
        torch.manual_seed(self.config.run.seed)
        self.model = build_training_model(self.config, self.inputs).to(self.device)
        self.names = {p: n for n, p in self.model.named_parameters()}
        sparse_items = uses_sparse_item_table(self.config, self.model, self.device, dist)
        if sparse_items:
            self.model.sparse_item_grads(True)
            self.say(
                f"item table: {self.model.num_items:,} rows, each step updates only the rows it touched (train.sparse_item_table)"
            )
        self.optimizer = make_optimizer(self.model, self.config, self.device, sparse_items)
        self.examples = build_examples(
            self.inputs.train_starts, self.inputs.train_ends, t.max_history, self.model.example_kind
        )
        if len(self.examples) < t.batch_size:
            raise ValueError(
                f"only {len(self.examples)} training examples for train.batch_size {t.batch_size}: lower the batch size"
            )
        self.maker = BatchMaker(self.examples, self.inputs.flat_items, self.inputs.codes, self.device)
        self.steps_per_epoch = len(self.examples) // t.batch_size
        self.total_steps = t.epochs * self.steps_per_epoch
        if t.max_steps:
            self.total_steps = min(self.total_steps, t.max_steps)
        self.eval_every = t.eval_every or self.steps_per_epoch
        self.checkpoint_every = t.checkpoint_every or self.eval_every
        self.log = MetricsLog(self.run_dir, enabled=self.main, notice=self.say)
        # Validation rows: a fixed seeded subset when asked, this process's share of it.
        val_rows = np.arange(len(self.inputs.valid_users))
        if t.val_users and t.val_users < len(val_rows):
            rng = np.random.default_rng([self.config.run.seed, 0x7A1])
            val_rows = np.sort(rng.choice(val_rows, t.val_users, False))
        self.val_rows = val_rows[dist.rank :: dist.world_size]
        signature = training_signature(self.config, self.inputs)
        self.state = TrainState(signature, stable_hash(signature), dist.world_size)
        return self

    def resume(self, resume: bool) -> Trainer:
        """Continue the run's latest checkpoint (weights, optimizer, this rank's random state, the
        loop's state) with ``resume``; without it, refuse a folder that holds a run."""
        latest = ckpt.latest_checkpoint(self.ckpt_root)
        if latest is not None and not resume:
            raise ckpt.CheckpointError(
                f"{self.run_dir} already holds a training run (checkpoint {latest.name}); pass --resume to "
                "continue it, or choose another --run-dir"
            )
        if resume and latest is not None:
            self._load_checkpoint(latest)
        elif resume:
            self.say(f"--resume: no checkpoint in {self.ckpt_root} yet, starting from scratch")
        if latest is None:
            self.log.drop_after(0)  # a run killed before its first checkpoint starts its log over
        return self

    def _load_checkpoint(self, latest: Path) -> None:
        saved = ckpt.read_state(latest)
        if saved.get("signature_hash") != self.state.signature_hash:
            diff = signature_difference(saved.get("signature", {}), self.state.signature)
            raise ckpt.CheckpointError(
                f"checkpoint {latest} was trained with a different config or different inputs, so it "
                f"cannot be resumed with this one: {'; '.join(diff[:8]) or 'unknown difference'}"
            )
        ckpt.load_model_weights(latest / "model.safetensors", self.model)
        ckpt.restore_optimizer(
            self.optimizer,
            ckpt.read_tensors(latest / "optimizer.safetensors"),
            saved["optimizer_groups"],
            self.names,
        )
        rank, world = self.dist.rank, self.dist.world_size
        rng_file = latest / f"rng-rank{rank}.safetensors"
        if saved.get("world_size") != world:
            self.say(f"note: resuming a {saved.get('world_size')}-process run with {world} processes")
        if rank < saved.get("world_size", 1):  # this rank's random state was saved: demand it
            if not rng_file.is_file():
                raise ckpt.CheckpointError(
                    f"{rng_file} is missing: checkpoint {latest.name} is incomplete, and resuming without its "
                    "random-number state would not continue the same run; restore the file, or delete "
                    f"{self.ckpt_root} to train from the start"
                )
            ckpt.restore_rng(ckpt.read_tensors(rng_file))
        self.state.restore(saved)
        self.log.drop_after(self.state.step)
        self.say(f"resumed from {latest.name}: step {self.state.step}, epoch {self.state.epoch}")

    def _prepare_step(self) -> None:
        """The loss as one module (wrapped by DDP and torch.compile where asked) and the loop's sums."""
        self.amp_dtype = autocast_dtype(self.config, self.device)
        self.loss_module: nn.Module = LossModule(self.model, self.t.label_smoothing)
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=device_ids)
        self.step_module, self.compiled = self.loss_module, False
        if self.t.compile:
            self.step_module, self.compiled = torch.compile(self.loss_module, dynamic=True), True
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        window_sum, self.loss_tokens = self.state.loss_window  # rank 0 carries the all-reduced resumed sum
        self.loss_sum = torch.full((), window_sum if self.main else 0.0, device=self.device, dtype=torch.float64)
        # The first step with a non-finite loss, recorded on the device (no sync per step).
        self.first_bad = torch.full((), -1, device=self.device, dtype=torch.int64)

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    # ---- one step, one validation, one checkpoint ----
    def train_step(self, batch: dict[str, torch.Tensor], normalizer: float) -> torch.Tensor:
        """Forward, backward, clip and update on one batch; a torch.compile failure falls back to
        eager for the rest of the run. The summed loss (detached)."""
        try:
            return self._step(batch, normalizer)
        except Exception as e:  # a compiler failure must not cost the run
            if not self.compiled:
                raise
            self.say(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); training eagerly")
            self.optimizer.zero_grad(set_to_none=True)
            self.step_module, self.compiled = self.loss_module, False
            return self._step(batch, normalizer)

    def _step(self, batch: dict[str, torch.Tensor], normalizer: float) -> torch.Tensor:
        with self._autocast():
            total = self.step_module(batch)
        (total * (self.dist.world_size / normalizer)).backward()
        if self.t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total.detach()

    def validate(self) -> dict:
        """Validation NDCG@10 and Recall@10 over every process's rows."""
        self.model.eval()
        rows, inputs = self.val_rows, self.inputs
        with self._autocast():
            sums = self.validate_fn(
                self.model,
                inputs.valid_users[rows],
                inputs.valid_starts[rows],
                inputs.valid_ends[rows],
                inputs.valid_targets[rows],
            )
        self.model.train()
        packed = torch.tensor(
            [sums["ndcg@10"], sums["recall@10"], sums["count"]], dtype=torch.float64, device=self.device
        )
        ndcg, recall, count = all_reduce_sum(packed, self.dist).tolist()
        return {"ndcg@10": ndcg / max(count, 1), "recall@10": recall / max(count, 1), "users": int(count)}

    def save_checkpoint(self) -> None:
        """Every rank's random state and rank 0's weights, optimizer and state, committed at once."""
        state, dist = self.state, self.dist
        state.loss_window = [float(all_reduce_sum(self.loss_sum.clone(), dist)), self.loss_tokens]
        staged = ckpt.stage_checkpoint(self.ckpt_root, state.step) if self.main else None
        barrier(dist)
        staged = staged or self.ckpt_root / f".{ckpt.step_dir_name(state.step)}.tmp"
        ckpt.write_rank_rng(staged, dist.rank)
        barrier(dist)
        if self.main:
            ckpt.commit_checkpoint(
                self.ckpt_root, staged, state.step, self.model, self.optimizer, self.names, state.as_dict()
            )
        barrier(dist)

    def _check_finite(self) -> None:
        """Stop at a non-finite loss before its weights are validated, logged or checkpointed."""
        bad = all_reduce_sum((self.first_bad >= 0).to(torch.float64), self.dist)
        if float(bad) <= 0:
            return
        at = int(self.first_bad) if int(self.first_bad) >= 0 else self.state.step
        kept = ckpt.latest_checkpoint(self.ckpt_root)
        self.log.log("diverged", at, reason="non-finite loss")
        self.log.close()
        raise TrainingDiverged(
            f"training diverged: the loss is not finite (NaN or infinite) at step {at} "
            f"(train.lr = {self.t.lr:g}); nothing after step {kept_step(kept)} was saved"
            f"{f' and the last good checkpoint, {kept.name}, is kept in {self.ckpt_root}' if kept else ''}. "
            "Lower train.lr (or raise train.warmup_steps / set train.grad_clip) and train again"
        )

    # ---- the loop ----
    def run(self) -> TrainResult:
        """Train until the step count, early stopping or the time budget ends the run; then load
        the best validated weights and save them as the run's model."""
        t, state = self.t, self.state
        if self.device.type == "cpu":
            # Each step frees and allocates the same activations: kept for reuse, not faulted in
            # again every step (genrec.heap; 4-5% of a step at 1M items, scale-cpu/NOTES.md).
            keep_freed_memory()
        self._prepare_step()
        self.model.train()
        self.started = time.perf_counter() - state.train_seconds
        stopped = state.finished  # a resumed run that had already finished goes straight to the end
        self.bar = TrainProgress(self.total_steps, enabled=self.main and self.progress, console=self.console)
        self.bar.advance_to(state.step)
        batches = epoch_batches(self.examples, t.batch_size, self.config.run.seed, state.epoch, t.length_grouping)
        self.last_log, self.examples_since_log = time.perf_counter(), 0
        while not stopped:
            cpu_threads.tick()  # fewer threads while other processes hold cores (unless the user set them)
            if state.batch_in_epoch >= len(batches):
                state.epoch += 1
                state.batch_in_epoch = 0
                batches = epoch_batches(
                    self.examples, t.batch_size, self.config.run.seed, state.epoch, t.length_grouping
                )
            elapsed, lr = self._one_step(batches[state.batch_in_epoch])
            stopped = self._after_step(elapsed, lr)
        return self._finish(stopped)

    def _one_step(self, global_idx: np.ndarray) -> tuple[float, float]:
        """Train on one global batch (this rank's share of it); (the clock read before it, its lr)."""
        t, state, dist = self.t, self.state, self.dist
        batch = self.maker(shard(global_idx, dist.rank, dist.world_size))
        normalizer = self.maker.target_tokens(global_idx, self.model.num_levels)
        elapsed = time.perf_counter() - self.started
        if t.time_budget_s:  # ranks' clocks differ: rank 0's decides the schedule and the stop
            elapsed = broadcast_value(elapsed, dist, self.device)
        lr = learning_rate(
            state.step,
            lr=t.lr,
            warmup_steps=t.warmup_steps,
            total_steps=self.total_steps,
            schedule=t.schedule,
            min_lr_ratio=t.min_lr_ratio,
            time_progress=elapsed / t.time_budget_s if t.time_budget_s else 0.0,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = self.train_step(batch, normalizer)
        self.loss_sum += total
        self.loss_tokens += normalizer
        self.examples_since_log += len(global_idx)
        state.step += 1
        state.batch_in_epoch += 1
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(total), state.step, self.first_bad)
        fault_point("train-step")
        return elapsed, lr

    def _after_step(self, elapsed: float, lr: float) -> str:
        """Log, validate and checkpoint where the schedule says; the reason to stop, or ""."""
        t, state = self.t, self.state
        step = state.step
        if step % t.log_every == 0 or step == self.total_steps:
            self._log_train(step, lr)
        stopped = ""
        # Judged on the clock read before the step, which every rank shares: all validate together.
        over_budget = bool(t.time_budget_s) and elapsed >= t.time_budget_s
        if step % self.eval_every == 0 or step == self.total_steps or over_budget:
            self._check_finite()
            if self.validate_fn is not None and self._record_validation(step, elapsed):
                stopped = f"early stopping: no better validation NDCG@10 in {t.patience} validations"
        state.train_seconds = time.perf_counter() - self.started
        if not stopped and step >= self.total_steps:
            stopped = f"reached {self.total_steps} steps"
        if not stopped and over_budget:
            stopped = f"time budget of {t.time_budget_s:.0f}s spent"
        if stopped:
            state.finished = stopped
        if step % self.checkpoint_every == 0 or stopped:
            self._check_finite()
            self.save_checkpoint()
            fault_point("checkpoint-saved")
        return stopped

    def _log_train(self, step: int, lr: float) -> None:
        self._check_finite()
        mean = float(all_reduce_sum(self.loss_sum.clone(), self.dist)) / max(1, self.loss_tokens)
        now = time.perf_counter()
        rate = self.examples_since_log / max(now - self.last_log, 1e-9)
        self.log.log("train", step, loss=mean, lr=lr, epoch=step / self.steps_per_epoch, examples_per_s=rate)
        self.bar.update(step, loss=mean)
        self.loss_sum.zero_()
        self.loss_tokens, self.examples_since_log, self.last_log = 0, 0, now

    def _record_validation(self, step: int, elapsed: float) -> bool:
        """Validate, keep the best weights, log; whether patience has run out."""
        t, state = self.t, self.state
        metrics = self.validate()
        better = metrics["ndcg@10"] > state.best["ndcg@10"] + t.min_delta
        if better:
            state.best = {"ndcg@10": metrics["ndcg@10"], "recall@10": metrics["recall@10"], "step": step}
            state.bad_validations = 0
            if self.main:
                ckpt.save_model(self.run_dir / "best.safetensors", self.model, {"step": str(step)})
                fault_point("best-saved")
        else:
            state.bad_validations += 1
        record = {**metrics, "epoch": round(step / self.steps_per_epoch, 3), "seconds": round(elapsed, 1)}
        state.validations.append({"step": step, **record})
        self.log.log("val", step, **record)
        self.bar.update(step, ndcg=metrics["ndcg@10"])
        self.say(
            f"step {step} (epoch {step / self.steps_per_epoch:.1f}, {elapsed:.0f}s): "
            f"valid NDCG@10 {metrics['ndcg@10']:.4f} Recall@10 {metrics['recall@10']:.4f}"
            f"{'  best' if better else ''}"
        )
        return bool(t.patience) and state.bad_validations >= t.patience

    def _finish(self, stopped: str) -> TrainResult:
        state = self.state
        self.bar.close()
        self.log.log("train_end", state.step, reason=stopped, train_seconds=state.train_seconds)
        self.log.close()
        fault_point("train-end-logged")
        best_path = self.run_dir / "best.safetensors"
        if best_path.is_file():
            ckpt.load_model_weights(best_path, self.model)
        if self.main:
            ckpt.save_model(
                self.run_dir / "model.safetensors", self.model, {"step": str(state.best["step"] or state.step)}
            )
            fault_point("model-saved")
        barrier(self.dist)
        return TrainResult(
            model=self.model,
            steps=state.step,
            epochs_completed=state.step / self.steps_per_epoch,
            best=state.best,
            stopped_because=stopped,
            train_seconds=state.train_seconds,
            validations=state.validations,
        )


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
    """Train the configured model on ``inputs`` (see :class:`Trainer`), continuing the run's
    checkpoint with ``resume``."""
    trainer = Trainer(
        config, inputs, run_dir, device=device, dist_info=dist_info, validate_fn=validate_fn,
        console=console, progress=progress,
    )  # fmt: skip
    return trainer.setup().resume(resume).run()
