"""The diffusion encoder: generate the collaborative embedding of items that have no interactions.

A conditional denoising diffusion model (DDPM training, Ho et al. 2020) over the collaborative
embedding space learns p(behaviour | content) on warm items: the clean sample ``x0`` is an item's
unit collaborative embedding (standardised per dimension), the condition its fused content
embedding from the multimodal encoder. The denoiser is a residual MLP whose blocks are modulated
(scale and shift) by the timestep and the condition; the condition is dropped for a share of the
training examples so classifier-free guidance is available at sampling. Items without training
interactions get their collaborative part from a deterministic DDIM sampler (eta = 0, Song et
al. 2021) started from noise seeded per (seed, item, sample), so an item's embedding does not
depend on which other items are generated with it. Warm items keep their real collaborative
embedding; only cold items' semantic IDs change, landing near the warm items whose behaviour
their content predicts.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.behaviour_probe import behaviour_probe
from genrec.embed.encoder_config import DiffusionConfig
from genrec.embed.fusion_training import FusionResult
from genrec.embed.runtime import torch_threads


# ---- the noise schedule ----
def alphas_cumprod(schedule: str, timesteps: int) -> torch.Tensor:
    """alpha_bar_t for t = 0..T-1 (float64): the share of signal variance left at step t."""
    if schedule == "cosine":  # Nichol & Dhariwal 2021, offset s = 0.008, betas capped at 0.999
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    elif schedule == "linear":  # Ho et al. 2020, rescaled so any T spans the same noise range
        scale = 1000 / timesteps
        betas = torch.linspace(1e-4 * scale, 0.02 * scale, timesteps, dtype=torch.float64).clamp(max=0.999)
    else:
        raise ValueError(f"unknown noise schedule {schedule!r}; expected 'cosine' or 'linear'")
    return torch.cumprod(1 - betas, dim=0)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps from T-1 down to 0, evenly spaced, no repeats."""
    seq = np.unique(np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int64))[::-1]
    return [int(t) for t in seq]


# ---- the denoiser ----
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of integer timesteps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class _Block(nn.Module):
    """Pre-norm residual MLP block, its normalised input scaled and shifted by the embedding."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.modulation = nn.Linear(hidden, 3 * hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)  # starts as an identity block (gate 0)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift, gate = self.modulation(emb).chunk(3, dim=-1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class Denoiser(nn.Module):
    """(x_t, t, condition) -> the model output (noise, clean sample or v, per the parameterization)."""

    def __init__(self, dim: int, cond_dim: int, hidden: int, layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = hidden
        self.time = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.cond = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.null_cond = nn.Parameter(torch.zeros(cond_dim))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, dropout) for _ in range(layers))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, dim), t (B,) long, cond (B, cond_dim); rows where ``drop`` use the null condition."""
        if drop is not None:
            cond = torch.where(drop[:, None], self.null_cond.expand_as(cond), cond)
        emb = F.silu(self.time(timestep_embedding(t, self.hidden)) + self.cond(cond))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.out_norm(h))


# ---- diffusion: training targets and sampling ----
class GaussianDiffusion:
    """A noise schedule and the conversions between what the denoiser predicts and (x0, eps)."""

    def __init__(self, schedule: str, timesteps: int, prediction: str) -> None:
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"unknown prediction {prediction!r}; expected 'eps', 'x0' or 'v'")
        self.timesteps, self.prediction = timesteps, prediction
        self.alpha_bar = alphas_cumprod(schedule, timesteps).float()

    def _coefs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.alpha_bar.to(t.device)[t][:, None]
        return ab.sqrt(), (1 - ab).sqrt()

    def noisy(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a, s = self._coefs(t)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        a, s = self._coefs(t)
        return a * noise - s * x0

    def split(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, limit: float | None):
        """(x0, eps) from a model output at x_t; x0 clamped to ``limit`` (the data's range)."""
        a, s = self._coefs(t)
        if self.prediction == "eps":
            x0 = (x_t - s * out) / a
        elif self.prediction == "x0":
            x0 = out
        else:
            x0 = a * x_t - s * out
        if limit is not None:
            x0 = x0.clamp(-limit, limit)
        return x0, (x_t - a * x0) / s

    @torch.no_grad()
    def ddim_sample(
        self,
        model: Denoiser,
        cond: torch.Tensor,
        noise: torch.Tensor,
        steps: int,
        guidance: float = 1.0,
        limit=None,
        *,
        start: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from ``noise`` (B, dim) to clean samples, guided by ``guidance``.

        With ``start`` (B, dim), a guess of the clean samples, sampling begins at t = strength * (T-1)
        from the guess noised to that step (SDEdit) instead of from pure noise at T-1.
        """
        seq = ddim_timesteps(self.timesteps, steps)
        if start is None:
            x = noise
        else:
            t_start = round(strength * (self.timesteps - 1))
            seq = [t for t in seq if t <= t_start] or [0]
            ab = self.alpha_bar[seq[0]]
            x = ab.sqrt() * start + (1 - ab).sqrt() * noise
        null = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for i, step in enumerate(seq):
            t = torch.full((len(x),), step, dtype=torch.long, device=x.device)
            out = model(x, t, cond)
            if guidance != 1.0:  # classifier-free guidance: extrapolate from the unconditional output
                unconditional = model(x, t, cond, drop=null)
                out = unconditional + guidance * (out - unconditional)
            x0, eps = self.split(out, x, t, limit)
            ab_prev = self.alpha_bar[seq[i + 1]] if i + 1 < len(seq) else torch.tensor(1.0)
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x


@dataclass
class TrainedDiffusion:
    """A denoiser (EMA weights) with its diffusion and the data standardisation it was trained on."""

    model: Denoiser
    diffusion: GaussianDiffusion
    mean: torch.Tensor
    std: torch.Tensor
    limit: float
    config: DiffusionConfig
    info: dict

    def generate(self, cond: np.ndarray, items: np.ndarray, estimate: np.ndarray | None = None) -> np.ndarray:
        """Unit behaviour embeddings [len(items), dim] for conditions ``cond`` [len(items), cond_dim].

        Each (item, sample) starts from its own seeded noise; samples are unit-normalised and averaged.
        ``estimate`` (unit rows) is where sampling starts when the config says start = "estimate".
        """
        if self.config.start == "estimate" and estimate is None:
            raise EmbeddingError('diffusion start = "estimate" needs the content-only estimates of the items')
        out = np.zeros((len(items), self.mean.shape[0]), dtype=np.float32)
        self.model.eval()
        with torch_threads(self.config.threads):
            self._generate(cond, items, out, estimate)
        return out

    def _generate(
        self, cond: np.ndarray, items: np.ndarray, out: np.ndarray, estimate: np.ndarray | None
    ) -> None:
        cfg = self.config
        device = self.mean.device
        dim = self.mean.shape[0]
        for lo in range(0, len(items), 2048):
            sl = slice(lo, lo + 2048)
            c = torch.from_numpy(np.ascontiguousarray(cond[sl], dtype=np.float32)).to(device)
            begin = None
            if cfg.start == "estimate":
                guess = torch.from_numpy(np.ascontiguousarray(estimate[sl], dtype=np.float32)).to(device)
                begin = (guess - self.mean) / self.std
            total = torch.zeros(len(c), dim, device=device)
            for j in range(1 if cfg.start == "zero" else cfg.samples):
                if cfg.start == "zero":  # the prior's mean: one deterministic sample
                    noise = torch.zeros(len(c), dim, device=device)
                else:
                    noise = torch.stack([_item_noise(cfg.seed, int(i), j, dim) for i in items[sl]]).to(device)
                x0 = self.diffusion.ddim_sample(
                    self.model,
                    c,
                    noise,
                    cfg.sample_steps,
                    cfg.guidance,
                    self.limit,
                    start=begin,
                    strength=cfg.strength,
                )
                total += F.normalize(x0 * self.std + self.mean, dim=-1)
            out[sl] = F.normalize(total, dim=-1).cpu().numpy()


def _item_noise(seed: int, item: int, sample: int, dim: int) -> torch.Tensor:
    state = np.random.SeedSequence([seed, item, sample, 0xD1F]).generate_state(1, np.uint64)[0]
    gen = torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))
    return torch.randn(dim, generator=gen)


def train_diffusion(
    target: np.ndarray, cond: np.ndarray, config: DiffusionConfig, *, log=print
) -> TrainedDiffusion:
    """Fit p(target | cond) on row-aligned pairs (target: unit behaviour embeddings, cond: content)."""
    config.validate()
    if len(target) != len(cond):
        raise EmbeddingError(f"{len(target)} behaviour embeddings but {len(cond)} conditions")
    if len(target) < 2:
        raise EmbeddingError(
            f"the diffusion model needs at least 2 warm items to learn from, got {len(target)}"
        )
    device = torch.device(config.device)
    x = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)).to(device)
    c = torch.from_numpy(np.ascontiguousarray(cond, dtype=np.float32)).to(device)
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    x0_all = (x - mean) / std
    limit = float(x0_all.abs().max()) * 1.5
    diffusion = GaussianDiffusion(config.schedule, config.timesteps, config.prediction)
    diffusion.alpha_bar = diffusion.alpha_bar.to(device)
    batch = min(config.batch_size, len(x))
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch_threads(config.threads):
        torch.manual_seed(config.seed)
        model = Denoiser(x.shape[1], c.shape[1], config.hidden, config.layers, config.dropout).to(device)
        ema = copy.deepcopy(model).eval() if config.ema > 0 else model
        opt = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True
        )
        ema_params, model_params = list(ema.parameters()), list(model.parameters())
        gen = torch.Generator().manual_seed(config.seed)
        losses = []
        for step in range(config.steps):
            lr = config.lr * _lr_factor(step, config.steps, config.warmup_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = torch.randint(len(x), (batch,), generator=gen).to(device)
            t = torch.randint(config.timesteps, (batch,), generator=gen).to(device)
            noise = torch.randn(batch, x.shape[1], generator=gen).to(device)
            drop = (torch.rand(batch, generator=gen) < config.cond_dropout).to(device)
            x0 = x0_all[idx]
            model.train()
            pred = model(diffusion.noisy(x0, t, noise), t, c[idx], drop)
            loss = F.mse_loss(pred, diffusion.target(x0, t, noise))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if config.ema > 0:
                with torch.no_grad():
                    decay = min(config.ema, (1 + step) / (10 + step))  # warm-up: early weights fade fast
                    torch._foreach_lerp_(ema_params, model_params, 1 - decay)
            losses.append(loss.item())
            if (step + 1) % max(1, config.steps // 5) == 0:
                log(f"  diffusion: step {step + 1}/{config.steps}, loss {np.mean(losses[-200:]):.4f}")
    info = {
        "train_items": len(x),
        "steps": config.steps,
        "final_loss": float(np.mean(losses[-200:])),
        "seconds": time.perf_counter() - start,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return TrainedDiffusion(ema.eval(), diffusion, mean, std, limit, config, info)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


# ---- the encoder ----
def generate_behaviour(
    fusion: FusionResult, config: DiffusionConfig, *, log=print, fitted: dict | None = None
) -> tuple[np.ndarray, dict]:
    """Behaviour embeddings [N, Dc] with cold items' generated by diffusion; and what happened (for
    embed.json). ``fitted`` (a dict) receives the trained model under "diffusion"."""
    if fusion.behaviour is None:
        raise EmbeddingError(
            "the diffusion encoder generates collaborative embeddings: embed.multimodal.modalities must include "
            "'collaborative' (and behaviour_weight must be > 0)"
        )
    train = np.setdiff1d(np.flatnonzero(fusion.warm), fusion.probe)
    trained = train_diffusion(fusion.behaviour[train], fusion.content[train], config, log=log)
    if fitted is not None:
        fitted["diffusion"] = trained
    targets = np.union1d(np.flatnonzero(~fusion.warm), fusion.probe)
    start = time.perf_counter()
    estimate = fusion.estimate[targets] if fusion.estimate is not None else None
    generated = (
        trained.generate(fusion.content[targets], targets, estimate)
        if len(targets)
        else np.zeros((0, fusion.behaviour.shape[1]), dtype=np.float32)
    )
    seconds = time.perf_counter() - start
    behaviour = fusion.behaviour.copy()
    cold = ~fusion.warm[targets]
    behaviour[targets[cold]] = generated[cold]
    probe_rows = np.searchsorted(targets, fusion.probe)
    probe = behaviour_probe(generated[probe_rows], fusion.probe, fusion.behaviour, fusion.warm)
    log(
        f"  diffusion: generated {int(cold.sum()):,} cold items' behaviour ({seconds:.0f}s)"
        + (
            f"; probe recall@10 {probe['recall@10']:.3f} (content-only {fusion.info['probe']['content']['recall@10']:.3f})"
            if probe
            else ""
        )
    )
    info = {**trained.info, "generated_items": int(cold.sum()), "sampling_seconds": seconds, "probe": probe}
    return behaviour, info
