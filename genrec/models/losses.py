"""Cross-entropy over a whole catalogue of item vectors, shared by the models with an item head
(SASRec's "ce" loss and ItemDecoder's item head): the logits of every item for every target,
in chunks of rows above a size, so no batch holds more than ``MAX_LOGITS`` of them at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Above this many logits (targets x catalogue) a batch's cross-entropy runs in chunks of rows.
MAX_LOGITS = 1 << 26


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Summed softmax cross-entropy of ``h @ weight.T`` without ever holding all the logits.

    Forward keeps each row's log-sum-exp; backward recomputes one chunk of logits at a time (one
    extra matmul) for the gradients: memory stays at ``chunk x num_items`` whatever the batch.
    Matmuls run in ``mm_dtype`` (bf16 under autocast), log-sum-exp and gradients accumulate in float32.
    """

    @staticmethod
    def forward(ctx, h, weight, target, chunk: int, label_smoothing: float, mm_dtype):
        acc = torch.promote_types(h.dtype, torch.float32)  # float32, or float64 for float64 inputs
        w = weight.to(mm_dtype)
        lse = torch.empty(h.shape[0], dtype=acc, device=h.device)
        total = torch.zeros((), dtype=acc, device=h.device)
        for lo in range(0, h.shape[0], chunk):
            z = (h[lo : lo + chunk].to(mm_dtype) @ w.T).to(acc)  # (n, V)
            lse[lo : lo + chunk] = row_lse = torch.logsumexp(z, dim=1)
            loss = row_lse - z.gather(1, target[lo : lo + chunk, None])[:, 0]
            if label_smoothing:
                loss = (1 - label_smoothing) * loss + label_smoothing * (row_lse - z.mean(dim=1))
            total += loss.sum()
        ctx.save_for_backward(h, weight, target, lse)
        ctx.chunk, ctx.label_smoothing, ctx.mm_dtype = chunk, label_smoothing, mm_dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        h, weight, target, lse = ctx.saved_tensors
        chunk, eps, mm_dtype = ctx.chunk, ctx.label_smoothing, ctx.mm_dtype
        w = weight.to(mm_dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device)
        for lo in range(0, h.shape[0], chunk):
            hc = h[lo : lo + chunk].to(mm_dtype)
            p = torch.exp((hc @ w.T).to(lse.dtype) - lse[lo : lo + chunk, None])  # softmax (n, V)
            rows = torch.arange(p.shape[0], device=p.device)
            p[rows, target[lo : lo + chunk]] -= 1 - eps
            if eps:
                p -= eps / p.shape[1]
            p = (p * grad_total).to(mm_dtype)
            grad_h[lo : lo + chunk] = (p @ w).to(h.dtype)
            grad_w += (p.T @ hc).to(lse.dtype)
        return grad_h, grad_w.to(weight.dtype), None, None, None, None


def softmax_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    max_logits: int = MAX_LOGITS,
) -> torch.Tensor:
    """Summed cross-entropy of the logits ``h @ weight.T`` (N, V) against ``target`` (N,).

    Small batches take one matmul and ``F.cross_entropy``; above ``max_logits`` logits the rows go
    through in chunks (:class:`_ChunkedSoftmaxCE`), so a long batch or a large catalogue cannot
    exhaust memory. Both give the same loss and gradients.
    """
    n, v = h.shape[0], weight.shape[0]
    if n * v <= max_logits:
        logits = (h @ weight.T).float()
        return F.cross_entropy(logits, target, reduction="sum", label_smoothing=label_smoothing)
    device_type = h.device.type
    mm_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else h.dtype
    chunk = max(1, max_logits // (4 * v))
    with torch.autocast(device_type, enabled=False):  # the Function picks its own precision
        return _ChunkedSoftmaxCE.apply(h, weight, target, chunk, float(label_smoothing), mm_dtype)
