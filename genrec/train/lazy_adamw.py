"""AdamW whose row-sparse parameters (an item table trained through sampled items) update lazily.

A catalogue-sized item table gets a gradient in the few thousand rows a batch touches (its
history items, targets and sampled negatives), yet dense AdamW reads and writes every row of the
table, its two moment buffers and a dense gradient on every step: at a million items that is most
of a training step on a CPU. Here a parameter whose gradient is sparse (``nn.Embedding(sparse=True)``)
updates only the rows the gradient names, as torch's ``SparseAdam`` does (moments of untouched rows
stay as they are; bias correction counts the parameter's steps), plus AdamW's decoupled weight
decay on those rows. Dense parameters take torch's own AdamW step unchanged. The state keeps
AdamW's names (``step``, ``exp_avg``, ``exp_avg_sq``), so checkpoints save and restore it as they
do AdamW's.

With every row touched on every step the update equals AdamW's (the test checks this); with rows
left out it is lazy Adam, a different recipe than dense AdamW, which is why
``train.sparse_item_table`` turns it on only where the dense update is what costs.
"""

from __future__ import annotations

import math

import torch


class LazyAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` for dense gradients; lazy row updates for sparse (COO) gradients."""

    def __init__(self, params, *args, **kwargs) -> None:
        if kwargs.get("amsgrad") or kwargs.get("maximize"):
            raise ValueError("LazyAdamW supports neither amsgrad nor maximize")
        kwargs["foreach"] = kwargs.get("foreach", False) and not kwargs.get("fused")
        super().__init__(params, *args, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("LazyAdamW.step takes no closure")
        sparse = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    sparse.append((group, p, p.grad))
                    p.grad = None  # AdamW's own step skips it
        try:
            super().step()
        finally:
            for _, p, grad in sparse:
                p.grad = grad
        for group, p, grad in sparse:
            self._lazy_step(group, p, grad)

    def _lazy_step(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
        m = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
        v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        # AdamW's order: decay the weights, then the Adam step (its bias corrections, its eps placement).
        bias1, bias2 = 1 - beta1**step, 1 - beta2**step
        denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
        new = p.index_select(0, rows).mul_(1 - lr * decay).addcdiv_(m, denom, value=-lr / bias1)
        p.index_copy_(0, rows, new)
