"""Training an RQ-VAE on item embeddings: seeded, on CPU or GPU, with a progress bar."""

from __future__ import annotations

import math
import time

import torch

from genrec.progress import progress_bar
from genrec.tokenize.config import TokenizeConfig
from genrec.tokenize.rqvae import RQVAE


def train_rqvae(x: torch.Tensor, config: TokenizeConfig) -> tuple[RQVAE, list[dict]]:
    """Train an RQ-VAE on ``x`` [N, D] (already normalized, on the training device).

    Returns the model (in eval mode) and one record per epoch (mean losses, codes restarted).
    The same seed, data and device give the same model: weights, shuffling, the k-means init and
    dead-code restarts all draw from generators seeded by ``config.seed``; the caller's global
    random state is left as it was.
    """
    rc = config.rqvae
    devices = [x.device] if x.device.type == "cuda" else []
    flush_denormal = torch.set_flush_denormal(True)  # returns whether the CPU supports it
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            model = RQVAE.from_config(
                x.shape[1],
                rc,
                levels=config.levels,
                codebook_size=config.codebook_size,
                encode_backend=config.encode_backend,
            ).to(x.device)
            generator = torch.Generator().manual_seed(config.seed)
            _init_codebooks(model, x, config, generator)
            return model, _fit(model, x, config, generator)
    finally:
        # Adam's moments of rarely used codewords decay into denormal floats, which the CPU
        # computes with many times slower; flushing them to zero only touches values below 1e-38.
        if flush_denormal:
            torch.set_flush_denormal(False)


def _init_codebooks(
    model: RQVAE, x: torch.Tensor, config: TokenizeConfig, generator: torch.Generator
) -> None:
    """k-means on the latents of the first batch (``kmeans_init_size`` items drawn by the seed)."""
    rows = torch.randperm(x.shape[0], generator=generator)[: config.rqvae.kmeans_init_size]
    with torch.no_grad():
        z = model.encoder(x[rows.to(x.device)])
    model.quantizer.init_kmeans(z, iters=config.kmeans_iters, seed=config.seed, backend=config.kmeans_backend)


def _optimizer(model: RQVAE, config: TokenizeConfig) -> torch.optim.Optimizer:
    rc = config.rqvae
    # Weight decay on the network's matrices only: decaying codewords would pull them off the data.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("quantizer.")]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2 or n.startswith("quantizer.")]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": rc.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=rc.learning_rate,
    )


def _lr_factor(total_steps: int, warmup: float):
    """Linear warm-up over the first ``warmup`` fraction of the steps (Adam's first steps are
    full-size whatever the gradient), then cosine decay to a tenth: settled codes at the end."""
    warmup_steps = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(1, total_steps - warmup_steps), 1.0)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _fit(model: RQVAE, x: torch.Tensor, config: TokenizeConfig, generator: torch.Generator) -> list[dict]:
    rc = config.rqvae
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / rc.batch_size)
    total_steps = rc.epochs * steps_per_epoch
    optimizer = _optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(total_steps, rc.warmup))
    restart_stop = int(rc.restart_until * total_steps)
    history: list[dict] = []
    step = 0
    model.train()
    model.quantizer.usage.zero_()
    with progress_bar("RQ-VAE epochs", rc.epochs, config.progress) as advance:
        for epoch in range(rc.epochs):
            started = time.perf_counter()
            sums = torch.zeros(4, dtype=torch.float64)
            restarted = 0
            order = torch.randperm(n, generator=generator).to(x.device)
            for start in range(0, n, rc.batch_size):
                batch = x[order[start : start + rc.batch_size]]
                out = model(batch)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                if rc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), rc.grad_clip)
                optimizer.step()
                schedule.step()
                step += 1
                parts = (out.loss, out.reconstruction_loss, out.codebook_loss, out.commitment_loss)
                sums += torch.stack([p.detach().double().cpu() for p in parts]) * len(batch)
                if rc.restart_dead_codes and step % rc.restart_interval == 0 and step <= restart_stop:
                    restarted += model.quantizer.restart_dead_codes(out.residuals, generator)
            mean = (sums / n).tolist()
            record = {
                "epoch": epoch + 1,
                "loss": mean[0],
                "reconstruction_loss": mean[1],
                "codebook_loss": mean[2],
                "commitment_loss": mean[3],
                "codes_restarted": restarted,
                "seconds": time.perf_counter() - started,
            }
            history.append(record)
            advance(status=f"loss {mean[0]:.4f} recon {mean[1]:.4f} restarted {restarted}")
    model.eval()
    return history
